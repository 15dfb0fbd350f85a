//! OpenID Connect sign-in over HTTP: `start` sends the browser to the provider,
//! `callback` takes it back and hands the frontend a one-time code, `exchange`
//! turns the code into the usual user object with a token. The decisions are in
//! docs/auth.md; the protocol in `auth::oidc`.

use axum::{
    extract::{RawQuery, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Deserialize;
use utoipa::ToSchema;

use crate::{
    app::AppState,
    auth::{
        oidc::{self, IdTokenClaims, IdTokenError, Provider, ProviderError},
        session::{self, ClientInfo, Delivery},
    },
    db,
    domain::{Email, Username},
    error::{Error, Result},
    extract::{Json, Path},
};

const TAG: &str = "OpenID Connect sign-in";

/// A client error of the sign-in, under `field`.
fn refused(status: StatusCode, field: &'static str, message: impl Into<String>) -> Error {
    Error::Refused { status, field, message: message.into() }
}

fn unknown_provider() -> Error {
    Error::NotFound("provider")
}

impl From<ProviderError> for Error {
    fn from(err: ProviderError) -> Self {
        match err {
            ProviderError::Unusable(detail) => {
                tracing::warn!(%detail, "the OpenID provider failed");
                refused(StatusCode::BAD_GATEWAY, "provider", "did not answer as expected; try again later")
            }
            ProviderError::CodeRefused(detail) => {
                tracing::warn!(%detail, "the OpenID provider refused the code");
                refused(
                    StatusCode::BAD_REQUEST,
                    "code",
                    "was refused by the provider (invalid, expired or already used)",
                )
            }
        }
    }
}

impl From<IdTokenError> for Error {
    fn from(err: IdTokenError) -> Self {
        match err {
            IdTokenError::Provider(err) => err.into(),
            IdTokenError::Invalid(reason) => {
                // A forged or replayed token, or a misconfigured provider: a security event.
                tracing::warn!(reason, security_event = "oidc_id_token_refused", "ID token refused");
                refused(StatusCode::BAD_REQUEST, "id_token", reason)
            }
        }
    }
}

/// Start a sign-in with a provider: redirects the browser to its authorization
/// endpoint and sets the cookie that binds the sign-in to this browser.
#[utoipa::path(get, path = "/auth/oidc/{provider}/start", tag = TAG, operation_id = "OidcStart",
    params(("provider" = String, Path, description = "The provider's name: `<NAME>` of `OIDC_<NAME>_ISSUER`, in lower case")),
    responses(
        (status = 303, description = "To the provider's authorization endpoint (`response_type=code`, `scope=openid email profile`, `state`, `nonce`, `code_challenge` with `code_challenge_method=S256`)",
            headers(
                ("Location" = String, description = "The provider's authorization URL"),
                ("Set-Cookie" = String, description = "`__Host-conduit-oidc=<random>; HttpOnly; Secure; SameSite=Lax; Path=/; Max-Age=600`: binds the sign-in to this browser"),
            )),
        (status = 404, response = crate::openapi::NotFound),
        (status = 502, description = "The provider's discovery document could not be had", body = crate::error::ErrorBody),
    ))]
#[tracing::instrument(skip_all, fields(provider = %name))]
pub async fn start(State(state): State<AppState>, Path(name): Path<String>) -> Result<Response> {
    let provider = state.oidc.provider(&name).ok_or_else(unknown_provider)?;
    let metadata = provider.metadata().await?;
    let (login_state, nonce, verifier, binding) =
        (oidc::random_token()?, oidc::random_token()?, oidc::random_token()?, oidc::random_token()?);
    db::identities::start_login(
        &state.writes,
        &oidc::hash(&login_state),
        &oidc::hash(&binding),
        &provider.config.name,
        &nonce,
        &verifier,
        oidc::LOGIN_TTL,
    )
    .await?;
    let mut url = url::Url::parse(&metadata.authorization_endpoint)
        .map_err(|err| ProviderError::Unusable(format!("authorization_endpoint: {err}")))?;
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", &provider.config.client_id)
        .append_pair("redirect_uri", &provider.config.redirect_url)
        .append_pair("scope", "openid email profile")
        .append_pair("state", &login_state)
        .append_pair("nonce", &nonce)
        .append_pair("code_challenge", &oidc::pkce_challenge(&verifier))
        .append_pair("code_challenge_method", "S256");
    let cookie = format!(
        "{}={binding}; HttpOnly; Secure; SameSite=Lax; Path=/; Max-Age={}",
        oidc::BINDING_COOKIE,
        oidc::LOGIN_TTL.as_secs()
    );
    Ok(redirect(url.as_str(), &cookie))
}

/// A 303 to `location` that sets `cookie` and is never cached.
fn redirect(location: &str, cookie: &str) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    let headers = response.headers_mut();
    for (name, value) in
        [(header::LOCATION, location), (header::SET_COOKIE, cookie), (header::CACHE_CONTROL, "no-store")]
    {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(name, value);
        }
    }
    response
}

/// The parameters the provider sends back (RFC 6749, sections 4.1.2 and 4.1.2.1).
#[derive(Debug, Default)]
struct CallbackParams {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    /// The issuer of the answer (RFC 9207), sent by providers that defend
    /// against mix-up attacks: when present, it must be this provider's.
    iss: Option<String>,
}

impl CallbackParams {
    fn parse(query: Option<&str>) -> Self {
        let mut params = Self::default();
        for (key, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
            let slot = match &*key {
                "code" => &mut params.code,
                "state" => &mut params.state,
                "error" => &mut params.error,
                "iss" => &mut params.iss,
                _ => continue,
            };
            slot.get_or_insert_with(|| value.into_owned());
        }
        params
    }
}

/// The binding cookie's value, if the browser sent it.
fn binding_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == oidc::BINDING_COOKIE)
        .map(|(_, value)| value.to_owned())
}

/// The provider's redirect back: checks `state` against this browser's cookie
/// (once), exchanges the code with the PKCE verifier, validates the ID token,
/// finds, links or creates the account, and sends the browser to the frontend
/// with a one-time code. Failures are answered here, in the API's error format.
#[utoipa::path(get, path = "/auth/oidc/{provider}/callback", tag = TAG, operation_id = "OidcCallback",
    params(
        ("provider" = String, Path, description = "The provider's name"),
        ("code" = Option<String>, Query, description = "The authorization code"),
        ("state" = Option<String>, Query, description = "The `state` sent by `start`"),
        ("error" = Option<String>, Query, description = "The provider's error code, when the sign-in failed there"),
        ("__Host-conduit-oidc" = Option<String>, Cookie, description = "The binding cookie set by `start`"),
    ),
    responses(
        (status = 303, description = "To `OIDC_FRONTEND_URL` with the one-time code in the fragment (`#code=...`, or `?code=...` appended to a fragment route), valid 60 s; clears the binding cookie",
            headers(
                ("Location" = String, description = "The frontend URL with the one-time code"),
                ("Set-Cookie" = String, description = "`__Host-conduit-oidc=; ...; Max-Age=0`: the binding cookie, cleared"),
            )),
        (status = 400, description = "`state` missing, unknown, expired, used, or started in another browser; the provider's error; the code or the ID token refused", body = crate::error::ErrorBody),
        (status = 404, response = crate::openapi::NotFound),
        (status = 409, description = "The provider's email is an existing account's, and the provider does not say it is verified: sign in with the password to link", body = crate::error::ErrorBody),
        (status = 422, description = "The provider shared no usable email address", body = crate::error::ErrorBody),
        (status = 502, description = "The provider failed", body = crate::error::ErrorBody),
    ))]
#[tracing::instrument(skip_all, fields(provider = %name))]
pub async fn callback(
    State(state): State<AppState>,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response> {
    let provider = state.oidc.provider(&name).ok_or_else(unknown_provider)?;
    let params = CallbackParams::parse(query.as_deref());
    let bad_state = || {
        refused(
            StatusCode::BAD_REQUEST,
            "state",
            "is unknown, expired, already used, or was started in another browser",
        )
    };
    let login_state = params.state.ok_or_else(|| refused(StatusCode::BAD_REQUEST, "state", "is missing"))?;
    let binding = binding_cookie(&headers).ok_or_else(bad_state)?;
    let (state_hash, binding_hash) = (oidc::hash(&login_state), oidc::hash(&binding));
    if let Some(error) = params.error {
        db::identities::drop_login(&state.writes, &state_hash, &binding_hash).await?;
        let error: String =
            error.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '_').take(64).collect::<String>();
        return Err(refused(StatusCode::BAD_REQUEST, "provider", format!("refused the sign-in: {error}")));
    }
    if params.iss.as_ref().is_some_and(|iss| *iss != provider.config.issuer) {
        return Err(refused(StatusCode::BAD_REQUEST, "iss", "is not this provider's issuer (RFC 9207)"));
    }
    let login = db::identities::take_login(&state.writes, &state_hash, &binding_hash, &provider.config.name)
        .await?
        .ok_or_else(bad_state)?;
    let code = params.code.ok_or_else(|| refused(StatusCode::BAD_REQUEST, "code", "is missing"))?;
    let id_token = provider.exchange_code(&code, &login.pkce_verifier).await?;
    let claims = oidc::id_token::validate(provider, &id_token, &login.nonce).await?;

    let handoff = oidc::random_token()?;
    let mut tx = state.writes.begin().await?;
    let user_id = find_or_create_account(&mut tx, provider, &claims).await?;
    db::identities::create_handoff(&mut *tx, &oidc::hash(&handoff), user_id, &provider.config.name, oidc::HANDOFF_TTL)
        .await?;
    tx.commit().await?;
    tracing::info!(user_id, "signed in with OpenID Connect");
    let clear = format!("{}=; HttpOnly; Secure; SameSite=Lax; Path=/; Max-Age=0", oidc::BINDING_COOKIE);
    Ok(redirect(&state.oidc.frontend_redirect(&handoff), &clear))
}

/// The account of the provider identity: the linked one; else the password
/// account with the same email when the provider says it verified the email
/// (linked now); else a new account. An existing account's email that the
/// provider does not vouch for is refused: that would hand the account to
/// whoever typed its email at the provider.
async fn find_or_create_account(
    conn: &mut sqlx::PgConnection,
    provider: &Provider,
    claims: &IdTokenClaims,
) -> Result<i64> {
    let issuer = provider.config.issuer.as_str();
    if let Some(user_id) = db::identities::find_identity(&mut *conn, issuer, &claims.subject).await? {
        return Ok(user_id);
    }
    let email = claims.email.as_deref().and_then(|email| Email::parse(email).ok()).ok_or_else(|| {
        refused(
            StatusCode::UNPROCESSABLE_ENTITY,
            "email",
            "is required: the provider shared no usable email address (scope `email`)",
        )
    })?;
    if let Some(user_id) = db::identities::account_by_email(&mut *conn, email.as_str()).await? {
        if !claims.email_verified {
            tracing::warn!(
                user_id,
                security_event = "oidc_unverified_email_match",
                "an unverified provider email matches an account"
            );
            return Err(refused(
                StatusCode::CONFLICT,
                "email",
                "is already registered; sign in with your password to link this provider",
            ));
        }
        tracing::info!(user_id, "linking a provider identity to the account of its verified email");
        return Ok(db::identities::link(&mut *conn, issuer, &claims.subject, user_id, email.as_str()).await?);
    }
    let password_hash = oidc::unusable_password_hash()?;
    let base = username_base(claims);
    for attempt in 0..20u32 {
        let username = username_candidate(&base, attempt)?;
        if let Some(row) = db::identities::create_user(&mut *conn, &username, email.as_str(), &password_hash).await? {
            return Ok(db::identities::link(&mut *conn, issuer, &claims.subject, row.id, email.as_str()).await?);
        }
        // Taken: the username (try the next one), or the email by a registration
        // that committed meanwhile.
        if db::identities::account_by_email(&mut *conn, email.as_str()).await?.is_some() {
            return Err(db::Error::Taken(db::Unique::Email).into());
        }
    }
    Err(refused(StatusCode::CONFLICT, "username", "no free username could be derived; please try again"))
}

/// The longest derived name, leaving room for a numeric suffix.
const BASE_MAX_CHARS: usize = Username::MAX_CHARS - 7;

/// A username from the claims: `preferred_username`, else `name`, else the
/// email's local part, with spaces as `_` and every character the username
/// rules refuse dropped; `user` if nothing is left.
fn username_base(claims: &IdTokenClaims) -> String {
    let local_part = claims.email.as_deref().and_then(|email| email.split('@').next());
    [claims.preferred_username.as_deref(), claims.name.as_deref(), local_part]
        .into_iter()
        .flatten()
        .map(|candidate| {
            candidate
                .trim()
                .chars()
                .filter_map(|c| match c {
                    c if c.is_alphanumeric() || matches!(c, '_' | '-' | '.') => Some(c),
                    c if c.is_whitespace() => Some('_'),
                    _ => None,
                })
                .take(BASE_MAX_CHARS)
                .collect::<String>()
        })
        .find(|name| Username::parse(name).is_ok())
        .unwrap_or_else(|| "user".to_owned())
}

/// The `attempt`-th username to try: the base, then `base2` ... `base10`, then
/// the base with a random number.
fn username_candidate(base: &str, attempt: u32) -> Result<String> {
    let name = match attempt {
        0 => base.to_owned(),
        1..=9 => format!("{base}{}", attempt + 1),
        _ => {
            let random = getrandom::u32().map_err(|err| anyhow::anyhow!("random: {err}"))?;
            format!("{base}{}", 11 + random % 999_989)
        }
    };
    Ok(Username::parse(&name).map_err(|err| anyhow::anyhow!("derived username {name:?}: {err}"))?.as_str().to_owned())
}

/// The one-time code of a finished sign-in.
#[derive(Debug, Deserialize, ToSchema)]
pub struct Handoff {
    /// The `code` the callback put in the frontend URL.
    #[schema(min_length = 1, max_length = 256)]
    code: String,
}

/// `{"handoff": {"code": "..."}}`: wrapped, as every request body of the API.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ExchangeRequest {
    handoff: Handoff,
}

/// Exchange the one-time code of a finished sign-in for the user, with a token,
/// as login answers. The code works once, within 60 s.
#[utoipa::path(post, path = "/auth/oidc/exchange", tag = TAG, operation_id = "OidcExchange",
    request_body = ExchangeRequest,
    params(("X-Refresh-Token-Delivery" = Option<String>, Header, description = "`body` to receive the refresh token in `user.refreshToken` instead of the `__Host-conduit-refresh` cookie")),
    responses(
        (status = 200, description = "The user, with a new token; a session is opened", body = crate::routes::users::UserResponse,
            headers(("Set-Cookie" = String, description = "`__Host-conduit-refresh=<refresh token>; HttpOnly; Secure; SameSite=Strict; Path=/; Max-Age=<idle lifetime>`, unless the refresh token was asked for in the body"))),
        (status = 400, description = "The code is unknown, expired or already used", body = crate::error::ErrorBody),
        (status = 413, response = crate::openapi::PayloadTooLarge),
        (status = 415, response = crate::openapi::UnsupportedMediaType),
        (status = 422, response = crate::openapi::ValidationFailed),
    ))]
#[tracing::instrument(skip_all)]
pub async fn exchange(
    State(state): State<AppState>,
    client: ClientInfo,
    delivery: Delivery,
    Json(ExchangeRequest { handoff: Handoff { code } }): Json<ExchangeRequest>,
) -> Result<Response> {
    let gone = || refused(StatusCode::BAD_REQUEST, "code", "is invalid, expired or already used");
    // A code PostgreSQL could not store matches nothing; hashing makes any text safe.
    let mut tx = state.writes.begin().await?;
    let (row, provider) = db::identities::take_handoff(&mut *tx, &oidc::hash(&code)).await?.ok_or_else(gone)?;
    let method = format!("oidc:{provider}");
    let issued = session::open(&mut tx, &state.jwt, row.id, &method, &client).await?;
    tx.commit().await?;
    tracing::info!(user_id = row.id, session = %issued.session_id, %method, "signed in");
    Ok(super::users::signed_in(row, &issued, delivery, StatusCode::OK))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(preferred: Option<&str>, name: Option<&str>, email: Option<&str>) -> IdTokenClaims {
        IdTokenClaims {
            subject: "s".to_owned(),
            email: email.map(str::to_owned),
            email_verified: false,
            preferred_username: preferred.map(str::to_owned),
            name: name.map(str::to_owned),
        }
    }

    #[test]
    fn usernames_come_from_the_claims_in_order_and_follow_the_username_rules() {
        assert_eq!(username_base(&claims(Some("alice"), Some("Alice A"), Some("a@x.io"))), "alice");
        assert_eq!(username_base(&claims(None, Some("Zoë  Smith!"), Some("z@x.io"))), "Zoë__Smith");
        assert_eq!(username_base(&claims(Some("!!!"), None, Some("bob.b@x.io"))), "bob.b");
        assert_eq!(username_base(&claims(Some("---"), Some("@@"), None)), "user");
        let long = "x".repeat(100);
        let base = username_base(&claims(Some(&long), None, None));
        for attempt in [0, 1, 9, 10, 19] {
            let name = username_candidate(&base, attempt).expect("valid");
            assert!(Username::parse(&name).is_ok(), "{name}");
        }
        assert_eq!(username_candidate("alice", 1).expect("valid"), "alice2");
    }

    #[test]
    fn the_callbacks_parameters_are_read_once_each() {
        let params = CallbackParams::parse(Some("code=a%2Bb&state=s&state=t&other=1"));
        assert_eq!(params.code.as_deref(), Some("a+b"));
        assert_eq!(params.state.as_deref(), Some("s"));
        assert!(params.error.is_none());
    }
}
