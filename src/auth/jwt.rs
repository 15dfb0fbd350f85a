//! HS256 JSON Web Tokens with every claim checked.
//!
//! `jsonwebtoken`'s defaults accept tokens without `iss`, `aud` or `iat`. Here the
//! algorithm is pinned and `exp`, `iat`, `iss`, `aud`, `sub` and `sid` (the
//! session the token belongs to, see `auth::session`) are all required. Tokens
//! signed before sessions existed have no `sid` and are refused as invalid:
//! everyone signs in once after that upgrade.

use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

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
    /// The session's id (hyphenated).
    sid: String,
}

/// Signing and verification keys, with the validation rules they are used with.
pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    ttl: Duration,
    lifetimes: super::session::SessionLifetimes,
}

impl std::fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtKeys").field("ttl", &self.ttl).field("lifetimes", &self.lifetimes).finish_non_exhaustive()
    }
}

impl JwtKeys {
    pub fn new(secret: &SecretString, ttl: Duration) -> Self {
        let bytes = secret.expose_secret().as_bytes();
        let mut validation = Validation::new(Algorithm::HS256);
        // `sid` is required by `Claims` itself (no default).
        validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.leeway = 30;
        Self {
            encoding: EncodingKey::from_secret(bytes),
            decoding: DecodingKey::from_secret(bytes),
            validation,
            ttl,
            lifetimes: super::session::SessionLifetimes::default(),
        }
    }

    /// The same keys, with the sessions' and refresh tokens' lifetimes.
    #[must_use]
    pub fn with_session_lifetimes(self, lifetimes: super::session::SessionLifetimes) -> Self {
        Self { lifetimes, ..self }
    }

    /// The access tokens' lifetime (`JWT_TTL_SECONDS`).
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The sessions' and refresh tokens' lifetimes.
    pub fn lifetimes(&self) -> &super::session::SessionLifetimes {
        &self.lifetimes
    }

    /// A fresh token for the user's session, expiring after the lifetime or
    /// when the session does (`session_expires`), whichever comes first.
    pub fn sign(&self, user_id: i64, session: Uuid, session_expires: DateTime<Utc>) -> anyhow::Result<String> {
        let iat = jsonwebtoken::get_current_timestamp();
        let session_end = u64::try_from(session_expires.timestamp()).unwrap_or(0);
        let claims = Claims {
            sub: user_id.to_string(),
            iss: ISSUER.to_owned(),
            aud: AUDIENCE.to_owned(),
            iat,
            exp: (iat + self.ttl.as_secs()).min(session_end),
            sid: session.hyphenated().to_string(),
        };
        Ok(jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)?)
    }

    /// The user id and session id of a valid token; why it is refused otherwise.
    pub fn verify(&self, token: &str) -> Result<(i64, Uuid), TokenProblem> {
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
        let user = data.claims.sub.parse().map_err(|_| TokenProblem::Invalid)?;
        let session = Uuid::try_parse(&data.claims.sid).map_err(|_| TokenProblem::Invalid)?;
        Ok((user, session))
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
    const SID: &str = "4b7f2c1e-9a3d-4e5f-8a6b-0c1d2e3f4a5b";

    fn far() -> DateTime<Utc> {
        Utc::now() + chrono::Duration::days(30)
    }

    #[test]
    fn a_signed_token_verifies_to_its_user_and_session() {
        let keys = keys(SECRET);
        let sid = Uuid::new_v4();
        let token = keys.sign(42, sid, far()).expect("signs");
        assert_eq!(keys.verify(&token), Ok((42, sid)));
    }

    #[test]
    fn a_token_expires_with_its_session_when_that_comes_first() {
        let keys = keys(SECRET);
        let ending = Utc::now() + chrono::Duration::seconds(120);
        let token = keys.sign(42, Uuid::new_v4(), ending).expect("signs");
        let data = jsonwebtoken::decode::<Claims>(&token, &keys.decoding, &keys.validation).expect("valid");
        assert_eq!(data.claims.exp, u64::try_from(ending.timestamp()).expect("after 1970"));
    }

    #[test]
    fn a_token_without_a_session_id_is_rejected() {
        let now = jsonwebtoken::get_current_timestamp();
        let old = serde_json::json!({"sub": "1", "iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + 60});
        assert_eq!(keys(SECRET).verify(&forge(&old, SECRET, Algorithm::HS256)), Err(TokenProblem::Invalid));
        let bad =
            serde_json::json!({"sub": "1", "iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + 60, "sid": "x"});
        assert_eq!(keys(SECRET).verify(&forge(&bad, SECRET, Algorithm::HS256)), Err(TokenProblem::Invalid));
    }

    #[test]
    fn a_token_signed_with_another_secret_is_rejected() {
        let token = keys("another secret of thirty-two bytes!!").sign(1, Uuid::new_v4(), far()).expect("signs");
        assert_eq!(keys(SECRET).verify(&token), Err(TokenProblem::Invalid));
    }

    #[test]
    fn expired_tokens_and_tokens_missing_claims_are_rejected() {
        let now = jsonwebtoken::get_current_timestamp();
        let keys = keys(SECRET);
        let expired = serde_json::json!({"sub": "1", "iss": ISSUER, "aud": AUDIENCE, "iat": now - 7200, "exp": now - 3600, "sid": SID});
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
        let claims =
            serde_json::json!({"sub": "1", "iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + 60, "sid": SID});
        assert_eq!(keys(SECRET).verify(&forge(&claims, SECRET, Algorithm::HS512)), Err(TokenProblem::Invalid));
        assert_eq!(keys(SECRET).verify("not.a.token"), Err(TokenProblem::Invalid));
        assert_eq!(keys(SECRET).verify(""), Err(TokenProblem::Invalid));
    }
}
