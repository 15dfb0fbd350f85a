//! Validation of an ID token (OpenID Connect Core 1.0, section 3.1.3.7).
//!
//! Checked, in this order: the header's algorithm is an asymmetric one we allow
//! (never `none`, never HS*: a provider's published key is public, and an HMAC
//! "signed" with it proves nothing); the signature, with the provider's
//! published key of that `kid` and algorithm; `iss` is the configured issuer
//! exactly; `aud` contains our client id; `azp` is our client id when present,
//! and present when there are several audiences; `exp` is in the future; `iat`
//! is neither in the future nor too old; `nonce` is the one this sign-in sent.
//! Clock skew of [`LEEWAY_SECS`] is allowed on the times.

use jsonwebtoken::{Algorithm, Validation};
use serde::Deserialize;

use super::{Provider, ProviderError};

/// Allowed clock difference with the provider.
pub const LEEWAY_SECS: u64 = 60;
/// The oldest `iat` accepted: the token comes straight from the token endpoint,
/// so anything older was minted for another exchange.
pub const MAX_AGE_SECS: u64 = 600;

/// The signature algorithms accepted.
const ALLOWED: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// Why an ID token is refused; the message is the client's to read.
#[derive(Debug, thiserror::Error)]
pub enum IdTokenError {
    #[error("{0}")]
    Invalid(&'static str),
    #[error(transparent)]
    Provider(#[from] ProviderError),
}

/// What the sign-in uses of a valid ID token.
#[derive(Debug, Clone)]
pub struct IdTokenClaims {
    pub subject: String,
    pub email: Option<String>,
    /// Only `true` when the provider said so (a JSON `true`, or the string
    /// `"true"` some providers send).
    pub email_verified: bool,
    pub preferred_username: Option<String>,
    pub name: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
struct RawClaims {
    sub: String,
    aud: Audience,
    #[serde(default)]
    azp: Option<String>,
    iat: f64,
    #[serde(default)]
    nonce: Option<String>,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    email_verified: Option<serde_json::Value>,
    #[serde(default)]
    preferred_username: Option<String>,
    #[serde(default)]
    name: Option<String>,
}

/// The claims of `token` when it is a valid ID token of `provider` for this
/// sign-in (`nonce`).
pub async fn validate(provider: &Provider, token: &str, nonce: &str) -> Result<IdTokenClaims, IdTokenError> {
    let invalid = IdTokenError::Invalid;
    // `alg: none` and unknown algorithms do not even parse.
    let header =
        jsonwebtoken::decode_header(token).map_err(|_| invalid("is malformed or uses an unknown algorithm"))?;
    if !ALLOWED.contains(&header.alg) {
        return Err(invalid("is signed with an algorithm that is not allowed"));
    }
    let key = provider
        .key(header.kid.as_deref(), header.alg)
        .await?
        .ok_or(invalid("is signed with a key the provider does not publish"))?;

    let config = &provider.config;
    let mut validation = Validation::new(header.alg);
    validation.algorithms = vec![header.alg];
    validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
    validation.set_issuer(&[config.issuer.as_str()]);
    validation.set_audience(&[config.client_id.as_str()]);
    validation.validate_exp = true;
    validation.validate_nbf = true;
    validation.leeway = LEEWAY_SECS;
    let data = jsonwebtoken::decode::<RawClaims>(token, &key, &validation).map_err(|err| {
        use jsonwebtoken::errors::ErrorKind;
        invalid(match err.kind() {
            ErrorKind::InvalidSignature => "has a signature that does not verify",
            ErrorKind::ExpiredSignature => "has expired",
            ErrorKind::InvalidIssuer => "was issued by another issuer",
            ErrorKind::InvalidAudience => "is for another audience",
            ErrorKind::ImmatureSignature => "is not valid yet",
            ErrorKind::MissingRequiredClaim(_) => "lacks a required claim",
            _ => "is invalid",
        })
    })?;
    let claims = data.claims;

    let audiences = match &claims.aud {
        Audience::One(one) => vec![one.as_str()],
        Audience::Many(many) => many.iter().map(String::as_str).collect(),
    };
    match &claims.azp {
        Some(azp) if *azp != config.client_id => return Err(invalid("was issued to another party (azp)")),
        None if audiences.len() > 1 => return Err(invalid("has several audiences and no azp")),
        _ => {}
    }
    let now = jsonwebtoken::get_current_timestamp() as f64;
    if claims.iat > now + LEEWAY_SECS as f64 {
        return Err(invalid("was issued in the future (iat)"));
    }
    if claims.iat < now - (MAX_AGE_SECS + LEEWAY_SECS) as f64 {
        return Err(invalid("was issued too long ago (iat)"));
    }
    if claims.nonce.as_deref() != Some(nonce) {
        return Err(invalid("does not carry this sign-in's nonce"));
    }
    if claims.sub.is_empty() || claims.sub.len() > 255 {
        return Err(invalid("has an unusable subject"));
    }
    let email_verified = match &claims.email_verified {
        Some(serde_json::Value::Bool(verified)) => *verified,
        Some(serde_json::Value::String(verified)) => verified == "true",
        _ => false,
    };
    Ok(IdTokenClaims {
        subject: claims.sub,
        email: claims.email,
        email_verified,
        preferred_username: claims.preferred_username,
        name: claims.name,
    })
}
