//! Who is calling: the JWT in the `Authorization` header, checked once per request.
//!
//! Both `Token <jwt>` (the RealWorld scheme) and `Bearer <jwt>` are accepted.
//! [`AuthenticateLayer`], a middleware layer on every route, verifies the token and
//! leaves the outcome in the request's extensions; the extractors take it there.
//!
//! - `AuthUser` is required: no token, or a refused one, is a `401` whose body and
//!   `WWW-Authenticate` challenge say which (`is missing`, `is invalid`, ...).
//! - `Option<AuthUser>` is for public reads: no token is `None`, and so is a
//!   refused one (malformed, forged or expired). Such a read is answered as for an
//!   anonymous visitor, and the layer adds `WWW-Authenticate: Token
//!   error="invalid_token"` to the answer, so that a client holding a stale token
//!   can still read the site and can notice that it should sign in again.
//!
//! A well-signed token whose account is gone, or whose session has been revoked,
//! is refused here too, as `has been revoked` ([`Revocations`]), so every
//! endpoint treats it alike. The
//! challenge is added to answers to reads (`GET`, `HEAD`) only: writes answer as
//! they always did, and a stale token sent along with a login changes nothing in
//! its answer.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
};

use axum::{
    extract::{FromRef, FromRequestParts, OptionalFromRequestParts},
    http::{
        Extensions, HeaderMap, Method, Request, Response, StatusCode,
        header::{AUTHORIZATION, WWW_AUTHENTICATE},
        request::Parts,
    },
};
use tower::{Layer, Service};

use crate::{
    auth::{JwtKeys, Revocations, TokenProblem},
    error::Error,
};

#[derive(Debug, Clone)]
pub struct AuthUser {
    pub id: i64,
    /// The session the token belongs to (its `sid`).
    pub session: uuid::Uuid,
    /// The token as presented, handed back in user responses.
    pub token: String,
}

/// The outcome of checking a request's `Authorization` header, when it has one.
#[derive(Debug, Clone)]
struct Authentication(Result<AuthUser, TokenProblem>);

/// The caller's id, when the request's token was accepted by [`AuthenticateLayer`]
/// (for layers inside it, such as the rate limits; handlers use [`AuthUser`]).
pub fn caller_id(extensions: &Extensions) -> Option<i64> {
    match extensions.get::<Authentication>() {
        Some(Authentication(Ok(user))) => Some(user.id),
        _ => None,
    }
}

/// Middleware: checks the token of every request that carries one, and adds the
/// `invalid_token` challenge to the answer to a read (`GET`, `HEAD`) whose token
/// was refused; a `401` has its own challenge already.
///
/// A tower layer of its own rather than `axum::middleware::from_fn`: that one
/// clones the whole application state and the inner service, and boxes the
/// inner service and its future, for every request.
#[derive(Debug, Clone)]
pub struct AuthenticateLayer {
    keys: Arc<JwtKeys>,
    revocations: Revocations,
}

impl AuthenticateLayer {
    pub fn new(keys: Arc<JwtKeys>, revocations: Revocations) -> Self {
        Self { keys, revocations }
    }
}

impl<S> Layer<S> for AuthenticateLayer {
    type Service = Authenticate<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Authenticate { inner, keys: Arc::clone(&self.keys), revocations: self.revocations.clone() }
    }
}

/// The service [`AuthenticateLayer`] makes.
#[derive(Debug, Clone)]
pub struct Authenticate<S> {
    inner: S,
    keys: Arc<JwtKeys>,
    revocations: Revocations,
}

impl<S, B, R> Service<Request<B>> for Authenticate<S>
where
    S: Service<Request<B>, Response = Response<R>>,
{
    type Response = Response<R>;
    type Error = S::Error;
    type Future = AuthenticateFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let Some(outcome) = check(request.headers(), &self.keys, &self.revocations) else {
            return AuthenticateFuture { inner: self.inner.call(request), challenge: None };
        };
        let is_read = matches!(*request.method(), Method::GET | Method::HEAD);
        let refused = outcome.as_ref().err().copied();
        request.extensions_mut().insert(Authentication(outcome));
        AuthenticateFuture { inner: self.inner.call(request), challenge: refused.filter(|_| is_read) }
    }
}

pin_project_lite::pin_project! {
    /// The inner service's answer, with the challenge added when the token was refused.
    pub struct AuthenticateFuture<F> {
        #[pin]
        inner: F,
        challenge: Option<TokenProblem>,
    }
}

impl<F, R, E> Future for AuthenticateFuture<F>
where
    F: Future<Output = Result<Response<R>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut response = ready!(this.inner.poll(cx))?;
        if let Some(problem) = this.challenge.take()
            && response.status() != StatusCode::UNAUTHORIZED
        {
            response.headers_mut().insert(WWW_AUTHENTICATE, problem.challenge());
        }
        Poll::Ready(Ok(response))
    }
}

/// `None` without a token (no `Authorization` header, or one in another scheme,
/// such as `Basic`); the caller, or why the token is refused, otherwise.
fn check(headers: &HeaderMap, keys: &JwtKeys, revoked: &Revocations) -> Option<Result<AuthUser, TokenProblem>> {
    let header = headers.get(AUTHORIZATION)?;
    let Ok(value) = header.to_str() else { return Some(Err(TokenProblem::Invalid)) };
    let token = parse_authorization(value)?;
    if token.is_empty() {
        return Some(Err(TokenProblem::Invalid));
    }
    let outcome = match keys.verify(token) {
        Ok((id, session)) if revoked.account_deleted(id) || revoked.session_revoked(session) => {
            Err(TokenProblem::Revoked)
        }
        verified => verified.map(|(id, session)| AuthUser { id, session, token: token.to_owned() }),
    };
    Some(outcome)
}

/// The outcome for this request: the layer's, taken (a handler extracts the caller
/// once), or, for a router built without the layer, checked here.
fn outcome<S>(parts: &mut Parts, state: &S) -> Option<Result<AuthUser, TokenProblem>>
where
    Arc<JwtKeys>: FromRef<S>,
    Revocations: FromRef<S>,
{
    match parts.extensions.remove::<Authentication>() {
        Some(Authentication(outcome)) => Some(outcome),
        None => check(&parts.headers, &Arc::<JwtKeys>::from_ref(state), &Revocations::from_ref(state)),
    }
}

impl<S> FromRequestParts<S> for AuthUser
where
    Arc<JwtKeys>: FromRef<S>,
    Revocations: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        outcome(parts, state).unwrap_or(Err(TokenProblem::Missing)).map_err(Error::Unauthorized)
    }
}

impl<S> OptionalFromRequestParts<S> for AuthUser
where
    Arc<JwtKeys>: FromRef<S>,
    Revocations: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Error;

    /// Never rejects: a refused token reads as anonymous (the layer says so in
    /// the answer's `WWW-Authenticate`).
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Option<Self>, Self::Rejection> {
        Ok(outcome(parts, state).and_then(Result::ok))
    }
}

/// The token of `Token <jwt>` or `Bearer <jwt>` (scheme case-insensitive), empty
/// when the scheme has no token; `None` for other schemes.
fn parse_authorization(value: &str) -> Option<&str> {
    let value = value.trim();
    let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
    let known = scheme.eq_ignore_ascii_case("token") || scheme.eq_ignore_ascii_case("bearer");
    known.then(|| token.trim())
}

#[cfg(test)]
mod tests {
    use std::{sync::Arc, time::Duration};

    use axum::{Router, body::Body, extract::FromRef, http::Request, routing::get};
    use secrecy::SecretString;
    use tower::ServiceExt as _;

    use super::{AuthUser, parse_authorization};
    use crate::auth::{JwtKeys, Revocations};

    #[derive(Clone, FromRef)]
    struct State {
        keys: Arc<JwtKeys>,
        revocations: Revocations,
    }

    /// Without the layer (a router of a forker's own), the extractor checks the
    /// token itself: a valid one is the caller, a missing one a 401.
    #[tokio::test]
    async fn without_the_layer_the_extractor_checks_the_token_itself() {
        let keys =
            Arc::new(JwtKeys::new(&SecretString::from("0123456789abcdef0123456789abcdef"), Duration::from_secs(60)));
        let far = chrono::Utc::now() + chrono::Duration::days(1);
        let token = keys.sign(42, uuid::Uuid::new_v4(), far).expect("signs");
        let state = State { keys, revocations: Revocations::default() };
        let router =
            Router::new().route("/", get(|user: AuthUser| async move { user.id.to_string() })).with_state(state);
        let request = |authorization: Option<String>| {
            let builder = Request::builder().uri("/");
            let builder = match authorization {
                Some(value) => builder.header("authorization", value),
                None => builder,
            };
            builder.body(Body::empty()).expect("valid request")
        };
        let response = router.clone().oneshot(request(Some(format!("Token {token}")))).await.expect("answers");
        assert_eq!(response.status(), 200);
        let body = http_body_util::BodyExt::collect(response.into_body()).await.expect("body").to_bytes();
        assert_eq!(&body[..], b"42");
        let response = router.oneshot(request(None)).await.expect("answers");
        assert_eq!(response.status(), 401);
    }

    #[test]
    fn token_and_bearer_schemes_are_accepted() {
        assert_eq!(parse_authorization("Token abc.def.ghi"), Some("abc.def.ghi"));
        assert_eq!(parse_authorization("Bearer abc.def.ghi"), Some("abc.def.ghi"));
        assert_eq!(parse_authorization("bearer   abc"), Some("abc"));
    }

    #[test]
    fn other_schemes_are_no_token_and_an_empty_token_is_empty() {
        assert_eq!(parse_authorization("Basic dXNlcjpwYXNz"), None);
        assert_eq!(parse_authorization("abc.def.ghi"), None);
        assert_eq!(parse_authorization("Token"), Some(""));
        assert_eq!(parse_authorization("Token "), Some(""));
    }
}
