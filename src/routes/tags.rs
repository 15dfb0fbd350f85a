//! `GET /api/tags`.

use axum::extract::State;
use serde::Serialize;
use sqlx::PgPool;

use crate::{db, error::Result, extract::Json};

#[derive(Debug, Serialize)]
pub struct TagsResponse {
    tags: Vec<String>,
}

/// Tags in use, most used first.
#[tracing::instrument(skip_all)]
pub async fn list(State(db): State<PgPool>) -> Result<Json<TagsResponse>> {
    Ok(Json(TagsResponse { tags: db::tags::in_use(&db).await? }))
}
