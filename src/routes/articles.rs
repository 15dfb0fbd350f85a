//! `/api/articles`: list, feed, read, write and favorite articles.

use axum::{extract::State, http::StatusCode};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{
    app::AppState,
    db::{self, articles::ArticleRow},
    domain::{ArticleBody, Description, Slug, TagList, Title},
    error::{Error, Result, ValidationErrors},
    extract::{ArticleFilters, AuthUser, Json, Page, Path},
    routes::Profile,
};

#[derive(Debug, Deserialize)]
pub struct Envelope<T> {
    article: T,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NewArticle {
    title: Option<String>,
    description: Option<String>,
    body: Option<String>,
    tag_list: Option<Vec<String>>,
}

/// Every field optional; `tagList`, when present, replaces the tags.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpdateArticle {
    title: Option<String>,
    description: Option<String>,
    body: Option<String>,
    tag_list: Option<Vec<String>>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Article {
    slug: String,
    title: String,
    description: String,
    /// Omitted from lists.
    #[serde(skip_serializing_if = "Option::is_none")]
    body: Option<String>,
    tag_list: Vec<String>,
    #[serde(serialize_with = "super::timestamp")]
    created_at: DateTime<Utc>,
    #[serde(serialize_with = "super::timestamp")]
    updated_at: DateTime<Utc>,
    favorited: bool,
    favorites_count: i64,
    author: Profile,
}

impl From<ArticleRow> for Article {
    fn from(row: ArticleRow) -> Self {
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
pub struct ArticleResponse {
    article: Article,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ArticlesResponse {
    articles: Vec<Article>,
    articles_count: i64,
}

fn one(row: Option<ArticleRow>) -> Result<Json<ArticleResponse>> {
    let row = row.ok_or(Error::NotFound("article"))?;
    Ok(Json(ArticleResponse { article: row.into() }))
}

/// The page as a response; 401 when the viewer's token outlived their account.
fn many(page: db::articles::ArticlePage, viewer: Option<&AuthUser>) -> Result<Json<ArticlesResponse>> {
    if viewer.is_some() && !page.viewer_exists {
        return Err(Error::Unauthorized);
    }
    let articles = page.articles.into_iter().map(Article::from).collect();
    Ok(Json(ArticlesResponse { articles, articles_count: page.total }))
}

/// `GET /api/articles`: newest first, filtered by `tag`, `author` and `favorited`.
#[tracing::instrument(skip_all)]
pub async fn list(
    State(state): State<AppState>,
    viewer: Option<AuthUser>,
    filters: ArticleFilters,
    page: Page,
) -> Result<Json<ArticlesResponse>> {
    let query = db::articles::ListQuery {
        tag: filters.tag.as_deref(),
        author: filters.author.as_deref(),
        favorited_by: filters.favorited.as_deref(),
        feed_of: None,
        limit: page.limit,
        offset: page.offset,
    };
    many(db::articles::list(&state.db, &query, viewer.as_ref().map(|v| v.id)).await?, viewer.as_ref())
}

/// `GET /api/articles/feed`: articles by the authors the caller follows.
#[tracing::instrument(skip_all, fields(user_id = user.id))]
pub async fn feed(State(state): State<AppState>, user: AuthUser, page: Page) -> Result<Json<ArticlesResponse>> {
    let query = db::articles::ListQuery {
        feed_of: Some(user.id),
        limit: page.limit,
        offset: page.offset,
        ..Default::default()
    };
    many(db::articles::list(&state.db, &query, Some(user.id)).await?, Some(&user))
}

/// `GET /api/articles/{slug}`.
#[tracing::instrument(skip_all, fields(slug = %slug))]
pub async fn get(
    State(state): State<AppState>,
    viewer: Option<AuthUser>,
    Path(slug): Path<String>,
) -> Result<Json<ArticleResponse>> {
    one(db::articles::get(&state.db, &slug, viewer.map(|v| v.id)).await?)
}

/// `POST /api/articles`: 201. The article and its tags are written in one transaction.
#[tracing::instrument(skip_all, fields(user_id = user.id))]
pub async fn create(
    State(state): State<AppState>,
    user: AuthUser,
    Json(Envelope { article: new }): Json<Envelope<NewArticle>>,
) -> Result<(StatusCode, Json<ArticleResponse>)> {
    let mut errors = ValidationErrors::new();
    let text = |v: &Option<String>| v.clone().unwrap_or_default();
    let title = errors.check("title", Title::parse(&text(&new.title)));
    let description = errors.check("description", Description::parse(&text(&new.description)));
    let body = errors.check("body", ArticleBody::parse(&text(&new.body)));
    let tags = errors.check("tagList", TagList::parse(new.tag_list.as_deref().unwrap_or_default()));
    let (Some(title), Some(description), Some(body), Some(tags)) = (title, description, body, tags) else {
        return Err(Error::Validation(errors));
    };

    let mut tx = state.db.begin().await?;
    let base = Slug::from_title(title.as_str());
    let mut candidate = if base.is_reserved() { base.with_random_suffix() } else { base.clone() };
    let id = loop {
        let inserted = db::articles::insert(
            &mut *tx,
            user.id,
            candidate.as_str(),
            title.as_str(),
            description.as_str(),
            body.as_str(),
        )
        .await?;
        match inserted {
            Some(id) => break id,
            None => candidate = base.with_random_suffix(),
        }
    };
    db::tags::attach(&mut *tx, id, tags.as_slice()).await?;
    let row = db::articles::get(&mut *tx, candidate.as_str(), Some(user.id)).await?;
    tx.commit().await?;
    let response = one(row)?;
    Ok((StatusCode::CREATED, response))
}

/// `PUT /api/articles/{slug}`: the author only. A new title gives a new slug.
#[tracing::instrument(skip_all, fields(user_id = user.id, slug = %slug))]
pub async fn update(
    State(state): State<AppState>,
    user: AuthUser,
    Path(slug): Path<String>,
    Json(Envelope { article: changes }): Json<Envelope<UpdateArticle>>,
) -> Result<Json<ArticleResponse>> {
    let mut errors = ValidationErrors::new();
    let title = changes.title.as_deref().and_then(|v| errors.check("title", Title::parse(v)));
    let description = changes.description.as_deref().and_then(|v| errors.check("description", Description::parse(v)));
    let body = changes.body.as_deref().and_then(|v| errors.check("body", ArticleBody::parse(v)));
    let tags = changes.tag_list.as_deref().and_then(|v| errors.check("tagList", TagList::parse(v)));
    errors.into_result()?;

    let mut tx = state.db.begin().await?;
    let article = db::articles::lock_for_update(&mut *tx, &slug).await?.ok_or(Error::NotFound("article"))?;
    if article.author_id != user.id {
        return Err(Error::Forbidden);
    }
    let new_base = title.as_ref().map(|t| Slug::from_title(t.as_str())).filter(|base| !base.is_base_of(&article.slug));
    let mut new_slug =
        new_base.as_ref().map(|base| if base.is_reserved() { base.with_random_suffix() } else { base.clone() });
    loop {
        // A savepoint, so that a taken slug can be retried inside the transaction.
        let mut attempt = sqlx::Acquire::begin(&mut *tx).await?;
        let changes = db::articles::Changes {
            slug: new_slug.as_ref().map(Slug::as_str),
            title: title.as_ref().map(Title::as_str),
            description: description.as_ref().map(Description::as_str),
            body: body.as_ref().map(ArticleBody::as_str),
        };
        match db::articles::update(&mut *attempt, article.id, &changes).await {
            Ok(()) => {
                attempt.commit().await?;
                break;
            }
            Err(err) if is_slug_conflict(&err) => {
                attempt.rollback().await?;
                new_slug = new_base.as_ref().map(Slug::with_random_suffix);
            }
            Err(err) => return Err(err.into()),
        }
    }
    if let Some(tags) = &tags {
        db::tags::detach_all(&mut *tx, article.id).await?;
        db::tags::attach(&mut *tx, article.id, tags.as_slice()).await?;
    }
    let final_slug = new_slug.as_ref().map_or(article.slug.as_str(), Slug::as_str);
    let row = db::articles::get(&mut *tx, final_slug, Some(user.id)).await?;
    tx.commit().await?;
    one(row)
}

fn is_slug_conflict(err: &sqlx::Error) -> bool {
    err.as_database_error().is_some_and(|db| db.is_unique_violation() && db.constraint() == Some("articles_slug_key"))
}

/// `DELETE /api/articles/{slug}`: the author only; 204.
#[tracing::instrument(skip_all, fields(user_id = user.id, slug = %slug))]
pub async fn delete(State(state): State<AppState>, user: AuthUser, Path(slug): Path<String>) -> Result<StatusCode> {
    super::ensure_caller_exists(&state.db, &user).await?;
    match db::articles::delete(&state.db, &slug, user.id).await? {
        db::articles::Deleted::Yes => Ok(StatusCode::NO_CONTENT),
        db::articles::Deleted::NotFound => Err(Error::NotFound("article")),
        db::articles::Deleted::NotOwner => Err(Error::Forbidden),
    }
}

/// `POST /api/articles/{slug}/favorite`: idempotent; any request body is ignored.
#[tracing::instrument(skip_all, fields(user_id = user.id, slug = %slug))]
pub async fn favorite(
    State(state): State<AppState>,
    user: AuthUser,
    Path(slug): Path<String>,
) -> Result<Json<ArticleResponse>> {
    if !db::articles::favorite(&state.db, &slug, user.id).await? {
        return Err(Error::NotFound("article"));
    }
    one(db::articles::get(&state.db, &slug, Some(user.id)).await?)
}

/// `DELETE /api/articles/{slug}/favorite`: idempotent.
#[tracing::instrument(skip_all, fields(user_id = user.id, slug = %slug))]
pub async fn unfavorite(
    State(state): State<AppState>,
    user: AuthUser,
    Path(slug): Path<String>,
) -> Result<Json<ArticleResponse>> {
    super::ensure_caller_exists(&state.db, &user).await?;
    if !db::articles::unfavorite(&state.db, &slug, user.id).await? {
        return Err(Error::NotFound("article"));
    }
    one(db::articles::get(&state.db, &slug, Some(user.id)).await?)
}
