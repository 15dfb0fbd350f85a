//! Comments on articles.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;

use super::{Error, articles::Deleted};

#[derive(Debug, Clone)]
pub struct CommentRow {
    pub id: i64,
    pub body: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub author_username: String,
    pub author_bio: String,
    pub author_image: String,
    pub author_following: bool,
}

/// Adds a comment by `author`; `None` when there is no article with `slug`.
#[tracing::instrument(skip(db, body))]
pub async fn add(db: impl PgExecutor<'_>, slug: &str, author: i64, body: &str) -> Result<Option<CommentRow>, Error> {
    Ok(sqlx::query_as!(
        CommentRow,
        r#"WITH c AS (
               INSERT INTO comments (article_id, author_id, body)
               SELECT id, $2, $3 FROM articles WHERE slug = $1
               RETURNING id, author_id, body, created_at, updated_at
           )
           SELECT c.id, c.body, c.created_at, c.updated_at,
                  u.username AS author_username, u.bio AS author_bio, u.image AS author_image,
                  false AS "author_following!"
           FROM c JOIN users u ON u.id = c.author_id"#,
        slug,
        author,
        body
    )
    .fetch_optional(db)
    .await?)
}

/// Where a page of comments ends: the last comment's time and id, in the list's
/// order (newest first).
pub type Cursor = (DateTime<Utc>, i64);

/// How much of a list one statement reads.
#[derive(Debug, Clone, Copy)]
pub struct Page {
    pub rows: i64,
    /// The comments' bodies, in bytes: a page ends at the comment that reaches it.
    pub bytes: i64,
}

/// A page of an article's comments, newest first, after `after` when given: at
/// most `page.rows` comments, and no more once their bodies reach `page.bytes`
/// (the first one always comes); `None` when there is no such article.
#[tracing::instrument(skip(db))]
pub async fn list(
    db: impl PgExecutor<'_>,
    slug: &str,
    viewer: Option<i64>,
    after: Option<Cursor>,
    page: Page,
) -> Result<Option<Vec<CommentRow>>, Error> {
    // The article is the driving row, so "no article" (no rows) and "no comments"
    // (one row of NULLs) are told apart in the same statement.
    let (after_time, after_id) = after.unzip();
    let rows = sqlx::query!(
        r#"SELECT c.id AS "id?", c.body AS "body?", c.created_at AS "created_at?", c.updated_at AS "updated_at?",
                  u.username AS "author_username?", u.bio AS "author_bio?", u.image AS "author_image?",
                  EXISTS (SELECT 1 FROM follows f WHERE f.follower_id = $2 AND f.followee_id = u.id) AS "author_following!"
           FROM articles a
           LEFT JOIN LATERAL (
               SELECT p.id, p.body, p.created_at, p.updated_at, p.author_id
               FROM (
                   SELECT c.id, c.body, c.created_at, c.updated_at, c.author_id,
                          sum(octet_length(c.body)) OVER (ORDER BY c.created_at DESC, c.id DESC) AS upto
                   FROM comments c
                   WHERE c.article_id = a.id AND ($3::timestamptz IS NULL OR (c.created_at, c.id) < ($3, $4))
                   ORDER BY c.created_at DESC, c.id DESC
                   LIMIT $5
               ) p
               WHERE p.upto - octet_length(p.body) < $6
           ) c ON true
           LEFT JOIN users u ON u.id = c.author_id
           WHERE a.slug = $1
           ORDER BY c.created_at DESC, c.id DESC"#,
        slug,
        viewer,
        after_time,
        after_id,
        page.rows,
        page.bytes
    )
    .fetch_all(db)
    .await?;
    if rows.is_empty() {
        return Ok(None);
    }
    let comments = rows
        .into_iter()
        .filter_map(|r| {
            Some(CommentRow {
                id: r.id?,
                body: r.body?,
                created_at: r.created_at?,
                updated_at: r.updated_at?,
                author_username: r.author_username?,
                author_bio: r.author_bio?,
                author_image: r.author_image?,
                author_following: r.author_following,
            })
        })
        .collect();
    Ok(Some(comments))
}

/// Deletes comment `id` of the article `slug` if `user` wrote it, in one
/// statement; which of the two is missing when one is.
#[tracing::instrument(skip(db))]
pub async fn delete(db: impl PgExecutor<'_>, slug: &str, id: i64, user: i64) -> Result<Deleted, Error> {
    let row = sqlx::query!(
        r#"WITH article AS (SELECT id FROM articles WHERE slug = $1),
           target AS (SELECT c.id, c.author_id FROM comments c JOIN article a ON a.id = c.article_id WHERE c.id = $2),
           removed AS (DELETE FROM comments c USING target t WHERE c.id = t.id AND t.author_id = $3 RETURNING c.id)
           SELECT EXISTS (SELECT 1 FROM target) AS "found!", EXISTS (SELECT 1 FROM removed) AS "removed!",
                  EXISTS (SELECT 1 FROM target WHERE author_id = $3) AS "owner!"
           FROM article"#,
        slug,
        id,
        user
    )
    .fetch_optional(db)
    .await?;
    Ok(match row {
        None => Deleted::NotFound("article"),
        Some(r) if !r.found => Deleted::NotFound("comment"),
        Some(r) if r.removed => Deleted::Yes,
        // The author's own comment, deleted by a request of theirs at the same time.
        Some(r) if r.owner => Deleted::NotFound("comment"),
        Some(_) => Deleted::NotOwner,
    })
}
