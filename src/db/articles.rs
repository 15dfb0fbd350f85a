//! Articles and favorites.

use chrono::{DateTime, Utc};
use sqlx::{PgExecutor, Row as _, ValueRef as _, postgres::PgRow};

use super::{Error, borrowed::borrowed_row};

/// An article as a viewer sees it, with its author's profile flattened in.
#[derive(Debug, Clone)]
pub struct ArticleRow {
    pub slug: String,
    pub title: String,
    pub description: String,
    pub body: String,
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

/// One page of a list as PostgreSQL sent it, and the number of all matches.
///
/// The rows are kept whole and [`ArticlePage::articles`] borrows the articles'
/// text fields from them: those are copied once, into the response, rather than
/// first into a `String` each (a hundred allocations a page). The tag lists are
/// sqlx's `Vec<String>` (docs/performance-notes.md says why).
#[derive(Debug)]
pub struct ArticlePage {
    /// The page's rows; without articles, the one row of the total.
    rows: Vec<PgRow>,
    pub total: i64,
}

borrowed_row! {
    /// An article of a page, as the viewer sees it, borrowed from its row: each
    /// field is the column of the same name (see [`super::borrowed`]).
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct ListedArticle<'r> {
        pub slug: &'r str,
        pub title: &'r str,
        pub description: &'r str,
        pub tag_list: Vec<String>,
        pub created_at: DateTime<Utc>,
        pub updated_at: DateTime<Utc>,
        pub favorited: bool,
        pub favorites_count: i64,
        pub author_username: &'r str,
        pub author_bio: &'r str,
        pub author_image: &'r str,
        pub author_following: bool,
    }
}

impl ArticlePage {
    /// The articles, newest first.
    pub fn articles(&self) -> Result<Vec<ListedArticle<'_>>, Error> {
        let Some(first) = self.rows.first() else { return Ok(Vec::new()) };
        if self.rows.len() == 1 && first.try_get_raw("slug")?.is_null() {
            return Ok(Vec::new()); // the total's row of an empty page
        }
        let columns = ListedArticle::columns(first)?;
        let articles = self.rows.iter().map(|row| ListedArticle::read(row, &columns));
        Ok(articles.collect::<Result<_, _>>()?)
    }
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

/// One article, with its body, as the viewer (`$2`) sees it; `$condition` picks
/// it by `$1`.
macro_rules! article_where {
    ($condition:literal, $key:expr, $viewer:expr) => {
        sqlx::query_as!(
            ArticleRow,
            r#"SELECT a.slug, a.title, a.description, b.body, a.created_at, a.updated_at, a.tag_list,
                      EXISTS (SELECT 1 FROM favorites f WHERE f.article_id = a.id AND f.user_id = $2) AS "favorited!",
                      a.favorites_count,
                      u.username AS author_username, u.bio AS author_bio, u.image AS author_image,
                      EXISTS (SELECT 1 FROM follows fo WHERE fo.follower_id = $2 AND fo.followee_id = u.id) AS "author_following!"
               FROM articles a JOIN users u ON u.id = a.author_id JOIN article_bodies b ON b.article_id = a.id
               WHERE "# + $condition,
            $key,
            $viewer
        )
    };
}

/// The article with `slug`, with its body, as `viewer` sees it.
#[tracing::instrument(skip(db))]
pub async fn get(db: impl PgExecutor<'_>, slug: &str, viewer: Option<i64>) -> Result<Option<ArticleRow>, Error> {
    Ok(article_where!("a.slug = $1", slug, viewer).fetch_optional(db).await?)
}

/// The article `id`, as [`get`] shows it: for reading an article back after a
/// write that found it by a slug it may no longer have.
#[tracing::instrument(skip(db))]
pub async fn get_by_id(db: impl PgExecutor<'_>, id: i64, viewer: Option<i64>) -> Result<Option<ArticleRow>, Error> {
    Ok(article_where!("a.id = $1", id, viewer).fetch_optional(db).await?)
}

/// A list statement: the CTEs (`$with`, SQL text, defining at least `page`: the
/// ids and creation times of the page, newest first) and the expression `total`
/// are the caller's; the projection is shared: the columns of the `LATERAL`
/// subquery, which [`ListedArticle`] reads by name. Every statement binds `$1` viewer, `$2` limit, `$3` offset,
/// then its filters from `$4`.
///
/// `following` is the SQL of the page's authors' `following` flag: the
/// viewer's follows, probed per row, unless the caller knows the answer (the
/// feed lists followed authors only). The articles of the page are read in a
/// `LATERAL ... OFFSET 0` subquery, which PostgreSQL cannot flatten into a join:
/// a cached generic plan does not know the limit, assumes a tenth of the table,
/// and would otherwise hash-join the whole articles table to a 20-row page. The
/// total row is joined to the page so that an offset past the end still
/// reports it; on an empty page it is the only row, its article columns NULL.
///
/// The rows are kept to be borrowed from, which `query!` cannot do (it decodes
/// each into owned values): the statement runs through `sqlx::query`, and a
/// `query!` on the same text and arguments, never run, checks its SQL and
/// parameters against the schema at compile time. The columns [`ListedArticle`]
/// reads are checked, by name and type, on each page's first row; the API test
/// `a_listed_article_is_the_single_article_without_its_body_in_every_list` runs
/// every list statement.
macro_rules! list_statement {
    ($with:literal, $total:literal, $($arg:expr),+ $(,)?) => {
        list_statement!(
            following: "$1::bigint IS NOT NULL AND EXISTS (
                            SELECT 1 FROM follows fo WHERE fo.follower_id = $1 AND fo.followee_id = u.id)",
            $with, $total, $($arg),+
        )
    };
    (following: $following:literal, $with:literal, $total:literal, $($arg:expr),+ $(,)?) => {
        list_statement!(@text [
            "WITH ", $with, ", total AS (SELECT (", $total, ") AS n) ",
            r#"SELECT COALESCE(c.n, 0) AS total, x.*
               FROM total c
               LEFT JOIN page p ON true
               LEFT JOIN LATERAL (
                   SELECT a.slug, a.title, a.description, a.tag_list, a.created_at, a.updated_at,
                          $1::bigint IS NOT NULL AND EXISTS (
                              SELECT 1 FROM favorites f WHERE f.article_id = a.id AND f.user_id = $1) AS favorited,
                          a.favorites_count,
                          u.username AS author_username, u.bio AS author_bio, u.image AS author_image,
                          "#, $following, r#" AS author_following
                   FROM articles a JOIN users u ON u.id = a.author_id
                   WHERE a.id = p.id
                   OFFSET 0
               ) x ON true
               ORDER BY p.created_at DESC, p.id DESC"#,
        ], $($arg),+)
    };
    (@text [$($part:literal),+ $(,)?], $($arg:expr),+) => {{
        if false {
            let _ = sqlx::query!($($part +)+ "", $($arg),+);
        }
        sqlx::query(concat!($($part),+))$(.bind($arg))+
    }};
}

/// A page of articles, newest first, with the total count, in one statement.
///
/// Each way of listing has its own statement, so that each has one small plan
/// that stays good when cached generically: the page is read through an index
/// (newest first, then the `LIMIT`) and the total comes from the counters the
/// write triggers keep (see the migrations). Only a combination of filters is
/// counted, over the rows of the author's articles or the user's favorites.
#[tracing::instrument(skip(db))]
pub async fn list(db: impl PgExecutor<'_>, query: &ListQuery<'_>, viewer: Option<i64>) -> Result<ArticlePage, Error> {
    // Feeds read `limit + offset` rows per followed author; no table holds that
    // many, and the clamp keeps the sum from overflowing bigint (a 500).
    let (limit, offset) = (query.limit, query.offset.min(i64::MAX - 1000));
    let statement = match *query {
        ListQuery { feed: true, .. } => {
            list_statement!(
                // The page's authors are the followed ones, in the statement's one snapshot.
                following: "true",
                "page AS (SELECT a.id, a.created_at FROM follows fo
                 CROSS JOIN LATERAL (SELECT id, created_at FROM articles WHERE author_id = fo.followee_id
                                     ORDER BY created_at DESC, id DESC LIMIT $2::bigint + $3::bigint) a
                 WHERE fo.follower_id = $1
                 ORDER BY a.created_at DESC, a.id DESC LIMIT $2 OFFSET $3)",
                "SELECT sum((SELECT u.articles_count FROM users u WHERE u.id = fo.followee_id))::bigint
                 FROM follows fo WHERE fo.follower_id = $1",
                viewer,
                limit,
                offset
            )
        }
        ListQuery { tag: None, author: None, favorited_by: None, .. } => list_statement!(
            "page AS (SELECT id, created_at FROM articles ORDER BY created_at DESC, id DESC LIMIT $2 OFFSET $3)",
            "SELECT articles FROM article_totals",
            viewer,
            limit,
            offset
        )
        ,
        ListQuery { tag: Some(tag), author: None, favorited_by: None, .. } => list_statement!(
            "page AS (SELECT article_id AS id, created_at FROM article_tags
                 WHERE tag_id = (SELECT id FROM tags WHERE name = $4)
                 ORDER BY created_at DESC, article_id DESC LIMIT $2 OFFSET $3)",
            "SELECT articles_count FROM tags WHERE name = $4",
            viewer,
            limit,
            offset,
            tag
        )
        ,
        ListQuery { tag: None, author: Some(author), favorited_by: None, .. } => list_statement!(
            "page AS (SELECT id, created_at FROM articles
                 WHERE author_id = (SELECT id FROM users WHERE lower(username) = lower($4))
                 ORDER BY created_at DESC, id DESC LIMIT $2 OFFSET $3)",
            "SELECT articles_count FROM users WHERE lower(username) = lower($4)",
            viewer,
            limit,
            offset,
            author
        )
        ,
        ListQuery { tag: None, author: None, favorited_by: Some(fan), .. } => list_statement!(
            "page AS (SELECT a.id, a.created_at FROM favorites f JOIN articles a ON a.id = f.article_id
                 WHERE f.user_id = (SELECT id FROM users WHERE lower(username) = lower($4))
                 ORDER BY a.created_at DESC, a.id DESC LIMIT $2 OFFSET $3)",
            "SELECT favorites_count FROM users WHERE lower(username) = lower($4)",
            viewer,
            limit,
            offset,
            fan
        )
        ,
        // Two or three filters: driven by the author's articles when there is an
        // author, else by the user's favorites (then a tag is the other filter).
        ListQuery { tag, author, favorited_by, .. } => list_statement!(
            "matches AS (
                     SELECT a.id, a.created_at FROM articles a
                     WHERE $5::text IS NOT NULL
                       AND a.author_id = (SELECT id FROM users WHERE lower(username) = lower($5))
                       AND ($4::text IS NULL OR EXISTS (
                               SELECT 1 FROM article_tags at
                               WHERE at.article_id = a.id AND at.tag_id = (SELECT id FROM tags WHERE name = $4)))
                       AND ($6::text IS NULL OR EXISTS (
                               SELECT 1 FROM favorites f WHERE f.article_id = a.id
                                 AND f.user_id = (SELECT id FROM users WHERE lower(username) = lower($6))))
                     UNION ALL
                     SELECT a.id, a.created_at FROM favorites f JOIN articles a ON a.id = f.article_id
                     WHERE $5::text IS NULL
                       AND f.user_id = (SELECT id FROM users WHERE lower(username) = lower($6))
                       AND EXISTS (SELECT 1 FROM article_tags at
                                   WHERE at.article_id = a.id AND at.tag_id = (SELECT id FROM tags WHERE name = $4))
                 ),
                 page AS (SELECT id, created_at FROM matches ORDER BY created_at DESC, id DESC LIMIT $2 OFFSET $3)",
            "SELECT count(*) FROM matches",
            viewer,
            limit,
            offset,
            tag,
            author,
            favorited_by
        )
        ,
    };

    let rows = statement.fetch_all(db).await?;
    let total = match rows.first() {
        Some(first) => first.try_get("total")?,
        None => 0,
    };
    Ok(ArticlePage { rows, total })
}

/// Inserts an article and its body unless `slug` is taken; `None` when it is.
#[tracing::instrument(skip(db, body))]
pub async fn insert(
    db: impl PgExecutor<'_>,
    author: i64,
    slug: &str,
    title: &str,
    description: &str,
    body: &str,
) -> Result<Option<i64>, Error> {
    Ok(sqlx::query_scalar!(
        r#"WITH article AS (
               INSERT INTO articles (author_id, slug, title, description) VALUES ($1, $2, $3, $4)
               ON CONFLICT (slug) DO NOTHING RETURNING id
           ),
           body AS (INSERT INTO article_bodies (article_id, body) SELECT id, $5 FROM article)
           SELECT id AS "id!" FROM article"#,
        author,
        slug,
        title,
        description,
        body
    )
    .fetch_optional(db)
    .await?)
}

/// The parts of an article that decide who may change it, locked for the update.
#[derive(Debug)]
pub struct Ownership {
    pub id: i64,
    pub author_id: i64,
    pub slug: String,
}

#[tracing::instrument(skip(db))]
pub async fn lock_for_update(db: impl PgExecutor<'_>, slug: &str) -> Result<Option<Ownership>, Error> {
    Ok(sqlx::query_as!(Ownership, "SELECT id, author_id, slug FROM articles WHERE slug = $1 FOR UPDATE", slug)
        .fetch_optional(db)
        .await?)
}

/// New values for an article; `None` keeps the current one.
#[derive(Debug, Default, Clone, Copy)]
pub struct Changes<'a> {
    pub slug: Option<&'a str>,
    pub title: Option<&'a str>,
    pub description: Option<&'a str>,
    pub body: Option<&'a str>,
}

/// Applies `changes`, unless the new slug is taken: `false` then, and nothing
/// is changed. A slug taken by a concurrent write that has not committed yet is
/// waited for, then is [`Error::Taken`].
#[tracing::instrument(skip(db, changes))]
pub async fn update(db: impl PgExecutor<'_>, id: i64, changes: &Changes<'_>) -> Result<bool, Error> {
    Ok(sqlx::query_scalar!(
        r#"WITH updated AS (
               UPDATE articles SET
                   slug = COALESCE($2, slug),
                   title = COALESCE($3, title),
                   description = COALESCE($4, description),
                   updated_at = now()
               WHERE id = $1 AND ($2::text IS NULL OR NOT EXISTS (SELECT 1 FROM articles WHERE slug = $2 AND id <> $1))
               RETURNING id
           ),
           body AS (
               UPDATE article_bodies b SET body = $5 FROM updated u WHERE b.article_id = u.id AND $5::text IS NOT NULL
           )
           SELECT EXISTS (SELECT 1 FROM updated) AS "updated!""#,
        id,
        changes.slug,
        changes.title,
        changes.description,
        changes.body
    )
    .fetch_one(db)
    .await?)
}

/// What happened to a delete request.
#[derive(Debug, PartialEq, Eq)]
pub enum Deleted {
    Yes,
    /// The kind of resource that is missing: "article", or "comment".
    NotFound(&'static str),
    NotOwner,
}

/// Deletes the article if `user` wrote it, in one statement.
#[tracing::instrument(skip(db))]
pub async fn delete(db: impl PgExecutor<'_>, slug: &str, user: i64) -> Result<Deleted, Error> {
    let row = sqlx::query!(
        r#"WITH target AS (SELECT id, author_id FROM articles WHERE slug = $1),
                removed AS (DELETE FROM articles a USING target t WHERE a.id = t.id AND t.author_id = $2 RETURNING a.id)
           SELECT EXISTS (SELECT 1 FROM removed) AS "removed!", author_id = $2 AS "owner!" FROM target"#,
        slug,
        user
    )
    .fetch_optional(db)
    .await?;
    Ok(match row {
        None => Deleted::NotFound("article"),
        Some(r) if r.removed => Deleted::Yes,
        // The author's own article, deleted by a request of theirs at the same time.
        Some(r) if r.owner => Deleted::NotFound("article"),
        Some(_) => Deleted::NotOwner,
    })
}

/// Marks the article as a favorite of `user`; twice is a no-op. The article's
/// id, `None` when there is no such article.
#[tracing::instrument(skip(db))]
pub async fn favorite(db: impl PgExecutor<'_>, slug: &str, user: i64) -> Result<Option<i64>, Error> {
    Ok(sqlx::query_scalar!(
        r#"WITH target AS (SELECT id FROM articles WHERE slug = $1),
                added AS (INSERT INTO favorites (user_id, article_id) SELECT $2, id FROM target ON CONFLICT DO NOTHING)
           SELECT id AS "id!" FROM target"#,
        slug,
        user
    )
    .fetch_optional(db)
    .await?)
}

/// Removes the favorite; twice is a no-op. The article's id, `None` when there
/// is no such article.
#[tracing::instrument(skip(db))]
pub async fn unfavorite(db: impl PgExecutor<'_>, slug: &str, user: i64) -> Result<Option<i64>, Error> {
    Ok(sqlx::query_scalar!(
        r#"WITH target AS (SELECT id FROM articles WHERE slug = $1),
                removed AS (DELETE FROM favorites f USING target t WHERE f.article_id = t.id AND f.user_id = $2)
           SELECT id AS "id!" FROM target"#,
        slug,
        user
    )
    .fetch_optional(db)
    .await?)
}
