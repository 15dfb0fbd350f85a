//! Query parameters of the article lists: filters and `limit`/`offset` paging.
//!
//! Parameters are taken as text and parsed here, so that `limit=abc` or
//! `offset=-1` is a 422 naming the parameter rather than a plain-text 400.

use std::collections::HashMap;

use axum::{
    extract::{FromRequestParts, Query},
    http::{StatusCode, request::Parts},
};

use crate::error::{Error, ValidationErrors};

/// A page of a list: `limit` 1..=100 (default 20), `offset` >= 0 (default 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Page {
    /// How many articles to return.
    #[param(required = false, minimum = 1, maximum = 100, default = 20)]
    pub limit: i64,
    /// How many articles to skip.
    #[param(required = false, minimum = 0, default = 0)]
    pub offset: i64,
}

impl Page {
    pub const DEFAULT_LIMIT: i64 = 20;
    pub const MAX_LIMIT: i64 = 100;

    fn parse(params: &HashMap<String, String>, errors: &mut ValidationErrors) -> Self {
        let limit = match params.get("limit").map(|v| v.trim()) {
            None => Self::DEFAULT_LIMIT,
            Some(raw) => match raw.parse::<i64>() {
                Ok(n) if (1..=Self::MAX_LIMIT).contains(&n) => n,
                _ => {
                    errors.add("limit", format!("must be a whole number from 1 to {}", Self::MAX_LIMIT));
                    Self::DEFAULT_LIMIT
                }
            },
        };
        let offset = match params.get("offset").map(|v| v.trim()) {
            None => 0,
            Some(raw) => match raw.parse::<i64>() {
                Ok(n) if n >= 0 => n,
                _ => {
                    errors.add("offset", "must be a whole number, 0 or more");
                    0
                }
            },
        };
        Self { limit, offset }
    }
}

/// `GET /api/articles` parameters: filters combine with AND.
#[derive(Debug, Clone, Default, PartialEq, Eq, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ArticleFilters {
    /// Only articles with this tag.
    pub tag: Option<String>,
    /// Only articles by this username.
    pub author: Option<String>,
    /// Only articles favorited by this username.
    pub favorited: Option<String>,
}

async fn raw_params<S: Send + Sync>(parts: &mut Parts, state: &S) -> Result<HashMap<String, String>, Error> {
    Query::<HashMap<String, String>>::from_request_parts(parts, state)
        .await
        .map(|Query(params)| params)
        .map_err(|rejection| Error::request(StatusCode::BAD_REQUEST, rejection.body_text()))
}

impl<S: Send + Sync> FromRequestParts<S> for Page {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let params = raw_params(parts, state).await?;
        let mut errors = ValidationErrors::new();
        let page = Self::parse(&params, &mut errors);
        errors.into_result()?;
        Ok(page)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for ArticleFilters {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let mut params = raw_params(parts, state).await?;
        // An empty filter (`?tag=`) is no filter, as clients build these URLs loosely.
        let mut take = |key: &str| params.remove(key).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        Ok(Self { tag: take("tag"), author: take("author"), favorited: take("favorited") })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(query: &[(&str, &str)]) -> Result<Page, ValidationErrors> {
        let params = query.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        let mut errors = ValidationErrors::new();
        let page = Page::parse(&params, &mut errors);
        if errors.is_empty() { Ok(page) } else { Err(errors) }
    }

    #[test]
    fn paging_defaults_to_the_first_twenty() {
        assert_eq!(page(&[]), Ok(Page { limit: 20, offset: 0 }));
    }

    #[test]
    fn limit_must_be_between_one_and_a_hundred() {
        assert_eq!(page(&[("limit", "100")]).map(|p| p.limit), Ok(100));
        for bad in ["0", "101", "-1", "ten", "1.5", "", " "] {
            assert!(page(&[("limit", bad)]).is_err(), "limit={bad}");
        }
    }

    #[test]
    fn offset_must_not_be_negative() {
        assert_eq!(page(&[("offset", "40")]).map(|p| p.offset), Ok(40));
        assert!(page(&[("offset", "-1")]).is_err());
        assert!(page(&[("offset", "x")]).is_err());
        assert!(page(&[("offset", "")]).is_err(), "an empty value is not a number");
    }
}
