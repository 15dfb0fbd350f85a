//! `/api/articles/{slug}/comments`.

use axum::{extract::State, http::StatusCode};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;

use crate::{
    db::{self, articles::Deleted, comments::CommentRow},
    domain::CommentBody,
    error::{Error, Result, ValidationErrors},
    extract::{AuthUser, Json, Path},
    routes::Profile,
};

#[derive(Debug, Deserialize)]
pub struct Envelope {
    comment: NewComment,
}

#[derive(Debug, Deserialize)]
pub struct NewComment {
    body: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Comment {
    id: i64,
    #[serde(serialize_with = "super::timestamp")]
    created_at: DateTime<Utc>,
    #[serde(serialize_with = "super::timestamp")]
    updated_at: DateTime<Utc>,
    body: String,
    author: Profile,
}

impl From<CommentRow> for Comment {
    fn from(row: CommentRow) -> Self {
        Self {
            id: row.id,
            created_at: row.created_at,
            updated_at: row.updated_at,
            body: row.body,
            author: Profile {
                username: row.author_username,
                bio: row.author_bio,
                image: row.author_image,
                following: row.author_following,
            },
        }
    }
}

#[derive(Debug, Serialize)]
pub struct CommentResponse {
    comment: Comment,
}

#[derive(Debug, Serialize)]
pub struct CommentsResponse {
    comments: Vec<Comment>,
}

/// `POST /api/articles/{slug}/comments`: 200, as the spec says (unlike articles' 201).
#[tracing::instrument(skip_all, fields(user_id = user.id, slug = %slug))]
pub async fn add(
    State(db): State<PgPool>,
    user: AuthUser,
    Path(slug): Path<String>,
    Json(Envelope { comment }): Json<Envelope>,
) -> Result<Json<CommentResponse>> {
    let body = CommentBody::parse(comment.body.as_deref().unwrap_or_default())
        .map_err(|message| Error::Validation(ValidationErrors::single("body", message)))?;
    let row = db::comments::add(&db, &slug, user.id, body.as_str()).await?.ok_or(Error::NotFound("article"))?;
    Ok(Json(CommentResponse { comment: row.into() }))
}

/// `GET /api/articles/{slug}/comments`: newest first.
#[tracing::instrument(skip_all, fields(slug = %slug))]
pub async fn list(
    State(db): State<PgPool>,
    viewer: Option<AuthUser>,
    Path(slug): Path<String>,
) -> Result<Json<CommentsResponse>> {
    let rows = db::comments::list(&db, &slug, viewer.map(|v| v.id)).await?.ok_or(Error::NotFound("article"))?;
    Ok(Json(CommentsResponse { comments: rows.into_iter().map(Comment::from).collect() }))
}

/// `DELETE /api/articles/{slug}/comments/{id}`: the comment's author only; 204.
/// An id that is not a number, or that belongs to another article, is a 404.
#[tracing::instrument(skip_all, fields(user_id = user.id, slug = %slug, comment_id = %id))]
pub async fn delete(
    State(db): State<PgPool>,
    user: AuthUser,
    Path((slug, id)): Path<(String, String)>,
) -> Result<StatusCode> {
    let id: i64 = id.parse().map_err(|_| Error::NotFound("comment"))?;
    super::ensure_caller_exists(&db, &user).await?;
    match db::comments::delete(&db, &slug, id, user.id).await? {
        Deleted::Yes => Ok(StatusCode::NO_CONTENT),
        Deleted::NotFound => Err(Error::NotFound("comment")),
        Deleted::NotOwner => Err(Error::Forbidden),
    }
}
