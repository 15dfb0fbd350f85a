//! `GET /api/tags`.

use axum::extract::State;
use serde::Serialize;

use crate::{
    db::{self, Reads},
    error::Result,
    extract::Json,
};

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TagsResponse {
    tags: Vec<String>,
}

/// Tags in use by at least one article, most used first.
#[utoipa::path(get, path = "/tags", tag = "Tags", operation_id = "GetTags",
    responses((status = 200, description = "The tags", body = TagsResponse)))]
#[tracing::instrument(skip_all)]
pub async fn list(State(reads): State<Reads>) -> Result<Json<TagsResponse>> {
    let mut conn = reads.acquire().await?;
    let tags = db::tags::in_use(&mut *conn).await;
    Ok(Json(TagsResponse { tags: conn.release(tags)? }))
}
