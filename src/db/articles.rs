//! Articles and favorites.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;

/// An article as a viewer sees it, with its author's profile flattened in.
#[derive(Debug, Clone)]
pub struct ArticleRow {
    pub slug: String,
    pub title: String,
    pub description: String,
    /// `None` in lists, which omit the body.
    pub body: Option<String>,
    pub tag_list: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub favorited: bool,
    pub favorites_count: i64,
    pub author_username: String,
    pub author_bio: String,
    pub author_image: String,
    pub author_following: bool,
}

/// One page of a list and the number of all matches.
#[derive(Debug)]
pub struct ArticlePage {
    pub articles: Vec<ArticleRow>,
    pub total: i64,
    /// Whether the viewer's account exists (a token can outlive it).
    pub viewer_exists: bool,
}

/// What to list: `feed` restricts to authors the viewer follows; the other
/// filters (exact tag, author and favoriting username) combine with AND.
#[derive(Debug, Default)]
pub struct ListQuery<'a> {
    pub tag: Option<&'a str>,
    pub author: Option<&'a str>,
    pub favorited_by: Option<&'a str>,
    pub feed: bool,
    pub limit: i64,
    pub offset: i64,
}

/// The article with `slug`, with its body, as `viewer` sees it.
#[tracing::instrument(skip(db))]
pub async fn get(db: impl PgExecutor<'_>, slug: &str, viewer: Option<i64>) -> Result<Option<ArticleRow>, sqlx::Error> {
    sqlx::query_as!(
        ArticleRow,
        r#"SELECT a.slug, a.title, a.description, a.body AS "body?", a.created_at, a.updated_at,
                  ARRAY(SELECT t.name FROM article_tags at JOIN tags t ON t.id = at.tag_id
                        WHERE at.article_id = a.id ORDER BY t.name) AS "tag_list!",
                  EXISTS (SELECT 1 FROM favorites f WHERE f.article_id = a.id AND f.user_id = $2) AS "favorited!",
                  a.favorites_count,
                  u.username AS author_username, u.bio AS author_bio, u.image AS author_image,
                  EXISTS (SELECT 1 FROM follows fo WHERE fo.follower_id = $2 AND fo.followee_id = u.id) AS "author_following!"
           FROM articles a JOIN users u ON u.id = a.author_id
           WHERE a.slug = $1"#,
        slug,
        viewer
    )
    .fetch_optional(db)
    .await
}

impl ListQuery<'_> {
    /// Which branch of the list statement serves this query: the most selective
    /// filter drives the scan, the others are checked on its rows.
    fn driver(&self) -> &'static str {
        match self {
            Self { feed: true, .. } => "feed",
            Self { author: Some(_), .. } => "author",
            Self { favorited_by: Some(_), .. } => "favorited",
            Self { tag: Some(_), .. } => "tag",
            _ => "all",
        }
    }
}

/// A page of articles, newest first, with the total count, in one statement.
///
/// Each way of listing is its own branch of a `UNION ALL`, gated by `$1` (the
/// driver): PostgreSQL skips a branch whose gate is false at run time, so one
/// cached generic plan serves every filter, and each branch reads only its page
/// through an index (newest first, then the `LIMIT`). Totals come from counters
/// the write triggers keep (see the migrations); only a combination of filters
/// is counted, over the driving filter's rows.
#[tracing::instrument(skip(db))]
pub async fn list(
    db: impl PgExecutor<'_>,
    query: &ListQuery<'_>,
    viewer: Option<i64>,
) -> Result<ArticlePage, sqlx::Error> {
    // The count row is joined to the page so that an offset past the end still
    // reports the total.
    let rows = sqlx::query!(
        r#"WITH tag AS (SELECT id, articles_count FROM tags WHERE name = $2),
           author AS (SELECT id, articles_count FROM users WHERE lower(username) = lower($3)),
           fan AS (SELECT id, favorites_count FROM users WHERE lower(username) = lower($4)),
           candidates AS (
               (SELECT id, created_at FROM articles
                WHERE $1::text = 'all'
                ORDER BY created_at DESC, id DESC LIMIT $6::bigint + $7::bigint)
               UNION ALL
               (SELECT article_id, created_at FROM article_tags
                WHERE $1 = 'tag' AND tag_id = (SELECT id FROM tag)
                ORDER BY created_at DESC, article_id DESC LIMIT $6::bigint + $7::bigint)
               UNION ALL
               (SELECT a.id, a.created_at FROM articles a
                WHERE $1 = 'author' AND a.author_id = (SELECT id FROM author)
                  AND ($2::text IS NULL OR EXISTS (
                          SELECT 1 FROM article_tags at WHERE at.article_id = a.id AND at.tag_id = (SELECT id FROM tag)))
                  AND ($4::text IS NULL OR EXISTS (
                          SELECT 1 FROM favorites f WHERE f.article_id = a.id AND f.user_id = (SELECT id FROM fan)))
                ORDER BY a.created_at DESC, a.id DESC LIMIT $6::bigint + $7::bigint)
               UNION ALL
               (SELECT a.id, a.created_at FROM favorites f JOIN articles a ON a.id = f.article_id
                WHERE $1 = 'favorited' AND f.user_id = (SELECT id FROM fan)
                  AND ($2::text IS NULL OR EXISTS (
                          SELECT 1 FROM article_tags at WHERE at.article_id = a.id AND at.tag_id = (SELECT id FROM tag)))
                ORDER BY a.created_at DESC, a.id DESC LIMIT $6::bigint + $7::bigint)
               UNION ALL
               (SELECT a.id, a.created_at FROM follows fo
                CROSS JOIN LATERAL (SELECT id, created_at FROM articles WHERE author_id = fo.followee_id
                                    ORDER BY created_at DESC, id DESC LIMIT $6::bigint + $7::bigint) a
                WHERE $1 = 'feed' AND fo.follower_id = $5
                ORDER BY a.created_at DESC, a.id DESC LIMIT $6::bigint + $7::bigint)
           ),
           page AS (SELECT id, created_at FROM candidates ORDER BY created_at DESC, id DESC LIMIT $6 OFFSET $7),
           total AS (
               SELECT CASE
                   WHEN $1 = 'all' THEN (SELECT articles FROM article_totals)
                   WHEN $1 = 'tag' THEN (SELECT articles_count FROM tag)
                   WHEN $1 = 'feed' THEN (SELECT sum(u.articles_count)::bigint FROM follows fo
                                          JOIN users u ON u.id = fo.followee_id WHERE fo.follower_id = $5)
                   WHEN $2::text IS NULL AND $1 = 'favorited' THEN (SELECT favorites_count FROM fan)
                   WHEN $2::text IS NULL AND $4::text IS NULL THEN (SELECT articles_count FROM author)
                   WHEN $1 = 'favorited' THEN (
                       SELECT count(*) FROM favorites f
                       WHERE f.user_id = (SELECT id FROM fan) AND EXISTS (
                           SELECT 1 FROM article_tags at WHERE at.article_id = f.article_id AND at.tag_id = (SELECT id FROM tag)))
                   ELSE (
                       SELECT count(*) FROM articles a
                       WHERE a.author_id = (SELECT id FROM author)
                         AND ($2::text IS NULL OR EXISTS (
                                 SELECT 1 FROM article_tags at WHERE at.article_id = a.id AND at.tag_id = (SELECT id FROM tag)))
                         AND ($4::text IS NULL OR EXISTS (
                                 SELECT 1 FROM favorites f WHERE f.article_id = a.id AND f.user_id = (SELECT id FROM fan))))
               END AS n
           )
           SELECT COALESCE(c.n, 0) AS "total!",
                  EXISTS (SELECT 1 FROM users WHERE id = $5) AS "viewer_exists!",
                  a.slug AS "slug?", a.title AS "title?", a.description AS "description?",
                  a.created_at AS "created_at?", a.updated_at AS "updated_at?",
                  ARRAY(SELECT t.name FROM article_tags at JOIN tags t ON t.id = at.tag_id
                        WHERE at.article_id = a.id ORDER BY t.name) AS "tag_list!",
                  EXISTS (SELECT 1 FROM favorites f WHERE f.article_id = a.id AND f.user_id = $5) AS "favorited!",
                  a.favorites_count AS "favorites_count?",
                  u.username AS "author_username?", u.bio AS "author_bio?", u.image AS "author_image?",
                  EXISTS (SELECT 1 FROM follows fo WHERE fo.follower_id = $5 AND fo.followee_id = u.id) AS "author_following!"
           FROM total c
           LEFT JOIN page p ON true
           LEFT JOIN articles a ON a.id = p.id
           LEFT JOIN users u ON u.id = a.author_id
           ORDER BY p.created_at DESC, p.id DESC"#,
        query.driver(),
        query.tag,
        query.author,
        query.favorited_by,
        viewer,
        query.limit,
        // Each branch reads `limit + offset` rows; no table holds that many, and
        // the clamp keeps the sum from overflowing bigint (a 500).
        query.offset.min(i64::MAX - 1000)
    )
    .fetch_all(db)
    .await?;

    let total = rows.first().map_or(0, |r| r.total);
    let viewer_exists = rows.first().is_some_and(|r| r.viewer_exists);
    let articles = rows
        .into_iter()
        .filter_map(|r| {
            Some(ArticleRow {
                slug: r.slug?,
                title: r.title?,
                description: r.description?,
                body: None,
                tag_list: r.tag_list,
                created_at: r.created_at?,
                updated_at: r.updated_at?,
                favorited: r.favorited,
                favorites_count: r.favorites_count?,
                author_username: r.author_username?,
                author_bio: r.author_bio?,
                author_image: r.author_image?,
                author_following: r.author_following,
            })
        })
        .collect();
    Ok(ArticlePage { articles, total, viewer_exists })
}

/// Inserts an article unless `slug` is taken; `None` when it is.
#[tracing::instrument(skip(db, body))]
pub async fn insert(
    db: impl PgExecutor<'_>,
    author: i64,
    slug: &str,
    title: &str,
    description: &str,
    body: &str,
) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar!(
        r#"INSERT INTO articles (author_id, slug, title, description, body) VALUES ($1, $2, $3, $4, $5)
           ON CONFLICT (slug) DO NOTHING RETURNING id"#,
        author,
        slug,
        title,
        description,
        body
    )
    .fetch_optional(db)
    .await
}

/// The parts of an article that decide who may change it, locked for the update.
#[derive(Debug)]
pub struct Ownership {
    pub id: i64,
    pub author_id: i64,
    pub slug: String,
}

#[tracing::instrument(skip(db))]
pub async fn lock_for_update(db: impl PgExecutor<'_>, slug: &str) -> Result<Option<Ownership>, sqlx::Error> {
    sqlx::query_as!(Ownership, "SELECT id, author_id, slug FROM articles WHERE slug = $1 FOR UPDATE", slug)
        .fetch_optional(db)
        .await
}

/// New values for an article; `None` keeps the current one.
#[derive(Debug, Default)]
pub struct Changes<'a> {
    pub slug: Option<&'a str>,
    pub title: Option<&'a str>,
    pub description: Option<&'a str>,
    pub body: Option<&'a str>,
}

/// Applies `changes`; fails with a unique violation of `articles_slug_key` when
/// the new slug is taken.
#[tracing::instrument(skip(db, changes))]
pub async fn update(db: impl PgExecutor<'_>, id: i64, changes: &Changes<'_>) -> Result<(), sqlx::Error> {
    sqlx::query!(
        r#"UPDATE articles SET
               slug = COALESCE($2, slug),
               title = COALESCE($3, title),
               description = COALESCE($4, description),
               body = COALESCE($5, body),
               updated_at = now()
           WHERE id = $1"#,
        id,
        changes.slug,
        changes.title,
        changes.description,
        changes.body
    )
    .execute(db)
    .await?;
    Ok(())
}

/// What happened to a delete request.
#[derive(Debug, PartialEq, Eq)]
pub enum Deleted {
    Yes,
    NotFound,
    NotOwner,
}

/// Deletes the article if `user` wrote it, in one statement.
#[tracing::instrument(skip(db))]
pub async fn delete(db: impl PgExecutor<'_>, slug: &str, user: i64) -> Result<Deleted, sqlx::Error> {
    let row = sqlx::query!(
        r#"WITH target AS (SELECT id, author_id FROM articles WHERE slug = $1),
                removed AS (DELETE FROM articles a USING target t WHERE a.id = t.id AND t.author_id = $2 RETURNING a.id)
           SELECT EXISTS (SELECT 1 FROM removed) AS "removed!" FROM target"#,
        slug,
        user
    )
    .fetch_optional(db)
    .await?;
    Ok(match row {
        None => Deleted::NotFound,
        Some(r) if r.removed => Deleted::Yes,
        Some(_) => Deleted::NotOwner,
    })
}

/// Marks the article as a favorite of `user`; twice is a no-op. `false` when
/// there is no such article.
#[tracing::instrument(skip(db))]
pub async fn favorite(db: impl PgExecutor<'_>, slug: &str, user: i64) -> Result<bool, sqlx::Error> {
    let found = sqlx::query_scalar!(
        r#"WITH target AS (SELECT id FROM articles WHERE slug = $1),
                added AS (INSERT INTO favorites (user_id, article_id) SELECT $2, id FROM target ON CONFLICT DO NOTHING)
           SELECT EXISTS (SELECT 1 FROM target) AS "found!""#,
        slug,
        user
    )
    .fetch_one(db)
    .await?;
    Ok(found)
}

/// Removes the favorite; twice is a no-op. `false` when there is no such article.
#[tracing::instrument(skip(db))]
pub async fn unfavorite(db: impl PgExecutor<'_>, slug: &str, user: i64) -> Result<bool, sqlx::Error> {
    let found = sqlx::query_scalar!(
        r#"WITH target AS (SELECT id FROM articles WHERE slug = $1),
                removed AS (DELETE FROM favorites f USING target t WHERE f.article_id = t.id AND f.user_id = $2)
           SELECT EXISTS (SELECT 1 FROM target) AS "found!""#,
        slug,
        user
    )
    .fetch_one(db)
    .await?;
    Ok(found)
}
