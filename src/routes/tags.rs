//! `GET /api/tags`.

use axum::{extract::State, response::Response};
use serde::Serialize;

use crate::{
    db::{self, Reads},
    error::Result,
    extract::{AuthUser, Json},
    routes::answer_read,
};

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TagsResponse {
    tags: Vec<String>,
}

/// Tags in use by at least one article, most used first. No token is needed; a
/// refused one (invalid, expired or revoked) gets a `WWW-Authenticate` challenge.
#[utoipa::path(get, path = "/tags", tag = "Tags", operation_id = "GetTags",
    security((), ("Token" = []), ("Bearer" = [])),
    responses((status = 200, description = "The tags", body = TagsResponse)))]
#[tracing::instrument(skip_all)]
pub async fn list(State(reads): State<Reads>, viewer: Option<AuthUser>) -> Result<Response> {
    // The viewer changes nothing in the answer; it is looked up, in the same
    // statement, only to tell a token whose account is gone that it is.
    let viewer = viewer.map(|v| v.id);
    let mut conn = reads.acquire().await?;
    let found = db::tags::in_use(&mut *conn, viewer).await;
    let (tags, viewer_exists) = conn.release(found)?;
    Ok(answer_read(Json(TagsResponse { tags }), viewer, viewer_exists))
}
