//! Argon2id password hashing, off the async runtime and behind a bound.
//!
//! Each hash costs about 19 MiB and tens of milliseconds of CPU. Running it on the
//! async workers would stall every other request, and running an unbounded number
//! at once would let a login flood exhaust memory, so every hash and verification
//! waits for a permit and then runs on the blocking pool.

use std::sync::Arc;

use anyhow::Context as _;
use argon2::{Algorithm, Argon2, Params, PasswordHash, PasswordVerifier, Version};
use tokio::sync::{OnceCell, Semaphore};

use crate::domain::Password;

/// OWASP's minimum for Argon2id: 19 MiB, 2 passes, 1 lane.
fn argon2() -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, Params::DEFAULT)
}

#[derive(Debug, Clone)]
pub struct PasswordHasher {
    permits: Arc<Semaphore>,
    /// A real hash of a random password, verified against when the email is unknown,
    /// so that a login takes the same time whether or not the account exists.
    dummy: Arc<OnceCell<String>>,
}

impl PasswordHasher {
    /// `concurrency` hashes may run at once; the rest queue.
    pub fn new(concurrency: usize) -> Self {
        Self { permits: Arc::new(Semaphore::new(concurrency.max(1))), dummy: Arc::default() }
    }

    /// Hashes a new password to a PHC string.
    pub async fn hash(&self, password: &Password) -> anyhow::Result<String> {
        let password = password.as_str().to_owned();
        self.run(move || {
            use argon2::PasswordHasher as _;
            argon2()
                .hash_password(password.as_bytes())
                .map(|hash| hash.to_string())
                .map_err(|err| anyhow::anyhow!("argon2 hash: {err}"))
        })
        .await
    }

    /// Whether `password` matches the PHC string `hash`.
    pub async fn verify(&self, password: &str, hash: &str) -> anyhow::Result<bool> {
        let password = password.to_owned();
        let hash = hash.to_owned();
        self.run(move || {
            let parsed = PasswordHash::new(&hash).map_err(|err| anyhow::anyhow!("stored hash: {err}"))?;
            Ok(argon2().verify_password(password.as_bytes(), &parsed).is_ok())
        })
        .await
    }

    /// Spends the same work as a real verification, for an unknown account.
    pub async fn verify_dummy(&self, password: &str) -> anyhow::Result<()> {
        let dummy = self.dummy_hash().await?;
        self.verify(password, dummy).await.map(|_| ())
    }

    /// Makes the dummy hash now (at start-up), so that the first login with an
    /// unknown email does not take twice as long as the others.
    pub async fn prepare(&self) -> anyhow::Result<()> {
        self.dummy_hash().await.map(|_| ())
    }

    async fn dummy_hash(&self) -> anyhow::Result<&String> {
        self.dummy
            .get_or_try_init(|| async {
                let mut random = [0u8; 24];
                getrandom::fill(&mut random).map_err(|err| anyhow::anyhow!("random: {err}"))?;
                let filler = Password::parse(&format!("{random:02x?}")).map_err(anyhow::Error::msg)?;
                self.hash(&filler).await
            })
            .await
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
    ) -> anyhow::Result<T> {
        let _permit = self.permits.acquire().await.context("password hasher closed")?;
        tokio::task::spawn_blocking(work).await.context("password hashing task")?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_hash_verifies_its_password_and_nothing_else() {
        let hasher = PasswordHasher::new(2);
        let password = Password::parse("correct horse battery").expect("valid");
        let hash = hasher.hash(&password).await.expect("hashes");
        assert!(hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{hash}");
        assert!(hasher.verify("correct horse battery", &hash).await.expect("verifies"));
        assert!(!hasher.verify("wrong horse battery", &hash).await.expect("verifies"));
    }

    #[tokio::test]
    async fn hashing_the_same_password_twice_uses_different_salts() {
        let hasher = PasswordHasher::new(1);
        let password = Password::parse("same password").expect("valid");
        let a = hasher.hash(&password).await.expect("hashes");
        let b = hasher.hash(&password).await.expect("hashes");
        assert_ne!(a, b);
    }

    #[tokio::test]
    async fn an_unknown_account_still_costs_a_verification() {
        let hasher = PasswordHasher::new(1);
        hasher.verify_dummy("anything at all").await.expect("runs");
        assert!(hasher.dummy.get().is_some());
    }
}
