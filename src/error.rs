//! The one error type of the API and its mapping to HTTP responses.
//!
//! Every failure a handler can meet ends up here, and every response body has the
//! RealWorld shape `{"errors": {"<field>": ["<message>", ...]}}`. Internal errors are
//! logged once, with their cause, and answered with a generic message.

use std::collections::BTreeMap;

use axum::{
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde::Serialize;

use crate::{
    auth::TokenProblem,
    db::{self, Resource, Unique},
    extract::Json,
};

/// Field-level validation failures: field name to messages, in a stable order.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct ValidationErrors(BTreeMap<String, Vec<String>>);

impl ValidationErrors {
    pub fn new() -> Self {
        Self::default()
    }

    /// One failure on one field.
    pub fn single(field: &str, message: impl Into<String>) -> Self {
        let mut errors = Self::new();
        errors.add(field, message);
        errors
    }

    pub fn add(&mut self, field: &str, message: impl Into<String>) {
        self.0.entry(field.to_owned()).or_default().push(message.into());
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Records the error of a parse, if any, and hands back the parsed value.
    pub fn check<T>(&mut self, field: &str, result: Result<T, String>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(message) => {
                self.add(field, message);
                None
            }
        }
    }

    /// `Ok(())` when nothing was recorded, the 422 error otherwise.
    pub fn into_result(self) -> Result<(), Error> {
        if self.is_empty() { Ok(()) } else { Err(Error::Validation(self)) }
    }
}

/// Everything that can go wrong while answering a request.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// 401: a required token is missing, or the one presented was refused.
    #[error("authentication required: the token {}", .0.message())]
    Unauthorized(TokenProblem),
    /// 401 on login: one answer for an unknown email and a wrong password.
    #[error("invalid credentials")]
    InvalidCredentials,
    /// 403: the caller is authenticated but does not own the named kind of
    /// resource ("article", "comment").
    #[error("{0} forbidden")]
    Forbidden(&'static str),
    /// 404 for the named kind of resource ("article", "profile", "comment").
    #[error("{0} not found")]
    NotFound(&'static str),
    /// 422 with field-level messages.
    #[error("validation failed")]
    Validation(ValidationErrors),
    /// 409: the value of a unique field is taken (`{"username": ["has already been taken"]}`).
    #[error("conflict")]
    Conflict(ValidationErrors),
    /// A client error detected outside validation (bad JSON, wrong media type, ...).
    #[error("{message}")]
    Request { status: StatusCode, message: String },
    /// A client error about one named part of the request, with its own status
    /// (OpenID Connect sign-in: `{"state": [...]}`, `{"id_token": [...]}`, ...).
    #[error("{field}: {message}")]
    Refused { status: StatusCode, field: &'static str, message: String },
    /// 429: a rate limit's budget is spent (`edge::rate_limit`); `Retry-After`
    /// says when the next request will be accepted.
    #[error("too many requests")]
    TooManyRequests { retry_after_secs: u64 },
    /// 503: no database connection could be had in time, as every one is busy
    /// (or the database does not answer); a retry may succeed.
    #[error("no database connection in time")]
    Unavailable,
    /// 503 with `Retry-After`: more work waits than the server takes on (the
    /// password hashes' queue is full); shed at once rather than queued.
    #[error("overloaded; shed")]
    Overloaded,
    /// 503: the database cannot be reached, or the connection to it was lost
    /// (it stopped, restarted or crashed); a retry later may succeed.
    #[error("the database is unavailable")]
    DatabaseDown(sqlx::Error),
    /// 503: the request took longer than `REQUEST_TIMEOUT_SECONDS` and was
    /// abandoned. Not 408, which says the client was too slow to send its
    /// request and invites it to send it again (RFC 9110, 15.5.9): a write that
    /// timed out may have committed, and an automatic resend would repeat it.
    #[error("request took longer than the time limit")]
    TimedOut,
    /// A database failure that is not the client's fault.
    #[error("database error")]
    Database(sqlx::Error),
    /// Anything else that is not the client's fault.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
    /// 401 on refresh: the refresh token is unknown, expired, retired or of an
    /// ended session (`{"refresh_token": ["is invalid"]}`).
    #[error("invalid refresh token")]
    RefreshTokenInvalid,
    /// 403: a cookie-borne request from an origin not allowed to use the cookie
    /// (`{"origin": ["is not allowed"]}`, docs/auth.md "CSRF").
    #[error("origin not allowed")]
    OriginRefused,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Unauthorized(_) | Self::InvalidCredentials => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::Request { status, .. } | Self::Refused { status, .. } => *status,
            Self::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable | Self::TimedOut | Self::Overloaded | Self::DatabaseDown(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::Database(_) | Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::RefreshTokenInvalid => StatusCode::UNAUTHORIZED,
            Self::OriginRefused => StatusCode::FORBIDDEN,
        }
    }

    /// A client error with a message under the `body` key.
    pub fn request(status: StatusCode, message: impl Into<String>) -> Self {
        Self::Request { status, message: message.into() }
    }

    fn body(&self) -> ValidationErrors {
        match self {
            Self::Unauthorized(problem) => ValidationErrors::single("token", problem.message()),
            Self::InvalidCredentials => ValidationErrors::single("credentials", "invalid"),
            Self::Forbidden(what) => ValidationErrors::single(what, "forbidden"),
            Self::NotFound(what) => ValidationErrors::single(what, "not found"),
            Self::Validation(errors) | Self::Conflict(errors) => errors.clone(),
            Self::Request { message, .. } => ValidationErrors::single("body", message.clone()),
            Self::Refused { field, message, .. } => ValidationErrors::single(field, message.clone()),
            Self::TooManyRequests { retry_after_secs } => ValidationErrors::single(
                "rate_limit",
                format!("too many requests, please try again in {retry_after_secs} s"),
            ),
            Self::Unavailable | Self::Overloaded => ValidationErrors::single("server", "busy, please try again later"),
            Self::DatabaseDown(_) => ValidationErrors::single("server", "database unavailable, please try again later"),
            Self::TimedOut => ValidationErrors::single("server", "took too long, please try again later"),
            Self::Database(_) | Self::Internal(_) => {
                ValidationErrors::single("server", "internal error, please try again later")
            }
            Self::RefreshTokenInvalid => ValidationErrors::single("refresh_token", "is invalid"),
            Self::OriginRefused => ValidationErrors::single("origin", "is not allowed"),
        }
    }
}

/// A request that did not parse into domain values: 422.
impl From<ValidationErrors> for Error {
    fn from(errors: ValidationErrors) -> Self {
        Self::Validation(errors)
    }
}

/// A database failure is never the client's fault: a pool that lent no
/// connection in time, a statement cancelled for running too long, or a
/// database that cannot be reached ([`db::is_unavailable`]) is a 503 to retry;
/// anything else a 500. What the client can cause comes typed, as a
/// [`db::Error`].
impl From<sqlx::Error> for Error {
    fn from(err: sqlx::Error) -> Self {
        match &err {
            sqlx::Error::PoolTimedOut => Self::Unavailable,
            // Cancelled: it ran past `statement_timeout`, the request's time limit
            // (see `db::open`), or an operator cancelled it.
            sqlx::Error::Database(db) if db.code().as_deref() == Some("57014") => Self::TimedOut,
            _ if db::is_unavailable(&err) => Self::DatabaseDown(err),
            _ => Self::Database(err),
        }
    }
}

impl From<crate::auth::password::HashError> for Error {
    fn from(err: crate::auth::password::HashError) -> Self {
        match err {
            crate::auth::password::HashError::Shed => Self::Overloaded,
            crate::auth::password::HashError::Failed(err) => Self::Internal(err),
        }
    }
}

impl From<db::Error> for Error {
    fn from(err: db::Error) -> Self {
        let conflict = |field: &str, message: &str| Self::Conflict(ValidationErrors::single(field, message));
        match err {
            db::Error::Taken(Unique::Username) => conflict("username", "has already been taken"),
            db::Error::Taken(Unique::Email) => conflict("email", "has already been taken"),
            db::Error::Taken(Unique::Slug) => {
                conflict("title", "an article with the same slug was saved at the same time; please retry")
            }
            db::Error::CallerGone => Self::Unauthorized(TokenProblem::Revoked),
            db::Error::Gone(Resource::Article) => Self::NotFound("article"),
            db::Error::Gone(Resource::Profile) => Self::NotFound("profile"),
            db::Error::SelfFollow => {
                Self::Validation(ValidationErrors::single("username", "you cannot follow yourself"))
            }
            db::Error::NulInText => Self::request(StatusCode::BAD_REQUEST, "text may not contain NUL characters"),
            db::Error::Sql(err) => err.into(),
        }
    }
}

/// The body of every error response.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(example = json!({"errors": {"email": ["has already been taken"]}}))]
pub struct ErrorBody {
    /// Messages by field (or by `body`, `token`, `credentials`, `article`, ... for errors
    /// that are not about one field).
    #[schema(value_type = std::collections::HashMap<String, Vec<String>>)]
    errors: ValidationErrors,
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = self.status();
        match &self {
            Self::Database(err) => tracing::error!(error = ?err, "database error"),
            Self::Internal(err) => tracing::error!(error = ?err, "internal error"),
            Self::Unavailable => tracing::warn!("no database connection in time"),
            Self::DatabaseDown(err) => tracing::warn!(error = %err, "database unavailable"),
            Self::TimedOut => tracing::warn!("request took longer than the time limit"),
            _ => {}
        }
        let mut response = (status, Json(ErrorBody { errors: self.body() })).into_response();
        if matches!(self, Self::Overloaded) {
            // The queue it met drains in about a second (see `auth::password`).
            response.headers_mut().insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from_static("1"));
        }
        let challenge = match self {
            Self::Unauthorized(problem) => Some(problem.challenge()),
            // Wrong credentials are not a token problem, but the status still
            // requires a challenge (RFC 9110, 15.5.2).
            Self::InvalidCredentials => Some(TokenProblem::Missing.challenge()),
            _ => None,
        };
        if let Self::TooManyRequests { retry_after_secs } = self {
            response.headers_mut().insert(axum::http::header::RETRY_AFTER, retry_after_secs.into());
        }
        if let Some(challenge) = challenge {
            response.headers_mut().insert(axum::http::header::WWW_AUTHENTICATE, challenge);
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_errors_group_messages_by_field() {
        let mut errors = ValidationErrors::new();
        errors.add("email", "can't be blank");
        errors.add("email", "is invalid");
        errors.add("username", "is too long");
        let json = serde_json::to_value(&errors).expect("serialises");
        assert_eq!(json, serde_json::json!({"email": ["can't be blank", "is invalid"], "username": ["is too long"]}));
    }

    #[test]
    fn a_pool_that_lends_no_connection_in_time_is_a_503_to_retry() {
        let err = Error::from(sqlx::Error::PoolTimedOut);
        assert_eq!(err.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body = serde_json::to_value(err.body()).expect("serialises");
        assert_eq!(body, serde_json::json!({"server": ["busy, please try again later"]}));
    }

    #[test]
    fn a_database_that_went_away_is_a_503_to_retry_never_a_500() {
        let refused = sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        let reset = sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::UnexpectedEof));
        for err in [refused, reset, sqlx::Error::PoolClosed] {
            let err = Error::from(err);
            assert_eq!(err.status(), StatusCode::SERVICE_UNAVAILABLE, "{err:?}");
            let body = serde_json::to_value(err.body()).expect("serialises");
            assert_eq!(body, serde_json::json!({"server": ["database unavailable, please try again later"]}));
        }
        let lost = Error::from(db::Error::Sql(sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::BrokenPipe))));
        assert_eq!(lost.status(), StatusCode::SERVICE_UNAVAILABLE);
    }

    #[test]
    fn internal_errors_do_not_leak_their_cause() {
        let err = Error::Internal(anyhow::anyhow!("secret connection string"));
        assert_eq!(err.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_string(&err.body()).expect("serialises");
        assert!(!body.contains("secret"));
    }
}
