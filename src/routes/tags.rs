//! `GET /api/tags`.

use axum::extract::State;
use serde::Serialize;
use sqlx::PgPool;

use crate::{db, error::Result, extract::Json};

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TagsResponse {
    tags: Vec<String>,
}

/// Tags in use by at least one article, most used first.
#[utoipa::path(get, path = "/tags", tag = "Tags", operation_id = "GetTags",
    responses((status = 200, description = "The tags", body = TagsResponse)))]
#[tracing::instrument(skip_all)]
pub async fn list(State(db): State<PgPool>) -> Result<Json<TagsResponse>> {
    Ok(Json(TagsResponse { tags: db::tags::in_use(&db).await? }))
}
