//! `AuthUser`: the caller, identified by a JWT in the `Authorization` header.
//!
//! Both `Token <jwt>` (the RealWorld scheme) and `Bearer <jwt>` are accepted.
//! As `AuthUser` it is required (401 without it); as `Option<AuthUser>` no header
//! gives `None`, but a header with a bad token is still a 401, so that a client with
//! an expired session learns it instead of silently seeing anonymous data.

use std::sync::Arc;

use axum::{
    extract::{FromRef, FromRequestParts, OptionalFromRequestParts},
    http::{header::AUTHORIZATION, request::Parts},
};

use crate::{auth::JwtKeys, error::Error};

#[derive(Debug, Clone)]
pub struct AuthUser {
    pub id: i64,
    /// The token as presented, handed back in user responses.
    pub token: String,
}

impl<S> FromRequestParts<S> for AuthUser
where
    Arc<JwtKeys>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        authenticate(parts, state)?.ok_or(Error::Unauthorized)
    }
}

impl<S> OptionalFromRequestParts<S> for AuthUser
where
    Arc<JwtKeys>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Option<Self>, Self::Rejection> {
        authenticate(parts, state)
    }
}

/// `Ok(None)` without an Authorization header, 401 for a bad one.
fn authenticate<S>(parts: &Parts, state: &S) -> Result<Option<AuthUser>, Error>
where
    Arc<JwtKeys>: FromRef<S>,
{
    let Some(header) = parts.headers.get(AUTHORIZATION) else { return Ok(None) };
    let token = header.to_str().ok().and_then(parse_authorization).ok_or(Error::Unauthorized)?;
    let keys = Arc::<JwtKeys>::from_ref(state);
    let id = keys.verify(token).ok_or(Error::Unauthorized)?;
    Ok(Some(AuthUser { id, token: token.to_owned() }))
}

/// The token of `Token <jwt>` or `Bearer <jwt>` (scheme case-insensitive).
fn parse_authorization(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    let known = scheme.eq_ignore_ascii_case("token") || scheme.eq_ignore_ascii_case("bearer");
    (known && !token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::parse_authorization;

    #[test]
    fn token_and_bearer_schemes_are_accepted() {
        assert_eq!(parse_authorization("Token abc.def.ghi"), Some("abc.def.ghi"));
        assert_eq!(parse_authorization("Bearer abc.def.ghi"), Some("abc.def.ghi"));
        assert_eq!(parse_authorization("bearer   abc"), Some("abc"));
    }

    #[test]
    fn other_schemes_and_empty_tokens_are_not() {
        assert_eq!(parse_authorization("Basic dXNlcjpwYXNz"), None);
        assert_eq!(parse_authorization("Token"), None);
        assert_eq!(parse_authorization("Token "), None);
        assert_eq!(parse_authorization("abc.def.ghi"), None);
    }
}
