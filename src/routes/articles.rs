//! `/api/articles`: list, feed, read, write and favorite articles.

use axum::{
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use utoipa::ToSchema;

use chrono::{DateTime, Utc};

use crate::{
    app::AppState,
    db::{
        self, Reads,
        articles::{ArticleRow, ListedArticle},
    },
    domain::{self, ArticleBody, Description, Slug, TagList, Title},
    error::{Error, Result, ValidationErrors},
    extract::{ArticleFilters, AuthUser, Json, Page, Path},
    openapi::{
        BadRequest, Conflict, Forbidden, NotFound, PayloadTooLarge, Unauthorized, UnsupportedMediaType,
        ValidationFailed,
    },
    routes::{Profile, ProfileRef, json_writer::JsonWriter, unset_if_empty},
};

#[derive(Debug, Deserialize, ToSchema)]
pub struct NewArticleRequest {
    article: NewArticle,
}

// The limits in `#[schema(...)]` are the domain types' constants, written out as
// utoipa takes only literals there; a test in tests/api/openapi.rs
// (`request_limits_in_the_document_and_the_database_are_the_domain_types`) keeps them the same.
/// The fields are parsed as optional so that a missing one is a 422 naming it.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NewArticle {
    #[schema(required = true, value_type = String, min_length = 1, max_length = 200)]
    title: Option<String>,
    #[schema(required = true, value_type = String, min_length = 1, max_length = 1000)]
    description: Option<String>,
    #[schema(required = true, value_type = String, min_length = 1, max_length = 100_000)]
    body: Option<String>,
    /// Sorted and de-duplicated by the server; `null` means none.
    // On an array, utoipa gives `min_length` and `max_length` to its items: each tag's.
    #[schema(value_type = Option<Vec<String>>, max_items = 20, min_length = 1, max_length = 40)]
    tag_list: Option<Vec<String>>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct UpdateArticleRequest {
    article: UpdateArticle,
}

/// Every field optional; `tagList`, when present, replaces the tags (`[]` removes
/// them all; `null` is refused, as the spec says).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpdateArticle {
    #[serde(default, deserialize_with = "super::non_null")]
    #[schema(required = false, value_type = String, min_length = 1, max_length = 200)]
    title: Option<String>,
    #[serde(default, deserialize_with = "super::non_null")]
    #[schema(required = false, value_type = String, min_length = 1, max_length = 1000)]
    description: Option<String>,
    #[serde(default, deserialize_with = "super::non_null")]
    #[schema(required = false, value_type = String, min_length = 1, max_length = 100_000)]
    body: Option<String>,
    #[serde(default, deserialize_with = "super::non_null")]
    #[schema(required = false, value_type = Vec<String>, max_items = 20, min_length = 1, max_length = 40)]
    tag_list: Option<Vec<String>>,
}

impl TryFrom<NewArticle> for domain::NewArticle {
    type Error = ValidationErrors;

    /// Absent and blank are both "can't be blank"; absent tags are none.
    fn try_from(new: NewArticle) -> Result<Self, ValidationErrors> {
        let mut errors = ValidationErrors::new();
        let title = errors.check("title", Title::parse(new.title.as_deref().unwrap_or_default()));
        let description =
            errors.check("description", Description::parse(new.description.as_deref().unwrap_or_default()));
        let body = errors.check("body", ArticleBody::parse(new.body.as_deref().unwrap_or_default()));
        let tags = errors.check("tagList", TagList::parse(new.tag_list.as_deref().unwrap_or_default()));
        match (title, description, body, tags) {
            (Some(title), Some(description), Some(body), Some(tags)) => Ok(Self { title, description, body, tags }),
            _ => Err(errors),
        }
    }
}

impl TryFrom<UpdateArticle> for domain::ArticleChanges {
    type Error = ValidationErrors;

    /// Each field present must be valid.
    fn try_from(changes: UpdateArticle) -> Result<Self, ValidationErrors> {
        let mut errors = ValidationErrors::new();
        let title = changes.title.as_deref().and_then(|v| errors.check("title", Title::parse(v)));
        let description =
            changes.description.as_deref().and_then(|v| errors.check("description", Description::parse(v)));
        let body = changes.body.as_deref().and_then(|v| errors.check("body", ArticleBody::parse(v)));
        let tags = changes.tag_list.as_deref().and_then(|v| errors.check("tagList", TagList::parse(v)));
        if errors.is_empty() { Ok(Self { title, description, body, tags }) } else { Err(errors) }
    }
}

/// One article, with its body.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Article {
    slug: String,
    title: String,
    description: String,
    body: String,
    tag_list: Vec<String>,
    #[serde(serialize_with = "super::timestamp")]
    #[schema(value_type = String, format = DateTime)]
    created_at: DateTime<Utc>,
    #[serde(serialize_with = "super::timestamp")]
    #[schema(value_type = String, format = DateTime)]
    updated_at: DateTime<Utc>,
    favorited: bool,
    favorites_count: i64,
    author: Profile,
}

/// An article in a list: everything but the body.
// Borrowed from the page's rows (`db::articles::ArticlePage`).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ArticleSummary<'a> {
    slug: &'a str,
    title: &'a str,
    description: &'a str,
    tag_list: &'a [String],
    #[serde(serialize_with = "super::timestamp")]
    #[schema(value_type = String, format = DateTime)]
    created_at: DateTime<Utc>,
    #[serde(serialize_with = "super::timestamp")]
    #[schema(value_type = String, format = DateTime)]
    updated_at: DateTime<Utc>,
    favorited: bool,
    favorites_count: i64,
    #[schema(value_type = Profile)]
    author: ProfileRef<'a>,
}

fn author(row: &mut ArticleRow) -> Profile {
    Profile {
        username: std::mem::take(&mut row.author_username),
        bio: unset_if_empty(std::mem::take(&mut row.author_bio)),
        image: unset_if_empty(std::mem::take(&mut row.author_image)),
        following: row.author_following,
    }
}

impl ArticleSummary<'_> {
    fn write_json(&self, out: &mut JsonWriter) {
        out.object(|o| {
            o.key("slug").string(self.slug);
            o.key("title").string(self.title);
            o.key("description").string(self.description);
            o.key("tagList").strings(self.tag_list);
            o.key("createdAt").timestamp(self.created_at);
            o.key("updatedAt").timestamp(self.updated_at);
            o.key("favorited").bool(self.favorited);
            o.key("favoritesCount").int(self.favorites_count);
            self.author.write_json(o.key("author"));
        });
    }
}

/// Written by hand ([`JsonWriter`]), as serde would write it: the pages are the
/// largest responses, and the most requested.
impl IntoResponse for ArticlesResponse<'_> {
    fn into_response(self) -> Response {
        // About 400 bytes an article: one allocation for the whole page.
        let mut out = JsonWriter::with_capacity(64 + 512 * self.articles.len());
        out.object(|o| {
            o.key("articles").array(&self.articles, |out, article| article.write_json(out));
            o.key("articlesCount").int(self.articles_count);
        });
        out.into_response()
    }
}

impl From<ArticleRow> for Article {
    fn from(mut row: ArticleRow) -> Self {
        let author = author(&mut row);
        Self {
            slug: row.slug,
            title: row.title,
            description: row.description,
            body: row.body,
            tag_list: row.tag_list,
            created_at: row.created_at,
            updated_at: row.updated_at,
            favorited: row.favorited,
            favorites_count: row.favorites_count,
            author,
        }
    }
}

impl<'a> From<&'a ListedArticle<'a>> for ArticleSummary<'a> {
    fn from(article: &'a ListedArticle<'a>) -> Self {
        Self {
            slug: article.slug,
            title: article.title,
            description: article.description,
            tag_list: &article.tag_list,
            created_at: article.created_at,
            updated_at: article.updated_at,
            favorited: article.favorited,
            favorites_count: article.favorites_count,
            author: ProfileRef {
                username: article.author_username,
                bio: unset_if_empty(article.author_bio),
                image: unset_if_empty(article.author_image),
                following: article.author_following,
            },
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ArticleResponse {
    article: Article,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ArticlesResponse<'a> {
    articles: Vec<ArticleSummary<'a>>,
    /// The number of all matching articles, not only this page.
    articles_count: i64,
}

fn article_response(row: Option<ArticleRow>) -> Result<Json<ArticleResponse>> {
    let row = row.ok_or(Error::NotFound("article"))?;
    Ok(Json(ArticleResponse { article: row.into() }))
}

/// The page as a response. Written here, as it borrows from the page.
fn page_response(page: &db::articles::ArticlePage) -> Result<Response> {
    let listed = page.articles()?;
    let articles = listed.iter().map(ArticleSummary::from).collect();
    Ok(ArticlesResponse { articles, articles_count: page.total }.into_response())
}

/// Articles, newest first, filtered by `tag`, `author` and `favorited` (combined
/// with AND). Auth is optional; lists omit the body.
/// A refused token (invalid, expired or revoked) reads as no token, and the answer carries a
/// `WWW-Authenticate` challenge.
#[utoipa::path(get, path = "/articles", tag = "Articles", operation_id = "GetArticles",
    params(ArticleFilters, Page),
    security((), ("Token" = []), ("Bearer" = [])),
    responses(
        (status = 200, description = "A page of articles and the total count", body = ArticlesResponse),
        (status = 400, response = BadRequest),
        (status = 422, response = ValidationFailed),
    ))]
#[tracing::instrument(skip_all)]
pub async fn list(
    State(reads): State<Reads>,
    viewer: Option<AuthUser>,
    filters: ArticleFilters,
    page: Page,
) -> Result<Response> {
    let query = db::articles::ListQuery {
        tag: filters.tag.as_deref(),
        author: filters.author.as_deref(),
        favorited_by: filters.favorited.as_deref(),
        feed: false,
        limit: page.limit,
        offset: page.offset,
    };
    let viewer = viewer.map(|v| v.id);
    page_response(&reads.run_for(viewer, async |conn| db::articles::list(conn, &query, viewer).await).await?)
}

/// Articles by the authors the caller follows, newest first.
#[utoipa::path(get, path = "/articles/feed", tag = "Articles", operation_id = "GetArticlesFeed",
    params(Page),
    security(("Token" = []), ("Bearer" = [])),
    responses(
        (status = 200, description = "A page of articles and the total count", body = ArticlesResponse),
        (status = 401, response = Unauthorized),
        (status = 422, response = ValidationFailed),
    ))]
#[tracing::instrument(skip_all, fields(user_id = user.id))]
pub async fn feed(State(reads): State<Reads>, user: AuthUser, page: Page) -> Result<Response> {
    let query = db::articles::ListQuery { feed: true, limit: page.limit, offset: page.offset, ..Default::default() };
    page_response(
        &reads.run_for(Some(user.id), async |conn| db::articles::list(conn, &query, Some(user.id)).await).await?,
    )
}

/// One article. Auth is optional.
/// A refused token (invalid, expired or revoked) reads as no token, and the answer carries a
/// `WWW-Authenticate` challenge.
#[utoipa::path(get, path = "/articles/{slug}", tag = "Articles", operation_id = "GetArticle",
    params(("slug" = String, Path, description = "Slug of the article")),
    security((), ("Token" = []), ("Bearer" = [])),
    responses(
        (status = 200, description = "The article", body = ArticleResponse),
        (status = 400, response = BadRequest),
        (status = 404, response = NotFound),
    ))]
#[tracing::instrument(skip_all, fields(slug = %slug))]
pub async fn get(
    State(reads): State<Reads>,
    viewer: Option<AuthUser>,
    Path(slug): Path<String>,
) -> Result<Json<ArticleResponse>> {
    let viewer = viewer.map(|v| v.id);
    article_response(reads.run_for(viewer, async |conn| db::articles::get(conn, &slug, viewer).await).await?)
}

/// Create an article. It and its tags are written in one transaction.
#[utoipa::path(post, path = "/articles", tag = "Articles", operation_id = "CreateArticle",
    request_body = NewArticleRequest,
    security(("Token" = []), ("Bearer" = [])),
    responses(
        (status = 201, description = "The new article", body = ArticleResponse),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, response = ValidationFailed),
    ))]
#[tracing::instrument(skip_all, fields(user_id = user.id))]
pub async fn create(
    State(state): State<AppState>,
    user: AuthUser,
    Json(NewArticleRequest { article: new }): Json<NewArticleRequest>,
) -> Result<(StatusCode, Json<ArticleResponse>)> {
    let domain::NewArticle { title, description, body, tags } = new.try_into()?;

    let mut tx = state.writes.begin().await?;
    let base = Slug::from_title(title.as_str());
    let (title, description, body) = (title.as_str(), description.as_str(), body.as_str());
    let mut inserted = None;
    for slug in slug_candidates(&base) {
        inserted = db::articles::insert(&mut *tx, user.id, slug.as_str(), title, description, body).await?;
        if inserted.is_some() {
            break;
        }
    }
    let id = inserted.ok_or_else(|| anyhow::anyhow!("no free slug for {base:?} after {SLUG_ATTEMPTS} attempts"))?;
    db::tags::attach(&mut tx, id, tags.as_slice()).await?;
    let row = db::articles::get_by_id(&mut *tx, id, Some(user.id)).await?;
    tx.commit().await?;
    let response = article_response(row)?;
    Ok((StatusCode::CREATED, response))
}

/// Update an article: its author only. A new title gives a new slug.
#[utoipa::path(put, path = "/articles/{slug}", tag = "Articles", operation_id = "UpdateArticle",
    params(("slug" = String, Path, description = "Slug of the article")),
    request_body = UpdateArticleRequest,
    security(("Token" = []), ("Bearer" = [])),
    responses(
        (status = 200, description = "The updated article", body = ArticleResponse),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, response = ValidationFailed),
    ))]
#[tracing::instrument(skip_all, fields(user_id = user.id, slug = %slug))]
pub async fn update(
    State(state): State<AppState>,
    user: AuthUser,
    Path(slug): Path<String>,
    Json(UpdateArticleRequest { article: changes }): Json<UpdateArticleRequest>,
) -> Result<Json<ArticleResponse>> {
    let domain::ArticleChanges { title, description, body, tags } = changes.try_into()?;

    let mut tx = state.writes.begin().await?;
    let article = db::articles::lock_for_update(&mut *tx, &slug).await?.ok_or(Error::NotFound("article"))?;
    if article.author_id != user.id {
        return Err(Error::Forbidden("article"));
    }
    if title.is_none() && description.is_none() && body.is_none() && tags.is_none() {
        // `{"article": {}}` changes nothing, not even `updatedAt`.
        let row = db::articles::get_by_id(&mut *tx, article.id, Some(user.id)).await?;
        tx.commit().await?;
        return article_response(row);
    }
    let changes = db::articles::Changes {
        slug: None,
        title: title.as_ref().map(Title::as_str),
        description: description.as_ref().map(Description::as_str),
        body: body.as_ref().map(ArticleBody::as_str),
    };
    // A new title whose slug is the current one's base keeps the current slug.
    match title.as_ref().map(|t| Slug::from_title(t.as_str())).filter(|base| !base.is_base_of(&article.slug)) {
        Some(base) => {
            let mut renamed = false;
            for slug in slug_candidates(&base) {
                let changes = db::articles::Changes { slug: Some(slug.as_str()), ..changes };
                renamed = db::articles::update(&mut *tx, article.id, &changes).await?;
                if renamed {
                    break;
                }
            }
            if !renamed {
                return Err(db::Error::Taken(db::Unique::Slug).into());
            }
        }
        None => {
            db::articles::update(&mut *tx, article.id, &changes).await?;
        }
    }
    if let Some(tags) = &tags {
        db::tags::detach_all(&mut *tx, article.id).await?;
        db::tags::attach(&mut tx, article.id, tags.as_slice()).await?;
    }
    let row = db::articles::get_by_id(&mut *tx, article.id, Some(user.id)).await?;
    tx.commit().await?;
    article_response(row)
}

/// How many slugs to try before giving up (each retry draws 32 random bits).
const SLUG_ATTEMPTS: usize = 5;

/// The slugs to try, in turn, for an article whose title gives `base`: the base
/// itself unless it is reserved, then the base with random suffixes. Creating
/// and renaming both write with each until one is free (their statements say
/// `None`/`false` for a taken slug).
fn slug_candidates(base: &Slug) -> impl Iterator<Item = Slug> + '_ {
    let first = (!base.is_reserved()).then(|| base.clone());
    first.into_iter().chain(std::iter::repeat_with(|| base.with_random_suffix())).take(SLUG_ATTEMPTS)
}

/// Delete an article: its author only.
#[utoipa::path(delete, path = "/articles/{slug}", tag = "Articles", operation_id = "DeleteArticle",
    params(("slug" = String, Path, description = "Slug of the article")),
    security(("Token" = []), ("Bearer" = [])),
    responses(
        (status = 204, description = "Deleted, with its comments and favorites"),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
    ))]
#[tracing::instrument(skip_all, fields(user_id = user.id, slug = %slug))]
pub async fn delete(State(db): State<PgPool>, user: AuthUser, Path(slug): Path<String>) -> Result<StatusCode> {
    match db::articles::delete(&db, &slug, user.id).await? {
        db::articles::Deleted::Yes => Ok(StatusCode::NO_CONTENT),
        db::articles::Deleted::NotFound(what) => Err(Error::NotFound(what)),
        db::articles::Deleted::NotOwner => Err(Error::Forbidden("article")),
    }
}

/// Favorite an article; idempotent. Any request body is ignored.
#[utoipa::path(post, path = "/articles/{slug}/favorite", tag = "Favorites", operation_id = "CreateArticleFavorite",
    params(("slug" = String, Path, description = "Slug of the article")),
    security(("Token" = []), ("Bearer" = [])),
    responses(
        (status = 200, description = "The article, favorited", body = ArticleResponse),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
    ))]
#[tracing::instrument(skip_all, fields(user_id = user.id, slug = %slug))]
pub async fn favorite(
    State(state): State<AppState>,
    user: AuthUser,
    Path(slug): Path<String>,
) -> Result<Json<ArticleResponse>> {
    let id = db::articles::favorite(&state.writes, &slug, user.id).await?.ok_or(Error::NotFound("article"))?;
    // By id: the article may have been renamed since.
    article_response(db::articles::get_by_id(&state.writes, id, Some(user.id)).await?)
}

/// Unfavorite an article; idempotent.
#[utoipa::path(delete, path = "/articles/{slug}/favorite", tag = "Favorites", operation_id = "DeleteArticleFavorite",
    params(("slug" = String, Path, description = "Slug of the article")),
    security(("Token" = []), ("Bearer" = [])),
    responses(
        (status = 200, description = "The article, no longer favorited", body = ArticleResponse),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
    ))]
#[tracing::instrument(skip_all, fields(user_id = user.id, slug = %slug))]
pub async fn unfavorite(
    State(state): State<AppState>,
    user: AuthUser,
    Path(slug): Path<String>,
) -> Result<Json<ArticleResponse>> {
    let id = db::articles::unfavorite(&state.writes, &slug, user.id).await?.ok_or(Error::NotFound("article"))?;
    article_response(db::articles::get_by_id(&state.writes, id, Some(user.id)).await?)
}

#[cfg(test)]
mod tests {
    use axum::response::IntoResponse as _;
    use chrono::TimeZone as _;
    use http_body_util::BodyExt as _;

    use super::{ArticleSummary, ArticlesResponse, ProfileRef};

    /// An article's text fields, made from `text`: slug, description, author, bio.
    fn texts(text: &str) -> [String; 4] {
        [format!("{text}-slug"), format!("{text} described"), format!("{text} author"), format!("{text} bio")]
    }

    fn summary<'a>(text: &'a str, texts: &'a [String; 4], tags: &'a [String], following: bool) -> ArticleSummary<'a> {
        let at = chrono::Utc.with_ymd_and_hms(2026, 11, 29, 18, 30, 0).single().expect("valid date");
        let [slug, description, username, bio] = texts;
        ArticleSummary {
            slug,
            title: text,
            description,
            tag_list: tags,
            created_at: at,
            updated_at: at + chrono::Duration::milliseconds(1234),
            favorited: following,
            favorites_count: 7,
            // An unset image: `null`, as serde writes `None`.
            author: ProfileRef { username, bio: Some(bio), image: None, following },
        }
    }

    #[tokio::test]
    async fn a_page_is_written_byte_for_byte_as_serde_writes_it() {
        let odd = "quote \" back\\slash\nline\ttab \u{1} \u{e9} \u{1f980}";
        let (plain_texts, odd_texts) = (texts("plain"), texts(odd));
        let (plain_tags, odd_tags) = (["rust".to_owned(), "web".to_owned()], ["c\"d".to_owned(), String::new()]);
        for page in [
            ArticlesResponse { articles: vec![], articles_count: 0 },
            ArticlesResponse {
                articles: vec![
                    summary("plain", &plain_texts, &plain_tags, true),
                    summary(odd, &odd_texts, &odd_tags, false),
                ],
                articles_count: 12_345,
            },
        ] {
            let expected = serde_json::to_vec(&page).expect("serialises");
            let response = page.into_response();
            assert_eq!(response.headers()["content-type"], crate::extract::JSON_UTF8);
            let body = response.into_body().collect().await.expect("body").to_bytes();
            assert_eq!(String::from_utf8_lossy(&body), String::from_utf8_lossy(&expected));
        }
    }
}
