//! OpenID Connect sign-in: the authorization code flow with PKCE (S256), `state`
//! and `nonce`, for any number of providers configured by environment
//! (`OIDC_<NAME>_ISSUER`, `..._CLIENT_ID`, `..._CLIENT_SECRET`, `..._REDIRECT_URL`).
//!
//! This module holds the providers ([`Oidc`]), the random values of a sign-in
//! and their hashes; [`provider`] talks to a provider (discovery, JWKS, token
//! endpoint) and [`id_token`] validates what it sends back. The HTTP side is
//! `routes::oidc`, the SQL `db::identities`, the decisions docs/auth.md.

pub mod id_token;
pub mod provider;

use std::{collections::HashMap, sync::Arc, time::Duration};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use secrecy::SecretString;
use sha2::{Digest as _, Sha256};

use crate::config::ConfigError;

pub use super::{random_token, token_hash as hash};
pub use id_token::{IdTokenClaims, IdTokenError};
pub use provider::{Provider, ProviderError};

/// The cookie that binds a sign-in to the browser that started it. `__Host-`:
/// only ever set with `Secure`, `Path=/` and no `Domain`, so no sibling
/// subdomain can plant one.
pub const BINDING_COOKIE: &str = "__Host-conduit-oidc";

/// How long a started sign-in may take at the provider (and the binding
/// cookie's `Max-Age`).
pub const LOGIN_TTL: Duration = Duration::from_secs(600);

/// How long the frontend has to exchange the one-time code of a finished sign-in.
pub const HANDOFF_TTL: Duration = Duration::from_secs(60);

/// One provider's settings, from `OIDC_<NAME>_*`.
#[derive(Debug, Clone)]
pub struct ProviderConfig {
    /// `<NAME>` in lower case: the `{provider}` of the URLs.
    pub name: String,
    /// Exactly as the provider spells it in its discovery document and tokens.
    pub issuer: String,
    pub client_id: String,
    pub client_secret: SecretString,
    /// Our callback as registered at the provider:
    /// `https://api.example.com/api/auth/oidc/<name>/callback`.
    pub redirect_url: String,
}

/// Every OIDC setting; no provider means the feature is off (every
/// `{provider}` is a 404).
#[derive(Debug, Clone, Default)]
pub struct OidcConfig {
    pub providers: Vec<ProviderConfig>,
    /// `OIDC_FRONTEND_URL`: where the callback sends the browser with the one-time code.
    pub frontend_url: Option<String>,
}

/// Timings of the provider caches; the defaults are the production ones.
#[derive(Debug, Clone, Copy)]
pub struct CacheSettings {
    /// How long a discovery document is used before it is fetched again.
    pub discovery_ttl: Duration,
    /// How long a key set is used before it is fetched again.
    pub jwks_ttl: Duration,
    /// The least time between two fetches of the key set caused by an ID token
    /// naming a key not in the cache (a key rotation), so that a flood of tokens
    /// naming made-up keys cannot make us hammer the provider.
    pub jwks_min_refetch: Duration,
    /// Each request to the provider, connection included.
    pub http_timeout: Duration,
}

impl Default for CacheSettings {
    fn default() -> Self {
        Self {
            discovery_ttl: Duration::from_secs(3600),
            jwks_ttl: Duration::from_secs(3600),
            jwks_min_refetch: Duration::from_secs(30),
            http_timeout: Duration::from_secs(5),
        }
    }
}

/// The configured providers, by name, with their caches.
#[derive(Debug, Default)]
pub struct Oidc {
    providers: HashMap<String, Arc<Provider>>,
    frontend_url: String,
}

impl Oidc {
    pub fn new(config: &OidcConfig, cache: CacheSettings) -> anyhow::Result<Self> {
        let mut providers = HashMap::new();
        for provider in &config.providers {
            providers.insert(provider.name.clone(), Arc::new(Provider::new(provider.clone(), cache)?));
        }
        Ok(Self { providers, frontend_url: config.frontend_url.clone().unwrap_or_default() })
    }

    /// The provider named in a URL; `None` for any other name.
    pub fn provider(&self, name: &str) -> Option<&Arc<Provider>> {
        self.providers.get(name)
    }

    /// Where the browser goes with the one-time `code` of a finished sign-in: in
    /// the fragment, which browsers send to no server (not the frontend's, not
    /// in a `Referer`), so no access log or proxy sees it. A frontend with hash
    /// routing (`https://app.example/#/oidc`) gets it as the route's query.
    pub fn frontend_redirect(&self, code: &str) -> String {
        let url = &self.frontend_url;
        match url.split_once('#') {
            None => format!("{url}#code={code}"),
            Some((_, fragment)) if fragment.contains('?') => format!("{url}&code={code}"),
            Some(_) => format!("{url}?code={code}"),
        }
    }
}

/// The PKCE S256 challenge of a verifier (RFC 7636, section 4.2).
pub fn pkce_challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// The password hash of an account created by a sign-in: a well-formed Argon2id
/// PHC string of random salt and output, which no password verifies (finding
/// one is finding a preimage of 256 random bits). Well-formed, so that a login
/// with its email is the usual 401 after the usual work, never a 500 nor a
/// faster answer that would tell such accounts apart.
pub fn unusable_password_hash() -> anyhow::Result<String> {
    use base64::engine::general_purpose::STANDARD_NO_PAD;
    let mut salt = [0u8; 16];
    let mut output = [0u8; 32];
    getrandom::fill(&mut salt).map_err(|err| anyhow::anyhow!("random: {err}"))?;
    getrandom::fill(&mut output).map_err(|err| anyhow::anyhow!("random: {err}"))?;
    let params = argon2::Params::DEFAULT;
    Ok(format!(
        "$argon2id$v=19$m={},t={},p={}${}${}",
        params.m_cost(),
        params.t_cost(),
        params.p_cost(),
        STANDARD_NO_PAD.encode(salt),
        STANDARD_NO_PAD.encode(output)
    ))
}

/// Reads the providers from the environment: every `OIDC_<NAME>_ISSUER` among
/// `names` (the variables that are set) names a provider, which needs all four
/// of its variables. `OIDC_FRONTEND_URL` is required once there is one.
pub fn config_from_lookup(
    names: impl IntoIterator<Item = String>,
    get: &impl Fn(&str) -> Option<String>,
) -> Result<OidcConfig, ConfigError> {
    let mut provider_names: Vec<String> = names
        .into_iter()
        .filter_map(|var| {
            let name = var.strip_prefix("OIDC_")?.strip_suffix("_ISSUER")?;
            (!name.is_empty()).then(|| name.to_owned())
        })
        .collect();
    provider_names.sort();
    provider_names.dedup();
    let mut providers = Vec::new();
    for name in provider_names {
        let var = |suffix: &str| format!("OIDC_{name}_{suffix}");
        let required = |suffix: &str| {
            let var = var(suffix);
            get(&var).map(|v| v.trim().to_owned()).ok_or_else(|| invalid(&var, "is required for this provider"))
        };
        if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(invalid(&var("ISSUER"), "the provider's name may contain only A-Z, 0-9 and _"));
        }
        let issuer = required("ISSUER")?;
        check_url(&var("ISSUER"), &issuer)?;
        let client_id = required("CLIENT_ID")?;
        let client_secret = SecretString::from(required("CLIENT_SECRET")?);
        let redirect_url = required("REDIRECT_URL")?;
        check_url(&var("REDIRECT_URL"), &redirect_url)?;
        providers.push(ProviderConfig {
            name: name.to_ascii_lowercase(),
            issuer,
            client_id,
            client_secret,
            redirect_url,
        });
    }
    let frontend_url = get("OIDC_FRONTEND_URL").map(|v| v.trim().to_owned());
    match &frontend_url {
        Some(url) => check_url("OIDC_FRONTEND_URL", url)?,
        None if !providers.is_empty() => {
            return Err(invalid("OIDC_FRONTEND_URL", "is required when an OpenID Connect provider is configured"));
        }
        None => {}
    }
    Ok(OidcConfig { providers, frontend_url })
}

/// An `https` URL, or `http` on a loopback host (a provider or a frontend on
/// the developer's machine, and the end-to-end test's provider).
fn check_url(var: &str, value: &str) -> Result<(), ConfigError> {
    let url = url::Url::parse(value).map_err(|err| invalid(var, format!("`{value}` is not a URL: {err}")))?;
    let loopback = match url.host() {
        Some(url::Host::Domain(domain)) => domain.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    };
    match url.scheme() {
        "https" if url.host().is_some() => Ok(()),
        "http" if loopback => Ok(()),
        _ => Err(invalid(var, format!("`{value}` must be an https URL (http only on localhost or 127.0.0.1)"))),
    }
}

/// A [`ConfigError`] naming a variable whose name is made at run time: leaked,
/// once, as the process stops with it.
fn invalid(var: &str, message: impl Into<String>) -> ConfigError {
    ConfigError { var: Box::leak(var.to_owned().into_boxed_str()), message: message.into() }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn read(vars: &[(&str, &str)]) -> Result<OidcConfig, ConfigError> {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        config_from_lookup(map.keys().cloned().collect::<Vec<_>>(), &|name: &str| map.get(name).cloned())
    }

    const CORP: [(&str, &str); 5] = [
        ("OIDC_CORP_ISSUER", "https://id.example.com"),
        ("OIDC_CORP_CLIENT_ID", "conduit"),
        ("OIDC_CORP_CLIENT_SECRET", "s3cret"),
        ("OIDC_CORP_REDIRECT_URL", "https://api.example.com/api/auth/oidc/corp/callback"),
        ("OIDC_FRONTEND_URL", "https://app.example.com/#/oidc"),
    ];

    #[test]
    fn a_provider_is_named_by_its_issuer_variable_and_needs_all_four() {
        let config = read(&CORP).expect("valid");
        assert_eq!(config.providers.len(), 1);
        assert_eq!(config.providers[0].name, "corp");
        assert_eq!(config.providers[0].issuer, "https://id.example.com");
        for missing in ["OIDC_CORP_CLIENT_ID", "OIDC_CORP_CLIENT_SECRET", "OIDC_CORP_REDIRECT_URL", "OIDC_FRONTEND_URL"]
        {
            let vars: Vec<_> = CORP.iter().copied().filter(|(k, _)| *k != missing).collect();
            assert_eq!(read(&vars).expect_err(missing).var, missing);
        }
        assert!(read(&[]).expect("no provider").providers.is_empty());
    }

    #[test]
    fn issuers_must_be_https_except_on_loopback() {
        let mut vars = CORP.to_vec();
        vars[0] = ("OIDC_CORP_ISSUER", "http://id.example.com");
        assert_eq!(read(&vars).expect_err("http").var, "OIDC_CORP_ISSUER");
        vars[0] = ("OIDC_CORP_ISSUER", "not a url");
        assert_eq!(read(&vars).expect_err("garbage").var, "OIDC_CORP_ISSUER");
        vars[0] = ("OIDC_CORP_ISSUER", "http://127.0.0.1:3000");
        assert!(read(&vars).is_ok());
    }

    #[test]
    fn the_code_goes_in_the_fragment_of_the_frontend_url() {
        let with = |url: &str| Oidc { providers: HashMap::new(), frontend_url: url.to_owned() }.frontend_redirect("C");
        assert_eq!(with("https://app.example/oidc"), "https://app.example/oidc#code=C");
        assert_eq!(with("https://app.example/#/oidc"), "https://app.example/#/oidc?code=C");
        assert_eq!(with("https://app.example/#/oidc?x=1"), "https://app.example/#/oidc?x=1&code=C");
    }

    #[test]
    fn the_unusable_password_hash_parses_as_argon2id() {
        let hash = unusable_password_hash().expect("hash");
        let parsed = argon2::PasswordHash::new(&hash).expect("a PHC string");
        assert_eq!(parsed.algorithm.as_str(), "argon2id");
        assert_ne!(hash, unusable_password_hash().expect("hash"));
    }

    #[test]
    fn the_pkce_challenge_is_rfc_7636s_example() {
        // RFC 7636, appendix B.
        assert_eq!(
            pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
        assert_eq!(random_token().expect("random").len(), 43);
    }
}
