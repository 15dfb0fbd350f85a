//! Sessions: what register, login and OIDC sign-in open, what every access token
//! names (`sid`), and what a refresh token keeps alive (docs/auth.md).
//!
//! A session lives at most `SESSION_MAX_AGE_SECONDS` from its opening. Each
//! refresh token is 256 random bits, sent once and stored only as its SHA-256;
//! it dies after `REFRESH_TOKEN_TTL_SECONDS` unused, and is retired by its one
//! exchange (`POST /api/auth/refresh`) for a new access token and a new refresh
//! token. Presenting a retired one again means two parties hold it: the session
//! is revoked (RFC 9700, section 4.14.2).
//!
//! The refresh token travels in a `__Host-` cookie by default, or in the body
//! when the client asks for it (`X-Refresh-Token-Delivery: body`).

use std::{net::IpAddr, time::Duration};

use axum::{
    extract::{ConnectInfo, FromRequestParts},
    http::{HeaderMap, HeaderName, HeaderValue, header, request::Parts},
};
use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret as _, SecretString};
use sqlx::PgConnection;
use uuid::Uuid;

use super::JwtKeys;
use crate::{config::CorsOrigins, db, edge::client_ip::TrustedProxies, error::Error};

/// The refresh cookie's name: `__Host-` makes browsers insist on `Secure`,
/// `Path=/` and no `Domain`, so no sibling subdomain can set or shadow it.
pub const REFRESH_COOKIE: &str = "__Host-conduit-refresh";

/// The request header by which a client asks for the refresh token in the body.
pub const DELIVERY_HEADER: HeaderName = HeaderName::from_static("x-refresh-token-delivery");

/// The longest `User-Agent` kept with a session, in characters.
pub const MAX_USER_AGENT_CHARS: usize = 256;

/// How long sessions and refresh tokens live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionLifetimes {
    /// A refresh token unused this long is dead (`REFRESH_TOKEN_TTL_SECONDS`);
    /// each refresh starts the wait anew.
    pub refresh_idle: Duration,
    /// A session ends this long after it was opened, refreshed or not
    /// (`SESSION_MAX_AGE_SECONDS`).
    pub max_age: Duration,
}

impl Default for SessionLifetimes {
    fn default() -> Self {
        Self { refresh_idle: Duration::from_secs(14 * 86_400), max_age: Duration::from_secs(30 * 86_400) }
    }
}

/// Who opens or refreshes a session: what the session list shows.
#[derive(Debug, Clone, Default)]
pub struct ClientInfo {
    /// The `User-Agent`, cut to [`MAX_USER_AGENT_CHARS`]; empty without one.
    pub user_agent: String,
    /// The client's address (`edge::client_ip`), `None` when the request came
    /// without a peer address (a router called in-process).
    pub address: Option<IpAddr>,
}

/// The parts of the HTTP configuration sessions need, set by the router
/// (`app::router_with_limits`) from its options.
#[derive(Debug, Clone)]
pub struct SessionPolicy {
    /// The proxies whose forwarding header names the client (`TRUSTED_PROXIES`).
    pub proxies: TrustedProxies,
    /// The origins a cookie-borne request may come from (`CORS_ORIGINS`).
    pub origins: CorsOrigins,
}

impl Default for SessionPolicy {
    /// An unconfigured server's: no trusted proxy, any origin (see [`origin_allowed`]).
    fn default() -> Self {
        Self { proxies: TrustedProxies::default(), origins: CorsOrigins::Any }
    }
}

impl<S> FromRequestParts<S> for ClientInfo
where
    SessionPolicy: axum::extract::FromRef<S>,
    S: Send + Sync,
{
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let policy = <SessionPolicy as axum::extract::FromRef<S>>::from_ref(state);
        let user_agent = parts
            .headers
            .get(header::USER_AGENT)
            .map(|value| String::from_utf8_lossy(value.as_bytes()).chars().take(MAX_USER_AGENT_CHARS).collect())
            .unwrap_or_default();
        let address = parts
            .extensions
            .get::<ConnectInfo<std::net::SocketAddr>>()
            .map(|ConnectInfo(peer)| policy.proxies.client(peer.ip(), &parts.headers));
        Ok(Self { user_agent, address })
    }
}

/// Where the client wants its refresh token: in the cookie (browsers, the
/// default) or in the response body (`X-Refresh-Token-Delivery: body`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    Cookie,
    Body,
}

impl Delivery {
    pub fn of(headers: &HeaderMap) -> Self {
        match headers.get(DELIVERY_HEADER) {
            Some(value) if value.as_bytes().eq_ignore_ascii_case(b"body") => Self::Body,
            _ => Self::Cookie,
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Delivery {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self::of(&parts.headers))
    }
}

/// What opening or refreshing a session hands the client.
#[derive(Debug)]
pub struct Issued {
    /// The JWT access token (`user.token`).
    pub access_token: String,
    /// The new refresh token, shown to the client once.
    pub refresh_token: SecretString,
    pub session_id: Uuid,
    pub user_id: i64,
    /// How long the refresh token lives unused (the cookie's `Max-Age`).
    pub refresh_lifetime: Duration,
}

impl Issued {
    /// The `Set-Cookie` header carrying the refresh token.
    pub fn cookie(&self) -> HeaderValue {
        let value = format!(
            "{REFRESH_COOKIE}={}; HttpOnly; Secure; SameSite=Strict; Path=/; Max-Age={}",
            self.refresh_token.expose_secret(),
            self.refresh_lifetime.as_secs()
        );
        HeaderValue::try_from(value).unwrap_or_else(|_| unreachable!("base64url and digits"))
    }
}

/// The `Set-Cookie` header that removes the refresh cookie.
pub fn clear_cookie() -> HeaderValue {
    HeaderValue::from_static("__Host-conduit-refresh=; HttpOnly; Secure; SameSite=Strict; Path=/; Max-Age=0")
}

/// The refresh token of the request's cookie, if it has one.
pub fn cookie_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .find_map(|pair| pair.trim().strip_prefix(REFRESH_COOKIE)?.strip_prefix('='))
        .map(str::trim)
        .filter(|token| !token.is_empty())
}

/// Whether a request carrying the refresh cookie comes from an origin allowed
/// to use it (the CSRF check, beside `SameSite=Strict`; docs/auth.md):
/// with `CORS_ORIGINS` configured, one of those origins; with `*` (the
/// development default), the request's own host or a loopback host. A request
/// without `Origin` is refused: every browser sends it on a `POST`.
pub fn origin_allowed(headers: &HeaderMap, origins: &CorsOrigins) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|value| value.to_str().ok()) else { return false };
    match origins {
        CorsOrigins::List(list) => list.iter().any(|allowed| allowed.eq_ignore_ascii_case(origin)),
        CorsOrigins::Any => {
            let Some((scheme, authority)) = origin.split_once("://") else { return false };
            if !matches!(scheme, "http" | "https") {
                return false;
            }
            let own = headers.get(header::HOST).and_then(|host| host.to_str().ok());
            if own.is_some_and(|own| own.eq_ignore_ascii_case(authority)) {
                return true;
            }
            let host = match authority.strip_prefix('[') {
                Some(rest) => rest.split_once(']').map_or(rest, |(host, _)| host),
                None => authority.rsplit_once(':').map_or(authority, |(host, _)| host),
            };
            host.eq_ignore_ascii_case("localhost") || host == "127.0.0.1" || host == "::1"
        }
    }
}

/// A fresh refresh token: 256 bits from the operating system, base64url.
fn new_refresh_token() -> Result<SecretString, Error> {
    Ok(SecretString::from(super::random_token()?))
}

/// What is stored of a refresh token.
pub use super::token_hash as hash;

fn issue(
    keys: &JwtKeys,
    user_id: i64,
    session_id: Uuid,
    session_expires: DateTime<Utc>,
    refresh_token: SecretString,
) -> Result<Issued, Error> {
    let access_token = keys.sign(user_id, session_id, session_expires)?;
    let until_end = (session_expires - Utc::now()).to_std().unwrap_or_default();
    Ok(Issued {
        access_token,
        refresh_token,
        session_id,
        user_id,
        refresh_lifetime: keys.lifetimes().refresh_idle.min(until_end),
    })
}

/// Opens a session for `user_id`, signed in by `method` (`register`,
/// `password`, `oidc:<provider>`), with its first refresh token: one
/// statement, on the caller's connection or transaction (register opens it in
/// the transaction that creates the account).
pub async fn open(
    conn: &mut PgConnection,
    keys: &JwtKeys,
    user_id: i64,
    method: &str,
    client: &ClientInfo,
) -> Result<Issued, Error> {
    let refresh_token = new_refresh_token()?;
    let opened = db::sessions::open(
        conn,
        &db::sessions::NewSession {
            user_id,
            max_age: keys.lifetimes().max_age,
            refresh_idle: keys.lifetimes().refresh_idle,
            user_agent: &client.user_agent,
            client_addr: client.address,
            method,
            refresh_hash: &hash(refresh_token.expose_secret()),
            keep_revoked: keys.ttl() + super::revocations::LEEWAY,
        },
    )
    .await?;
    issue(keys, user_id, opened.id, opened.expires_at, refresh_token)
}

/// What presenting a refresh token came to.
#[derive(Debug)]
pub enum Refreshed {
    /// Exchanged: the new tokens.
    Rotated(Issued),
    /// Unknown, expired, or its session is over.
    Invalid,
    /// Already exchanged before: its session has been revoked now.
    Reused { session_id: Uuid, user_id: i64 },
}

/// Exchanges the refresh token `presented` for new tokens, in one transaction;
/// a retired one revokes its session instead. Two exchanges of the same token
/// at once: the second waits for the first's row lock, then finds the token
/// retired, and revokes (docs/auth.md, "Refresh tokens").
pub async fn refresh(conn: &mut PgConnection, keys: &JwtKeys, presented: &str) -> Result<Refreshed, Error> {
    let old = hash(presented);
    let refresh_token = new_refresh_token()?;
    let new = hash(refresh_token.expose_secret());
    let mut tx = sqlx::Connection::begin(conn).await?;
    let outcome = match db::sessions::rotate(&mut tx, &old, &new, keys.lifetimes().refresh_idle).await? {
        Some(live) => Refreshed::Rotated(issue(keys, live.user_id, live.id, live.expires_at, refresh_token)?),
        None => match db::sessions::revoke_if_retired(&mut tx, &old).await? {
            Some(revoked) => Refreshed::Reused { session_id: revoked.id, user_id: revoked.user_id },
            None => Refreshed::Invalid,
        },
    };
    tx.commit().await?;
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use axum::http::{HeaderMap, HeaderValue, header};

    use super::*;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(name.clone(), HeaderValue::from_str(value).expect("valid header"));
        }
        map
    }

    #[test]
    fn refresh_tokens_are_256_random_bits_and_differ_each_time() {
        let a = new_refresh_token().expect("random");
        let b = new_refresh_token().expect("random");
        assert_eq!(a.expose_secret().len(), 43);
        assert_ne!(a.expose_secret(), b.expose_secret());
        assert_eq!(hash(a.expose_secret()).len(), 32);
    }

    #[test]
    fn the_refresh_cookie_is_found_among_others_and_an_empty_one_is_none() {
        let found = headers(&[(header::COOKIE, "a=1; __Host-conduit-refresh=abc_-; b=2")]);
        assert_eq!(cookie_token(&found), Some("abc_-"));
        let second_header = headers(&[(header::COOKIE, "a=1"), (header::COOKIE, "__Host-conduit-refresh=xyz")]);
        assert_eq!(cookie_token(&second_header), Some("xyz"));
        assert_eq!(cookie_token(&headers(&[(header::COOKIE, "__Host-conduit-refresh=")])), None);
        assert_eq!(cookie_token(&headers(&[(header::COOKIE, "conduit-refresh=abc")])), None);
        assert_eq!(cookie_token(&HeaderMap::new()), None);
    }

    #[test]
    fn with_any_origin_only_the_own_host_and_loopback_hosts_may_use_the_cookie() {
        let allowed = |origin: &str| {
            origin_allowed(&headers(&[(header::ORIGIN, origin), (header::HOST, "api.example.com")]), &CorsOrigins::Any)
        };
        for origin in [
            "https://api.example.com",
            "http://localhost",
            "http://localhost:3000",
            "http://127.0.0.1:8080",
            "http://[::1]:5173",
        ] {
            assert!(allowed(origin), "{origin}");
        }
        for origin in [
            "https://evil.example",
            "null",
            "https://localhost.evil.example",
            "https://api.example.com.evil",
            "file://localhost",
            "localhost",
        ] {
            assert!(!allowed(origin), "{origin}");
        }
        assert!(!origin_allowed(&headers(&[(header::HOST, "api.example.com")]), &CorsOrigins::Any), "no Origin");
    }

    #[test]
    fn with_a_list_of_origins_only_those_may_use_the_cookie() {
        let list = CorsOrigins::List(vec!["https://app.example.com".to_owned()]);
        let from =
            |origin: &str| origin_allowed(&headers(&[(header::ORIGIN, origin), (header::HOST, "localhost")]), &list);
        assert!(from("https://app.example.com"));
        assert!(!from("http://localhost"));
        assert!(!from("https://evil.example"));
    }

    #[test]
    fn body_delivery_is_asked_for_by_header_and_the_cookie_is_the_default() {
        assert_eq!(Delivery::of(&headers(&[(DELIVERY_HEADER, "body")])), Delivery::Body);
        assert_eq!(Delivery::of(&headers(&[(DELIVERY_HEADER, "BODY")])), Delivery::Body);
        assert_eq!(Delivery::of(&headers(&[(DELIVERY_HEADER, "cookie")])), Delivery::Cookie);
        assert_eq!(Delivery::of(&HeaderMap::new()), Delivery::Cookie);
    }
}
