//! `GET /api/tags`.

use axum::extract::State;
use serde::Serialize;

use crate::{
    db::{self, Reads},
    error::Result,
    extract::{AuthUser, Json},
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
pub async fn list(State(reads): State<Reads>, viewer: Option<AuthUser>) -> Result<Json<TagsResponse>> {
    // The caller's own new tags are in the list, even with a read replica.
    let tags = reads.run_for(viewer.map(|v| v.id), async |conn| db::tags::in_use(conn).await).await?;
    Ok(Json(TagsResponse { tags }))
}
