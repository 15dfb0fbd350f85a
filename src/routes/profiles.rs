//! `/api/profiles/{username}`: view, follow and unfollow.

use axum::extract::State;
use serde::Serialize;
use sqlx::PgPool;
use utoipa::ToSchema;

use crate::{
    db::{self, Reads},
    error::{Error, Result},
    extract::{AuthUser, Json, Path},
    openapi::{BadRequest, NotFound, Unauthorized, ValidationFailed},
    routes::Profile,
};

#[derive(Debug, Serialize, ToSchema)]
pub struct ProfileResponse {
    profile: Profile,
}

fn respond(row: Option<db::profiles::ProfileRow>) -> Result<Json<ProfileResponse>> {
    let row = row.ok_or(Error::NotFound("profile"))?;
    Ok(Json(ProfileResponse { profile: row.into() }))
}

/// A user's profile; auth is optional (it sets `following`).
/// A refused token (invalid, expired or revoked) reads as no token, and the answer carries a
/// `WWW-Authenticate` challenge.
#[utoipa::path(get, path = "/profiles/{username}", tag = "Profile", operation_id = "GetProfileByUsername",
    params(("username" = String, Path, description = "Username of the profile, matched case-insensitively")),
    security((), ("Token" = []), ("Bearer" = [])),
    responses(
        (status = 200, description = "The profile", body = ProfileResponse),
        (status = 400, response = BadRequest),
        (status = 404, response = NotFound),
    ))]
#[tracing::instrument(skip_all, fields(username = %username))]
pub async fn get(
    State(reads): State<Reads>,
    viewer: Option<AuthUser>,
    Path(username): Path<String>,
) -> Result<Json<ProfileResponse>> {
    let viewer = viewer.map(|v| v.id);
    respond(reads.run_for(viewer, async |conn| db::profiles::get(conn, &username, viewer).await).await?)
}

/// Follow a user; following twice is a no-op. Any request body is ignored:
/// clients send `{}` or a user object here.
#[utoipa::path(post, path = "/profiles/{username}/follow", tag = "Profile", operation_id = "FollowUserByUsername",
    params(("username" = String, Path, description = "Username of the profile to follow")),
    security(("Token" = []), ("Bearer" = [])),
    responses(
        (status = 200, description = "The profile, now followed", body = ProfileResponse),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
        (status = 422, response = ValidationFailed),
    ))]
#[tracing::instrument(skip_all, fields(username = %username))]
pub async fn follow(
    State(db): State<PgPool>,
    user: AuthUser,
    Path(username): Path<String>,
) -> Result<Json<ProfileResponse>> {
    respond(db::profiles::follow(&db, user.id, &username).await?)
}

/// Stop following a user; unfollowing twice is a no-op.
#[utoipa::path(delete, path = "/profiles/{username}/follow", tag = "Profile", operation_id = "UnfollowUserByUsername",
    params(("username" = String, Path, description = "Username of the profile to unfollow")),
    security(("Token" = []), ("Bearer" = [])),
    responses(
        (status = 200, description = "The profile, no longer followed", body = ProfileResponse),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
    ))]
#[tracing::instrument(skip_all, fields(username = %username))]
pub async fn unfollow(
    State(db): State<PgPool>,
    user: AuthUser,
    Path(username): Path<String>,
) -> Result<Json<ProfileResponse>> {
    respond(db::profiles::unfollow(&db, user.id, &username).await?)
}
