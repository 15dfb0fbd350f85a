//! `/api/profiles/{username}`: view, follow and unfollow.

use axum::extract::State;
use serde::Serialize;
use sqlx::PgPool;

use crate::{
    db,
    error::{Error, Result},
    extract::{AuthUser, Json, Path},
    routes::Profile,
};

#[derive(Debug, Serialize)]
pub struct ProfileResponse {
    profile: Profile,
}

fn respond(row: Option<db::profiles::ProfileRow>) -> Result<Json<ProfileResponse>> {
    let row = row.ok_or(Error::NotFound("profile"))?;
    Ok(Json(ProfileResponse { profile: row.into() }))
}

#[tracing::instrument(skip_all, fields(username = %username))]
pub async fn get(
    State(db): State<PgPool>,
    viewer: Option<AuthUser>,
    Path(username): Path<String>,
) -> Result<Json<ProfileResponse>> {
    respond(db::profiles::get(&db, &username, viewer.map(|v| v.id)).await?)
}

/// Any request body is ignored: clients send `{}` or a user object here.
#[tracing::instrument(skip_all, fields(username = %username))]
pub async fn follow(
    State(db): State<PgPool>,
    user: AuthUser,
    Path(username): Path<String>,
) -> Result<Json<ProfileResponse>> {
    respond(db::profiles::follow(&db, user.id, &username).await?)
}

#[tracing::instrument(skip_all, fields(username = %username))]
pub async fn unfollow(
    State(db): State<PgPool>,
    user: AuthUser,
    Path(username): Path<String>,
) -> Result<Json<ProfileResponse>> {
    super::ensure_caller_exists(&db, &user).await?;
    respond(db::profiles::unfollow(&db, user.id, &username).await?)
}
