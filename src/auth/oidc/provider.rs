//! One OpenID Provider: its discovery document and key set, fetched on first
//! use and cached, and its token endpoint.
//!
//! Every request goes out with redirects off (a provider that redirects its
//! discovery or token endpoint is misconfigured, and following it could send
//! the client secret elsewhere), a time limit, and a bound on the answer's size.

use std::time::Instant;

use jsonwebtoken::{
    Algorithm, DecodingKey,
    jwk::{AlgorithmParameters, Jwk, PublicKeyUse},
};
use secrecy::ExposeSecret as _;
use serde::{Deserialize, de::DeserializeOwned};
use tokio::sync::Mutex;

use super::{CacheSettings, ProviderConfig};

/// The largest answer read from a provider (discovery, keys, tokens).
const MAX_RESPONSE_BYTES: usize = 256 * 1024;

/// After a failed discovery, how long sign-ins fail at once instead of each
/// waiting for the provider again (one at a time, behind the cache's lock).
const DISCOVERY_RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(5);

/// What went wrong talking to the provider.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// The provider could not be reached or answered something unusable: not
    /// the client's fault (502).
    #[error("the provider failed: {0}")]
    Unusable(String),
    /// The token endpoint refused the code (already used, expired, not ours):
    /// the client's sign-in cannot finish (400).
    #[error("the provider refused the code: {0}")]
    CodeRefused(String),
}

fn unusable(what: impl std::fmt::Display) -> ProviderError {
    ProviderError::Unusable(what.to_string())
}

/// The parts of the discovery document that are used.
#[derive(Debug, Clone, Deserialize)]
pub struct Metadata {
    pub issuer: String,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    pub jwks_uri: String,
    #[serde(default)]
    pub token_endpoint_auth_methods_supported: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct TokenResponse {
    id_token: Option<String>,
}

#[derive(Debug, Deserialize)]
struct TokenErrorResponse {
    error: String,
}

#[derive(Debug)]
struct Cached<T> {
    value: T,
    fetched: Instant,
}

/// One configured provider and its caches.
#[derive(Debug)]
pub struct Provider {
    pub config: ProviderConfig,
    cache: CacheSettings,
    http: reqwest::Client,
    /// One fetch at a time: concurrent sign-ins wait for the one fetch.
    metadata: Mutex<Option<Cached<Metadata>>>,
    /// When discovery last failed.
    discovery_failed: Mutex<Option<Instant>>,
    jwks: Mutex<Option<Cached<Vec<Jwk>>>>,
}

impl Provider {
    pub fn new(config: ProviderConfig, cache: CacheSettings) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(cache.http_timeout)
            .connect_timeout(cache.http_timeout)
            .build()?;
        Ok(Self {
            config,
            cache,
            http,
            metadata: Mutex::new(None),
            discovery_failed: Mutex::new(None),
            jwks: Mutex::new(None),
        })
    }

    /// The discovery document, fetched when none is cached or it is older than
    /// the cache's lifetime. Its `issuer` must be the configured one exactly
    /// (OpenID Connect Discovery 1.0, section 4.3).
    pub async fn metadata(&self) -> Result<Metadata, ProviderError> {
        let mut cached = self.metadata.lock().await;
        if let Some(c) = cached.as_ref()
            && c.fetched.elapsed() < self.cache.discovery_ttl
        {
            return Ok(c.value.clone());
        }
        let mut failed = self.discovery_failed.lock().await;
        if failed.is_some_and(|at| at.elapsed() < DISCOVERY_RETRY_AFTER) {
            return cached.as_ref().map(|c| c.value.clone()).ok_or_else(|| unusable("discovery failed moments ago"));
        }
        match self.discover().await {
            Ok(metadata) => {
                *failed = None;
                *cached = Some(Cached { value: metadata.clone(), fetched: Instant::now() });
                Ok(metadata)
            }
            // A stale document still serves while the provider is unreachable.
            Err(err) => {
                *failed = Some(Instant::now());
                match cached.as_ref() {
                    Some(stale) => {
                        tracing::warn!(provider = %self.config.name, error = %err, "discovery failed; using the cached document");
                        Ok(stale.value.clone())
                    }
                    None => Err(err),
                }
            }
        }
    }

    async fn discover(&self) -> Result<Metadata, ProviderError> {
        let url = format!("{}/.well-known/openid-configuration", self.config.issuer.trim_end_matches('/'));
        let metadata: Metadata = self.get_json(&url).await?;
        if metadata.issuer != self.config.issuer {
            return Err(unusable(format!(
                "the discovery document names the issuer `{}`, not `{}`",
                metadata.issuer, self.config.issuer
            )));
        }
        Ok(metadata)
    }

    /// The key to verify a token signed with `alg` by the key `kid`. An unknown
    /// `kid` fetches the key set again (the provider rotated its keys), at most
    /// once per `jwks_min_refetch`. `None`: the provider publishes no such key.
    pub async fn key(&self, kid: Option<&str>, alg: Algorithm) -> Result<Option<DecodingKey>, ProviderError> {
        let mut cached = self.jwks.lock().await;
        let fresh = cached.as_ref().is_some_and(|c| c.fetched.elapsed() < self.cache.jwks_ttl);
        if fresh && let Some(key) = cached.as_ref().and_then(|c| find_key(&c.value, kid, alg)) {
            return Ok(Some(key));
        }
        let may_refetch = cached.as_ref().is_none_or(|c| c.fetched.elapsed() >= self.cache.jwks_min_refetch);
        if !fresh || may_refetch {
            let metadata = self.metadata().await?;
            let keys = self.get_json::<RawKeySet>(&metadata.jwks_uri).await?.parse();
            tracing::info!(provider = %self.config.name, keys = keys.len(), "fetched the provider's keys");
            *cached = Some(Cached { value: keys, fetched: Instant::now() });
        }
        Ok(cached.as_ref().and_then(|c| find_key(&c.value, kid, alg)))
    }

    /// Exchanges an authorization code for the ID token, proving with the PKCE
    /// verifier that we started the sign-in, and authenticating as the client
    /// the way the provider supports (`client_secret_basic` unless it lists only
    /// `client_secret_post`).
    pub async fn exchange_code(&self, code: &str, verifier: &str) -> Result<String, ProviderError> {
        let metadata = self.metadata().await?;
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", self.config.redirect_url.as_str()),
            ("code_verifier", verifier),
        ];
        let methods = &metadata.token_endpoint_auth_methods_supported;
        let basic = methods.is_empty() || methods.iter().any(|m| m == "client_secret_basic");
        let secret = self.config.client_secret.expose_secret();
        let mut request = self.http.post(&metadata.token_endpoint).header(reqwest::header::ACCEPT, "application/json");
        if basic {
            // RFC 6749, section 2.3.1: both are form-encoded before Basic.
            let encode = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
            request = request.basic_auth(encode(&self.config.client_id), Some(encode(secret)));
        } else {
            form.push(("client_id", self.config.client_id.as_str()));
            form.push(("client_secret", secret));
        }
        let response = request.form(&form).send().await.map_err(unusable)?;
        let status = response.status();
        let body = read_bounded(response).await?;
        if status.is_success() {
            let tokens: TokenResponse =
                serde_json::from_slice(&body).map_err(|err| unusable(format!("token response: {err}")))?;
            return tokens.id_token.ok_or_else(|| unusable("the token response has no id_token"));
        }
        match serde_json::from_slice::<TokenErrorResponse>(&body) {
            // RFC 6749, section 5.2: the code is invalid, expired, used, or not ours.
            Ok(err) if status == reqwest::StatusCode::BAD_REQUEST && err.error == "invalid_grant" => {
                Err(ProviderError::CodeRefused(err.error))
            }
            Ok(err) => Err(unusable(format!("token endpoint: {status} {}", err.error))),
            Err(_) => Err(unusable(format!("token endpoint: {status}"))),
        }
    }

    async fn get_json<T: DeserializeOwned>(&self, url: &str) -> Result<T, ProviderError> {
        let response = self
            .http
            .get(url)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|err| unusable(format!("{url}: {err}")))?;
        if !response.status().is_success() {
            return Err(unusable(format!("{url}: {}", response.status())));
        }
        let body = read_bounded(response).await?;
        serde_json::from_slice(&body).map_err(|err| unusable(format!("{url}: {err}")))
    }
}

/// The answer's body, refused beyond [`MAX_RESPONSE_BYTES`].
async fn read_bounded(mut response: reqwest::Response) -> Result<Vec<u8>, ProviderError> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(unusable)? {
        if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Err(unusable(format!("answer larger than {MAX_RESPONSE_BYTES} bytes")));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The published key `kid` (or the only suitable one when the token names
/// none), when it is a signing key of the family of `alg`. Symmetric (`oct`)
/// keys are never used: an HS* token "signed" with a published key proves nothing.
fn find_key(keys: &[Jwk], kid: Option<&str>, alg: Algorithm) -> Option<DecodingKey> {
    let suitable: Vec<&Jwk> = keys
        .iter()
        .filter(|jwk| {
            let signing = jwk.common.public_key_use.as_ref().is_none_or(|u| *u == PublicKeyUse::Signature);
            // `KeyAlgorithm` and `Algorithm` spell the shared names alike.
            let same_alg = jwk.common.key_algorithm.is_none_or(|a| format!("{a:?}") == format!("{alg:?}"));
            let family = match &jwk.algorithm {
                AlgorithmParameters::RSA(_) => matches!(
                    alg,
                    Algorithm::RS256
                        | Algorithm::RS384
                        | Algorithm::RS512
                        | Algorithm::PS256
                        | Algorithm::PS384
                        | Algorithm::PS512
                ),
                AlgorithmParameters::EllipticCurve(_) => matches!(alg, Algorithm::ES256 | Algorithm::ES384),
                AlgorithmParameters::OctetKeyPair(_) => alg == Algorithm::EdDSA,
                _ => false,
            };
            signing && same_alg && family
        })
        .collect();
    let jwk = match (kid, suitable.as_slice()) {
        (Some(kid), _) => suitable.iter().find(|jwk| jwk.common.key_id.as_deref() == Some(kid))?,
        (None, [only]) => only,
        (None, _) => return None,
    };
    DecodingKey::from_jwk(jwk).ok()
}

/// A key set as published: each key parsed alone, so that one key of a kind
/// this library does not know does not hide the others.
#[derive(Debug, Deserialize)]
struct RawKeySet {
    keys: Vec<serde_json::Value>,
}

impl RawKeySet {
    fn parse(self) -> Vec<Jwk> {
        self.keys.into_iter().filter_map(|key| serde_json::from_value(key).ok()).collect()
    }
}
