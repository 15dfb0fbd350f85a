//! HS256 JSON Web Tokens with every claim checked.
//!
//! `jsonwebtoken`'s defaults accept tokens without `iss`, `aud` or `iat`. Here the
//! algorithm is pinned and `exp`, `iat`, `iss`, `aud` and `sub` are all required.

use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use super::TokenProblem;

pub const ISSUER: &str = "conduit";
pub const AUDIENCE: &str = "conduit-api";
/// The shortest signing secret accepted, in bytes (HS256's own output size).
pub const MIN_SECRET_BYTES: usize = 32;

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    iss: String,
    aud: String,
    iat: u64,
    exp: u64,
}

/// Signing and verification keys, with the validation rules they are used with.
pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    ttl: Duration,
}

impl std::fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtKeys").field("ttl", &self.ttl).finish_non_exhaustive()
    }
}

impl JwtKeys {
    pub fn new(secret: &SecretString, ttl: Duration) -> Self {
        let bytes = secret.expose_secret().as_bytes();
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.leeway = 30;
        Self { encoding: EncodingKey::from_secret(bytes), decoding: DecodingKey::from_secret(bytes), validation, ttl }
    }

    /// A fresh token for the user.
    pub fn sign(&self, user_id: i64) -> anyhow::Result<String> {
        let iat = jsonwebtoken::get_current_timestamp();
        let claims = Claims {
            sub: user_id.to_string(),
            iss: ISSUER.to_owned(),
            aud: AUDIENCE.to_owned(),
            iat,
            exp: iat + self.ttl.as_secs(),
        };
        Ok(jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)?)
    }

    /// The user id of a valid token; why it is refused otherwise.
    pub fn verify(&self, token: &str) -> Result<i64, TokenProblem> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation).map_err(|err| match err
            .kind()
        {
            jsonwebtoken::errors::ErrorKind::ExpiredSignature => TokenProblem::Expired,
            _ => TokenProblem::Invalid,
        })?;
        let now = jsonwebtoken::get_current_timestamp();
        if data.claims.iat > now + self.validation.leeway {
            return Err(TokenProblem::Invalid); // issued in the future: not ours
        }
        data.claims.sub.parse().map_err(|_| TokenProblem::Invalid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(secret: &str) -> JwtKeys {
        JwtKeys::new(&SecretString::from(secret), Duration::from_secs(3600))
    }

    fn forge(claims: &serde_json::Value, secret: &str, alg: Algorithm) -> String {
        jsonwebtoken::encode(&Header::new(alg), claims, &EncodingKey::from_secret(secret.as_bytes())).expect("encodes")
    }

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn a_signed_token_verifies_to_its_user() {
        let keys = keys(SECRET);
        let token = keys.sign(42).expect("signs");
        assert_eq!(keys.verify(&token), Ok(42));
    }

    #[test]
    fn a_token_signed_with_another_secret_is_rejected() {
        let token = keys("another secret of thirty-two bytes!!").sign(1).expect("signs");
        assert_eq!(keys(SECRET).verify(&token), Err(TokenProblem::Invalid));
    }

    #[test]
    fn expired_tokens_and_tokens_missing_claims_are_rejected() {
        let now = jsonwebtoken::get_current_timestamp();
        let keys = keys(SECRET);
        let expired =
            serde_json::json!({"sub": "1", "iss": ISSUER, "aud": AUDIENCE, "iat": now - 7200, "exp": now - 3600});
        assert_eq!(keys.verify(&forge(&expired, SECRET, Algorithm::HS256)), Err(TokenProblem::Expired));
        let no_aud = serde_json::json!({"sub": "1", "iss": ISSUER, "iat": now, "exp": now + 60});
        assert_eq!(keys.verify(&forge(&no_aud, SECRET, Algorithm::HS256)), Err(TokenProblem::Invalid));
        let wrong_iss = serde_json::json!({"sub": "1", "iss": "evil", "aud": AUDIENCE, "iat": now, "exp": now + 60});
        assert_eq!(keys.verify(&forge(&wrong_iss, SECRET, Algorithm::HS256)), Err(TokenProblem::Invalid));
        let no_iat = serde_json::json!({"sub": "1", "iss": ISSUER, "aud": AUDIENCE, "exp": now + 60});
        assert_eq!(keys.verify(&forge(&no_iat, SECRET, Algorithm::HS256)), Err(TokenProblem::Invalid));
    }

    #[test]
    fn other_algorithms_and_garbage_are_rejected() {
        let now = jsonwebtoken::get_current_timestamp();
        let claims = serde_json::json!({"sub": "1", "iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + 60});
        assert_eq!(keys(SECRET).verify(&forge(&claims, SECRET, Algorithm::HS512)), Err(TokenProblem::Invalid));
        assert_eq!(keys(SECRET).verify("not.a.token"), Err(TokenProblem::Invalid));
        assert_eq!(keys(SECRET).verify(""), Err(TokenProblem::Invalid));
    }
}
