//! Credentials: JWT access tokens, the sessions they belong to and their refresh
//! tokens, Argon2id password hashes, and why a token is refused (with the HTTP
//! challenge that says so).

pub mod jwt;
pub mod oidc;
pub mod password;
mod revocations;
pub mod session;

pub use jwt::JwtKeys;
pub use password::PasswordHasher;
pub use revocations::Revocations;

/// 256 random bits from the operating system, base64url without padding (43
/// characters): refresh tokens, and the OpenID Connect sign-in's state, nonce,
/// PKCE verifier, browser binding and handoff code.
pub fn random_token() -> anyhow::Result<String> {
    use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|err| anyhow::anyhow!("no randomness: {err}"))?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

/// How such a random value is stored: its SHA-256 (enough for 256 random bits,
/// which no one can find again from the hash).
pub fn token_hash(value: &str) -> Vec<u8> {
    use sha2::{Digest as _, Sha256};
    Sha256::digest(value.as_bytes()).to_vec()
}

/// Why a request carries no usable credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenProblem {
    /// No `Authorization` header (or not one of our schemes).
    Missing,
    /// Malformed, forged, for another audience, or not yet valid.
    Invalid,
    /// Its `exp` has passed.
    Expired,
    /// Well signed, but the account it names no longer exists, or its session
    /// has been revoked.
    Revoked,
}

impl TokenProblem {
    /// The message under the `token` key of the error body, as the RealWorld 2.0
    /// spec words the missing case (`{"errors": {"token": ["is missing"]}}`).
    pub fn message(self) -> &'static str {
        match self {
            Self::Missing => "is missing",
            Self::Invalid => "is invalid",
            Self::Expired => "has expired",
            Self::Revoked => "has been revoked",
        }
    }

    /// The `WWW-Authenticate` challenge (RFC 6750, section 3): no error code when
    /// no credentials came, `invalid_token` when the ones that came were refused.
    pub fn challenge(self) -> axum::http::HeaderValue {
        use axum::http::HeaderValue;
        match self {
            Self::Missing => HeaderValue::from_static("Token"),
            Self::Invalid => HeaderValue::from_static(r#"Token error="invalid_token", error_description="is invalid""#),
            Self::Expired => {
                HeaderValue::from_static(r#"Token error="invalid_token", error_description="has expired""#)
            }
            Self::Revoked => {
                HeaderValue::from_static(r#"Token error="invalid_token", error_description="has been revoked""#)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::TokenProblem;

    /// The challenge's description is the body's message, so that a client reads
    /// the same reason in both.
    #[test]
    fn a_refused_tokens_challenge_carries_its_message_and_a_missing_one_no_error() {
        assert_eq!(TokenProblem::Missing.challenge(), "Token");
        for problem in [TokenProblem::Invalid, TokenProblem::Expired, TokenProblem::Revoked] {
            let expected = format!(r#"Token error="invalid_token", error_description="{}""#, problem.message());
            assert_eq!(problem.challenge(), expected.as_str(), "{problem:?}");
        }
    }
}
