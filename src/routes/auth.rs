//! `/api/auth/*` and `/api/user/sessions`: refreshing, ending and listing
//! sessions (docs/auth.md).

use axum::{
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse as _, Response},
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{
    app::AppState,
    auth::session::{self, ClientInfo, Delivery, Refreshed},
    db,
    error::{Error, Result, ValidationErrors},
    extract::{AuthUser, Json, Path},
    openapi::{BadRequest, NotFound, OriginRefused, RefreshRefused, Unauthorized, UnsupportedMediaType},
    routes::users::{UserResponse, signed_in},
};

/// A refresh token in the body, for clients that got it there; browsers send
/// the cookie and no body.
#[derive(Debug, Deserialize, ToSchema)]
pub struct RefreshRequest {
    #[serde(rename = "refreshToken")]
    #[schema(required = false)]
    refresh_token: Option<String>,
}

/// Exchange a refresh token for a new access token and a new refresh token.
///
/// The token comes from the `__Host-conduit-refresh` cookie, or from the body
/// (`{"refreshToken": "..."}`), and the new one goes back the same way. The
/// old one is retired; presenting it again revokes the whole session. A
/// request carrying the cookie must come from an allowed `Origin`.
#[utoipa::path(post, path = "/auth/refresh", tag = "User and Authentication", operation_id = "RefreshSession",
    request_body(content = Option<RefreshRequest>, description = "Only for a refresh token received in a body"),
    security((), ("RefreshCookie" = [])),
    responses(
        (status = 200, description = "The user, with a new access token and a new refresh token", body = UserResponse,
            headers(("Set-Cookie" = String, description = "`__Host-conduit-refresh=<refresh token>; HttpOnly; Secure; SameSite=Strict; Path=/; Max-Age=<idle lifetime>`, unless the refresh token was asked for in the body"))),
        (status = 400, response = BadRequest),
        (status = 401, response = RefreshRefused),
        (status = 403, response = OriginRefused),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, response = crate::openapi::ValidationFailed),
    ))]
#[tracing::instrument(skip_all)]
pub async fn refresh(
    State(state): State<AppState>,
    client: ClientInfo,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response> {
    let (token, delivery) = match body_token(&headers, &body)? {
        Some(token) => (token, Delivery::Body),
        None => {
            let token = session::cookie_token(&headers).ok_or(Error::RefreshTokenInvalid)?;
            // Cross-site request forgery: SameSite=Strict, and the origin checked.
            if !session::origin_allowed(&headers, &state.session_policy.origins) {
                return Err(Error::OriginRefused);
            }
            (token.to_owned(), Delivery::Cookie)
        }
    };
    let mut conn = state.writes.acquire().await?;
    match session::refresh(&mut conn, &state.jwt, &token).await? {
        Refreshed::Rotated(issued) => {
            // The account can be deleted meanwhile: its sessions go with it.
            let row = db::users::find_by_id(&mut *conn, issued.user_id).await?.ok_or(Error::RefreshTokenInvalid)?;
            Ok(signed_in(row, &issued, delivery, StatusCode::OK))
        }
        Refreshed::Reused { session_id, user_id } => {
            state.revocations.revoke_session(session_id);
            tracing::warn!(
                target: "security",
                event = "refresh_token_reused",
                session = %session_id,
                user_id,
                client_address = client.address.map(tracing::field::display),
                "a retired refresh token was presented again: the session is revoked"
            );
            Err(Error::RefreshTokenInvalid)
        }
        Refreshed::Invalid => Err(Error::RefreshTokenInvalid),
    }
}

/// The refresh token of the body, `None` when the body is empty or has none.
fn body_token(headers: &HeaderMap, body: &[u8]) -> Result<Option<String>> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let json = headers.get(header::CONTENT_TYPE).and_then(|value| value.to_str().ok()).is_some_and(|value| {
        value.split(';').next().is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"))
    });
    if !json {
        return Err(Error::request(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "expected a request with `Content-Type: application/json`",
        ));
    }
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|err| Error::request(StatusCode::BAD_REQUEST, format!("the body is not valid JSON: {err}")))?;
    let request: RefreshRequest = serde_json::from_value(value)
        .map_err(|err| Error::Validation(ValidationErrors::single("refreshToken", err.to_string())))?;
    Ok(request.refresh_token.filter(|token| !token.is_empty()))
}

/// End this session: its tokens are refused from now on, on every server.
/// Also removes the refresh cookie.
#[utoipa::path(post, path = "/auth/logout", tag = "User and Authentication", operation_id = "Logout",
    security(("Token" = []), ("Bearer" = [])),
    responses(
        (status = 204, description = "Signed out", headers(("Set-Cookie" = String, description = "The refresh cookie, emptied (`Max-Age=0`)"))),
        (status = 401, response = Unauthorized),
    ))]
#[tracing::instrument(skip_all, fields(user_id = user.id))]
pub async fn logout(State(state): State<AppState>, user: AuthUser) -> Result<Response> {
    db::sessions::revoke(&state.writes, user.id, user.session).await?;
    state.revocations.revoke_session(user.session);
    Ok(signed_out())
}

/// End every session of the user, this one included.
#[utoipa::path(post, path = "/auth/logout-all", tag = "User and Authentication", operation_id = "LogoutEverywhere",
    security(("Token" = []), ("Bearer" = [])),
    responses(
        (status = 204, description = "Signed out everywhere", headers(("Set-Cookie" = String, description = "The refresh cookie, emptied (`Max-Age=0`)"))),
        (status = 401, response = Unauthorized),
    ))]
#[tracing::instrument(skip_all, fields(user_id = user.id))]
pub async fn logout_all(State(state): State<AppState>, user: AuthUser) -> Result<Response> {
    let revoked = db::sessions::revoke_all(&state.writes, user.id, None).await?;
    for id in revoked {
        state.revocations.revoke_session(id);
    }
    Ok(signed_out())
}

fn signed_out() -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    response.headers_mut().insert(header::SET_COOKIE, session::clear_cookie());
    response
}

/// One of the user's live sessions.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Session {
    #[schema(format = "uuid")]
    id: String,
    #[serde(serialize_with = "super::timestamp")]
    #[schema(value_type = String, format = DateTime)]
    created_at: DateTime<Utc>,
    /// The last time the session was given tokens (signing in or refreshing),
    /// not the last request.
    #[serde(serialize_with = "super::timestamp")]
    #[schema(value_type = String, format = DateTime)]
    last_used_at: DateTime<Utc>,
    /// The `User-Agent` of the sign-in (at most 256 characters; `""` without one).
    user_agent: String,
    /// The client's address at sign-in, `null` when unknown.
    #[schema(required = true)]
    client_address: Option<String>,
    /// How it was opened: `register`, `password` or `oidc:<provider>`.
    method: String,
    /// Whether the request's token belongs to it.
    current: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SessionsResponse {
    sessions: Vec<Session>,
}

/// The user's live sessions, newest first, the current one marked.
#[utoipa::path(get, path = "/user/sessions", tag = "User and Authentication", operation_id = "ListSessions",
    security(("Token" = []), ("Bearer" = [])),
    responses(
        (status = 200, description = "The live sessions", body = SessionsResponse),
        (status = 401, response = Unauthorized),
    ))]
#[tracing::instrument(skip_all, fields(user_id = user.id))]
pub async fn sessions(State(state): State<AppState>, user: AuthUser) -> Result<Json<SessionsResponse>> {
    let rows = state.reads.run_for(Some(user.id), async |conn| db::sessions::list(conn, user.id).await).await?;
    let sessions = rows
        .into_iter()
        .map(|row| Session {
            current: row.id == user.session,
            id: row.id.hyphenated().to_string(),
            created_at: row.created_at,
            last_used_at: row.last_used_at,
            user_agent: row.user_agent,
            client_address: row.client_addr,
            method: row.method,
        })
        .collect();
    Ok(Json(SessionsResponse { sessions }))
}

/// End one of the user's own sessions (another user's is not found).
#[utoipa::path(delete, path = "/user/sessions/{id}", tag = "User and Authentication", operation_id = "RevokeSession",
    params(("id" = String, Path, description = "Id of the session")),
    security(("Token" = []), ("Bearer" = [])),
    responses(
        (status = 204, description = "Revoked"),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
    ))]
#[tracing::instrument(skip_all, fields(user_id = user.id))]
pub async fn revoke_session(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    // An id that is no UUID names no session.
    let id = uuid::Uuid::try_parse(&id).map_err(|_| Error::NotFound("session"))?;
    if !db::sessions::revoke(&state.writes, user.id, id).await? {
        return Err(Error::NotFound("session"));
    }
    state.revocations.revoke_session(id);
    Ok(StatusCode::NO_CONTENT)
}
