//! `/api/articles/{slug}/comments`.

use axum::{
    body::{Body, Bytes},
    extract::State,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use futures_util::StreamExt as _;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use tracing::Instrument as _;
use utoipa::ToSchema;

use chrono::{DateTime, Utc};

use crate::{
    db::{self, Reads, articles::Deleted, comments::CommentRow},
    domain::{self, CommentBody},
    error::{Error, Result, ValidationErrors},
    extract::{AuthUser, JSON_UTF8, Json, Path},
    openapi::{BadRequest, Forbidden, NotFound, PayloadTooLarge, Unauthorized, UnsupportedMediaType, ValidationFailed},
    routes::{Profile, json_writer::JsonWriter, unset_if_empty},
};

#[derive(Debug, Deserialize, ToSchema)]
pub struct NewCommentRequest {
    comment: NewComment,
}

// The limits in `#[schema(...)]` are the domain types' constants, written out as
// utoipa takes only literals there; a test in tests/api/openapi.rs
// (`request_limits_in_the_document_and_the_database_are_the_domain_types`) keeps them the same.
#[derive(Debug, Deserialize, ToSchema)]
pub struct NewComment {
    #[schema(required = true, value_type = String, min_length = 1, max_length = 10_000)]
    body: Option<String>,
}

impl TryFrom<NewComment> for domain::NewComment {
    type Error = ValidationErrors;

    /// Absent and blank are both "can't be blank".
    fn try_from(new: NewComment) -> Result<Self, ValidationErrors> {
        let mut errors = ValidationErrors::new();
        let body = errors.check("body", CommentBody::parse(new.body.as_deref().unwrap_or_default()));
        match body {
            Some(body) => Ok(Self { body }),
            None => Err(errors),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Comment {
    id: i64,
    #[serde(serialize_with = "super::timestamp")]
    #[schema(value_type = String, format = DateTime)]
    created_at: DateTime<Utc>,
    #[serde(serialize_with = "super::timestamp")]
    #[schema(value_type = String, format = DateTime)]
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
                bio: unset_if_empty(row.author_bio),
                image: unset_if_empty(row.author_image),
                following: row.author_following,
            },
        }
    }
}

impl Comment {
    fn write_json(&self, out: &mut JsonWriter) {
        out.object(|o| {
            o.key("id").int(self.id);
            o.key("createdAt").timestamp(self.created_at);
            o.key("updatedAt").timestamp(self.updated_at);
            o.key("body").string(&self.body);
            self.author.write_json(o.key("author"));
        });
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CommentResponse {
    comment: Comment,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CommentsResponse {
    comments: Vec<Comment>,
}

/// Written by hand ([`JsonWriter`]), as serde would write it, into one buffer
/// sized for the whole answer: an article's comments come all at once (the spec
/// has no paging for them), a megabyte or more for a much discussed article, and
/// a buffer grown by doubling would hold up to twice that.
impl IntoResponse for CommentsResponse {
    fn into_response(self) -> Response {
        // About 150 bytes of keys, punctuation, id and timestamps a comment.
        let optional = |text: &Option<String>| text.as_ref().map_or(0, String::len);
        let text =
            |c: &Comment| c.body.len() + c.author.username.len() + optional(&c.author.bio) + optional(&c.author.image);
        let mut out = JsonWriter::with_capacity(16 + self.comments.iter().map(|c| 160 + text(c)).sum::<usize>());
        out.object(|o| o.key("comments").array(&self.comments, |out, comment| comment.write_json(out)));
        out.into_response()
    }
}

/// Comment on an article: 201 with the new comment.
#[utoipa::path(post, path = "/articles/{slug}/comments", tag = "Comments", operation_id = "CreateArticleComment",
    params(("slug" = String, Path, description = "Slug of the article")),
    request_body = NewCommentRequest,
    security(("Token" = []), ("Bearer" = [])),
    responses(
        (status = 201, description = "The new comment", body = CommentResponse),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, response = ValidationFailed),
    ))]
#[tracing::instrument(skip_all, fields(user_id = user.id, slug = %slug))]
pub async fn add(
    State(db): State<PgPool>,
    user: AuthUser,
    Path(slug): Path<String>,
    Json(NewCommentRequest { comment }): Json<NewCommentRequest>,
) -> Result<(StatusCode, Json<CommentResponse>)> {
    let domain::NewComment { body } = comment.try_into()?;
    let row = db::comments::add(&db, &slug, user.id, body.as_str()).await?.ok_or(Error::NotFound("article"))?;
    Ok((StatusCode::CREATED, Json(CommentResponse { comment: row.into() })))
}

/// The comments of an article, newest first. Auth is optional.
/// A refused token (invalid, expired or revoked) reads as no token, and the answer carries a
/// `WWW-Authenticate` challenge.
#[utoipa::path(get, path = "/articles/{slug}/comments", tag = "Comments", operation_id = "GetArticleComments",
    params(("slug" = String, Path, description = "Slug of the article")),
    security((), ("Token" = []), ("Bearer" = [])),
    responses(
        (status = 200, description = "The comments", body = CommentsResponse),
        (status = 400, response = BadRequest),
        (status = 404, response = NotFound),
    ))]
#[tracing::instrument(skip_all, fields(slug = %slug))]
pub async fn list(State(reads): State<Reads>, viewer: Option<AuthUser>, Path(slug): Path<String>) -> Result<Response> {
    let viewer = viewer.map(|v| v.id);
    let found = reads.run_for(viewer, async |conn| db::comments::list(conn, &slug, viewer, None, PAGE).await).await?;
    let first = found.ok_or(Error::NotFound("article"))?;
    if !may_continue(&first) {
        return Ok(CommentsResponse { comments: first.into_iter().map(Comment::from).collect() }.into_response());
    }
    Ok(streamed(Rest { reads, slug, viewer }, first))
}

/// How much of the list one statement reads. The spec has no paging for comments:
/// an article's come all at once, 15 MB for 1,500 comments of 10,000
/// characters. A page is at most 500 comments and 256 KiB of bodies, so nearly
/// every article's comments are one page: one statement, one buffer. A longer
/// list is streamed a page at a time, each page one statement on a connection
/// held only while it runs, so that a request holds about two pages in memory
/// whatever the list's length, and a slow reader holds no connection.
const PAGE: db::comments::Page = db::comments::Page { rows: 500, bytes: 256 * 1024 };

/// Whether comments may follow `rows`: the page was cut by one of its bounds.
fn may_continue(rows: &[CommentRow]) -> bool {
    let bytes: usize = rows.iter().map(|c| c.body.len()).sum();
    rows.len() as i64 >= PAGE.rows || bytes as i64 >= PAGE.bytes
}

/// What reading the pages after the first needs.
struct Rest {
    reads: Reads,
    slug: String,
    viewer: Option<i64>,
}

/// Where the stream is.
enum Next {
    After(db::comments::Cursor),
    Close,
    Done,
}

/// `{"comments":[` and the first page, then each following page, then `]}`. A
/// comment added while the list is streamed is not in it (it sorts before the
/// cursor); one deleted meanwhile may be. A database error after the first page
/// can no longer change the status: the body is cut short, so the client sees
/// a broken answer, never a list that looks whole.
fn streamed(rest: Rest, first: Vec<CommentRow>) -> Response {
    let mut head = JsonWriter::with_capacity(page_bytes(&first) + 16);
    head.raw(r#"{"comments":["#);
    let next = write_page(&mut head, first, true);
    // The pages are read after the handler returned: in the request's span still.
    let span = tracing::Span::current();
    let pages = futures_util::stream::unfold((rest, next), move |state| next_page(state).instrument(span.clone()));
    let body = futures_util::stream::once(std::future::ready(Ok(head.into_bytes()))).chain(pages);
    ([(header::CONTENT_TYPE, HeaderValue::from_static(JSON_UTF8))], Body::from_stream(body)).into_response()
}

/// The chunk after `next`, and where the stream is then; `None` once it has ended.
async fn next_page((rest, next): (Rest, Next)) -> Option<(Result<Bytes, db::Error>, (Rest, Next))> {
    let cursor = match next {
        Next::Done => return None,
        Next::Close => return Some((Ok(Bytes::from_static(b"]}")), (rest, Next::Done))),
        Next::After(cursor) => cursor,
    };
    let page = rest
        .reads
        .run_for(rest.viewer, async |conn| db::comments::list(conn, &rest.slug, rest.viewer, Some(cursor), PAGE).await)
        .await;
    match page {
        Ok(Some(rows)) if !rows.is_empty() => {
            let mut out = JsonWriter::with_capacity(page_bytes(&rows));
            let next = write_page(&mut out, rows, false);
            Some((Ok(out.into_bytes()), (rest, next)))
        }
        // No more comments, or the article is gone since the first page.
        Ok(_) => Some((Ok(Bytes::from_static(b"]}")), (rest, Next::Done))),
        Err(err) => {
            tracing::error!(error = %err, slug = %rest.slug, "reading a page of comments failed; answer cut short");
            Some((Err(err), (rest, Next::Done)))
        }
    }
}

/// Writes a page's comments, after a comma unless it is the first page; where
/// the next page starts, or that the list ends with this one.
fn write_page(out: &mut JsonWriter, rows: Vec<CommentRow>, first: bool) -> Next {
    let next = match rows.last() {
        Some(last) if may_continue(&rows) => Next::After((last.created_at, last.id)),
        _ => Next::Close,
    };
    for (i, row) in rows.into_iter().enumerate() {
        if i > 0 || !first {
            out.raw(",");
        }
        Comment::from(row).write_json(out);
    }
    next
}

/// About 160 bytes of keys, punctuation, id and timestamps a comment, and its text.
fn page_bytes(rows: &[CommentRow]) -> usize {
    rows.iter().map(|c| 160 + c.body.len() + c.author_username.len() + c.author_bio.len() + c.author_image.len()).sum()
}

/// Delete a comment: its author only. An id that is not a number, or that
/// belongs to another article, is a 404.
#[utoipa::path(delete, path = "/articles/{slug}/comments/{id}", tag = "Comments", operation_id = "DeleteArticleComment",
    params(
        ("slug" = String, Path, description = "Slug of the article"),
        ("id" = i64, Path, description = "Id of the comment"),
    ),
    security(("Token" = []), ("Bearer" = [])),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
    ))]
#[tracing::instrument(skip_all, fields(user_id = user.id, slug = %slug, comment_id = %id))]
pub async fn delete(
    State(db): State<PgPool>,
    user: AuthUser,
    Path((slug, id)): Path<(String, String)>,
) -> Result<StatusCode> {
    let id: i64 = id.parse().map_err(|_| Error::NotFound("comment"))?;
    match db::comments::delete(&db, &slug, id, user.id).await? {
        Deleted::Yes => Ok(StatusCode::NO_CONTENT),
        Deleted::NotFound(what) => Err(Error::NotFound(what)),
        Deleted::NotOwner => Err(Error::Forbidden("comment")),
    }
}

#[cfg(test)]
mod tests {
    use axum::response::IntoResponse as _;
    use chrono::TimeZone as _;
    use http_body_util::BodyExt as _;

    use super::{Comment, CommentsResponse, Profile};

    fn comment(id: i64, text: &str) -> Comment {
        let at = chrono::Utc.with_ymd_and_hms(2026, 11, 29, 21, 30, 0).single().expect("valid date");
        Comment {
            id,
            created_at: at,
            updated_at: at + chrono::Duration::microseconds(1_234_567),
            body: text.to_owned(),
            // An unset image: `null`, as serde writes `None`.
            author: Profile {
                username: format!("{text} author"),
                bio: Some(text.to_owned()),
                image: None,
                following: id % 2 == 0,
            },
        }
    }

    #[tokio::test]
    async fn comments_are_written_byte_for_byte_as_serde_writes_them() {
        let lists = [vec![], vec![comment(1, "plain"), comment(2, "quote \" back\\slash\nline\ttab \u{1} é 🦀")]];
        for comments in lists {
            let response = CommentsResponse { comments };
            let expected = serde_json::to_vec(&response).expect("serialises");
            let response = response.into_response();
            assert_eq!(response.headers()["content-type"], crate::extract::JSON_UTF8);
            let body = response.into_body().collect().await.expect("body").to_bytes();
            assert_eq!(String::from_utf8_lossy(&body), String::from_utf8_lossy(&expected));
        }
    }
}
