//! Argon2id password hashing, off the async runtime and behind a bound.
//!
//! Each hash costs about 19 MiB and tens of milliseconds of CPU. Running it on the
//! async workers would stall every other request, and running an unbounded number
//! at once would let a login flood exhaust memory, so every hash and verification
//! waits for a permit and then runs on the blocking pool.
//!
//! The queue is bounded too ([`PasswordHasher::with_queue`], `PASSWORD_HASH_QUEUE`):
//! a flood of bad logins (3,000 connections) once made a correct login wait 17 s
//! behind it. A hash that would queue beyond the bound is refused at once with
//! [`HashError::Shed`], answered `503` with `Retry-After`, so that a login still
//! gets either its answer or a quick refusal to retry, whatever the flood.
//!
//! The 19 MiB work areas are allocated once per permit and reused. Letting Argon2
//! allocate its own made the allocator keep one freed area per blocking thread
//! (glibc raises its mmap threshold after the first free): a login flood reached
//! 350 MB of RSS where two areas are ever in use.

use std::sync::{
    Arc, Mutex,
    atomic::{AtomicUsize, Ordering},
};

use anyhow::Context as _;
use argon2::password_hash::phc::{Output, ParamsString, Salt};
use argon2::{Algorithm, Argon2, Block, Params, PasswordHash, Version};
use metrics::{counter, gauge, histogram};
use tokio::sync::{Semaphore, TryAcquireError};

use crate::{config::ConfigError, domain::Password, telemetry::metrics as names};

/// OWASP's minimum for Argon2id: 19 MiB, 2 passes, 1 lane.
const PARAMS: Params = Params::DEFAULT;
const SALT_LEN: usize = 16;

/// One Argon2 work area, sized for [`PARAMS`].
type WorkArea = Vec<Block>;

/// How many hashes may wait per core when `PASSWORD_HASH_QUEUE` is unset. A hash
/// takes about 20 ms of a core (102 verifications/s on 2 cores, `conduit
/// hash-rate`), so the last of a full queue waits about 32 × 20 ms ≈ 0.6 s: long
/// enough to absorb a burst of honest logins, short enough that no client waits
/// seconds for an answer a flood would delay.
pub const QUEUE_PER_CORE: usize = 32;

/// Why a hash was not computed.
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    /// Too many hashes were waiting: try again shortly (`503`, `Retry-After`).
    #[error("too many password hashes waiting; shed")]
    Shed,
    #[error(transparent)]
    Failed(#[from] anyhow::Error),
}

#[derive(Debug, Clone)]
pub struct PasswordHasher {
    permits: Arc<Semaphore>,
    /// Hashes waiting for a permit, and how many may.
    queued: Arc<AtomicUsize>,
    queue_limit: usize,
    /// Work areas not in use; never more than the number of permits.
    areas: Arc<Mutex<Vec<WorkArea>>>,
    /// A PHC string with random salt and output, verified against when the email
    /// is unknown, so that a login costs the same whether or not the account exists.
    dummy: Arc<str>,
}

impl PasswordHasher {
    /// `concurrency` hashes may run at once; up to [`QUEUE_PER_CORE`] per permit queue.
    pub fn new(concurrency: usize) -> anyhow::Result<Self> {
        Self::with_queue(concurrency, concurrency.max(1) * QUEUE_PER_CORE)
    }

    /// `concurrency` hashes may run at once and `queue_limit` wait; more are shed.
    pub fn with_queue(concurrency: usize, queue_limit: usize) -> anyhow::Result<Self> {
        let mut output = [0u8; 32];
        getrandom::fill(&mut output).map_err(|err| anyhow::anyhow!("random: {err}"))?;
        let dummy = phc_string(&random_salt()?, &output)?;
        Ok(Self {
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            queued: Arc::default(),
            queue_limit,
            areas: Arc::default(),
            dummy: dummy.into(),
        })
    }

    /// How many hashes wait for a core now.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }

    /// Hashes a new password to a PHC string.
    #[tracing::instrument(name = "argon2.hash", skip_all)]
    pub async fn hash(&self, password: &Password) -> Result<String, HashError> {
        let password = password.as_str().to_owned();
        let salt = random_salt()?;
        self.run(move |area| {
            let mut output = [0u8; 32];
            Argon2::new(Algorithm::Argon2id, Version::V0x13, PARAMS)
                .hash_password_into_with_memory(password.as_bytes(), &salt, &mut output, area)
                .map_err(|err| anyhow::anyhow!("argon2 hash: {err}"))?;
            phc_string(&salt, &output)
        })
        .await
    }

    /// Whether `password` matches the PHC string `hash`.
    #[tracing::instrument(name = "argon2.verify", skip_all)]
    pub async fn verify(&self, password: &str, hash: &str) -> Result<bool, HashError> {
        let password = password.to_owned();
        let hash = hash.to_owned();
        self.run(move |area| {
            let parsed = PasswordHash::new(&hash).map_err(|err| anyhow::anyhow!("stored hash: {err}"))?;
            verify_with(password.as_bytes(), &parsed, area)
        })
        .await
    }

    /// Spends the same work as a real verification, for an unknown account.
    pub async fn verify_dummy(&self, password: &str) -> Result<(), HashError> {
        self.verify(password, &self.dummy.clone()).await.map(|_| ())
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut [Block]) -> anyhow::Result<T> + Send + 'static,
    ) -> Result<T, HashError> {
        let permit = match Arc::clone(&self.permits).try_acquire_owned() {
            Ok(permit) => permit,
            Err(TryAcquireError::Closed) => return Err(anyhow::anyhow!("password hasher closed").into()),
            Err(TryAcquireError::NoPermits) => {
                let _queued = Queued::join(&self.queued, self.queue_limit)?;
                Arc::clone(&self.permits).acquire_owned().await.context("password hasher closed")?
            }
        };
        let areas = Arc::clone(&self.areas);
        // The permit moves into the blocking task: a request cancelled meanwhile
        // (its client left, or it timed out) drops only the wait for the result,
        // while the hash runs on. Were the permit freed with the request, clients
        // that disconnect at once could start any number of hashes.
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let in_progress = gauge!(names::HASHES_IN_PROGRESS);
            in_progress.increment(1.0);
            let started = std::time::Instant::now();
            let taken = areas.lock().map_err(|_| anyhow::anyhow!("work areas poisoned"));
            let result = taken.and_then(|mut taken| {
                let mut area = taken.pop().unwrap_or_else(|| vec![Block::new(); PARAMS.block_count()]);
                drop(taken);
                let result = work(&mut area);
                areas.lock().map_err(|_| anyhow::anyhow!("work areas poisoned"))?.push(area);
                result
            });
            histogram!(names::HASH_DURATION).record(started.elapsed());
            in_progress.decrement(1.0);
            result
        })
        .await
        .context("password hashing task")?
        .map_err(HashError::Failed)
    }
}

/// A place in the queue for a permit, held while waiting; the count and the
/// `conduit_password_hashes_queued` gauge go down when it is dropped (the hash
/// got its permit, or its request went away).
struct Queued<'a>(&'a AtomicUsize);

impl<'a> Queued<'a> {
    /// Joins the queue, or sheds the hash when `limit` are already waiting.
    fn join(queued: &'a AtomicUsize, limit: usize) -> Result<Self, HashError> {
        // Increment first, then check: concurrent joiners cannot all pass one free place.
        if queued.fetch_add(1, Ordering::AcqRel) >= limit {
            queued.fetch_sub(1, Ordering::AcqRel);
            counter!(names::HASHES_SHED).increment(1);
            return Err(HashError::Shed);
        }
        gauge!(names::HASHES_QUEUED).increment(1.0);
        Ok(Self(queued))
    }
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
        gauge!(names::HASHES_QUEUED).decrement(1.0);
    }
}

/// `PASSWORD_HASH_QUEUE`: how many hashes may wait for a core before more are
/// shed; [`QUEUE_PER_CORE`] per core when unset.
pub fn queue_limit_from_lookup(get: &impl Fn(&str) -> Option<String>) -> Result<usize, ConfigError> {
    let Some(raw) = get("PASSWORD_HASH_QUEUE") else { return Ok(per_core() * QUEUE_PER_CORE) };
    raw.trim().parse::<usize>().ok().filter(|n| *n <= 100_000).ok_or_else(|| ConfigError {
        var: "PASSWORD_HASH_QUEUE",
        message: format!("`{raw}` is not a whole number from 0 to 100000"),
    })
}

/// One Argon2 computation per core at a time (the server's bound): the rest
/// wait for a permit.
pub fn per_core() -> usize {
    std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get)
}

/// Verifications per second when `concurrency` run at once for `duration`, on the
/// path a login takes (permit, blocking pool, pooled work area): the ceiling for a
/// login flood on this machine, which `bench/run` reports beside it.
pub async fn verification_rate(concurrency: usize, duration: std::time::Duration) -> anyhow::Result<f64> {
    let hasher = PasswordHasher::new(concurrency)?;
    let hash = hasher.hash(&Password::parse("rate of verification").map_err(anyhow::Error::msg)?).await?;
    let started = std::time::Instant::now();
    let mut runs = tokio::task::JoinSet::new();
    let start_one = |runs: &mut tokio::task::JoinSet<_>| {
        let (hasher, hash) = (hasher.clone(), hash.clone());
        runs.spawn(async move { hasher.verify("rate of verification", &hash).await });
    };
    // Twice as many in flight as permits, so that a permit never waits for a task.
    for _ in 0..concurrency * 2 {
        start_one(&mut runs);
    }
    let mut done = 0u32;
    while let Some(run) = runs.join_next().await {
        anyhow::ensure!(run??, "a verification failed");
        done += 1;
        if started.elapsed() < duration {
            start_one(&mut runs);
        }
    }
    Ok(f64::from(done) / started.elapsed().as_secs_f64())
}

fn random_salt() -> anyhow::Result<[u8; SALT_LEN]> {
    let mut salt = [0u8; SALT_LEN];
    getrandom::fill(&mut salt).map_err(|err| anyhow::anyhow!("random: {err}"))?;
    Ok(salt)
}

/// `$argon2id$v=19$m=19456,t=2,p=1$<salt>$<output>`
fn phc_string(salt: &[u8], output: &[u8]) -> anyhow::Result<String> {
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&PARAMS).map_err(|err| anyhow::anyhow!("params: {err}"))?,
        salt: Some(Salt::new(salt).map_err(|err| anyhow::anyhow!("salt: {err}"))?),
        hash: Some(Output::new(output).map_err(|err| anyhow::anyhow!("output: {err}"))?),
    };
    Ok(phc.to_string())
}

/// Recomputes `hash` for `password` with the parameters it records, in `area`
/// when they are ours (hashes made with other parameters get their own area),
/// and compares the outputs in constant time.
fn verify_with(password: &[u8], hash: &PasswordHash, area: &mut [Block]) -> anyhow::Result<bool> {
    let fail = |what: &str| anyhow::anyhow!("stored hash: {what}");
    let algorithm = Algorithm::try_from(hash.algorithm.as_str()).map_err(|_| fail("algorithm"))?;
    let version = match hash.version {
        Some(v) => Version::try_from(v).map_err(|_| fail("version"))?,
        None => Version::default(),
    };
    let params = Params::try_from(hash).map_err(|_| fail("parameters"))?;
    let salt = hash.salt.as_ref().ok_or_else(|| fail("no salt"))?;
    let expected = hash.hash.as_ref().ok_or_else(|| fail("no output"))?;
    let mut output = vec![0u8; expected.len()];
    let argon2 = Argon2::new(algorithm, version, params.clone());
    let computed = if params.block_count() == area.len() {
        argon2.hash_password_into_with_memory(password, salt.as_ref(), &mut output, area)
    } else {
        argon2.hash_password_into(password, salt.as_ref(), &mut output)
    };
    computed.map_err(|err| anyhow::anyhow!("argon2 verify: {err}"))?;
    // `Output`'s equality is constant-time.
    Ok(Output::new(&output).map_err(|_| fail("output length"))? == *expected)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_hash_verifies_its_password_and_nothing_else() {
        let hasher = PasswordHasher::new(2).expect("hasher");
        let password = Password::parse("correct horse battery").expect("valid");
        let hash = hasher.hash(&password).await.expect("hashes");
        assert!(hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{hash}");
        assert!(hasher.verify("correct horse battery", &hash).await.expect("verifies"));
        assert!(!hasher.verify("wrong horse battery", &hash).await.expect("verifies"));
    }

    #[tokio::test]
    async fn a_cancelled_hash_holds_its_permit_until_the_work_is_done() {
        let hasher = PasswordHasher::new(1).expect("hasher");
        let (started, has_started) = std::sync::mpsc::channel();
        let (finish, may_finish) = std::sync::mpsc::channel::<()>();
        let running = hasher.clone();
        let request = tokio::spawn(async move {
            running
                .run(move |_| {
                    started.send(()).expect("test waits");
                    may_finish.recv().map_err(anyhow::Error::new)
                })
                .await
        });
        let wait = std::time::Duration::from_secs(10);
        tokio::task::spawn_blocking(move || has_started.recv_timeout(wait)).await.expect("joins").expect("work starts");

        // The request goes away (its client left), while the work still runs.
        request.abort();
        assert!(request.await.expect_err("aborted").is_cancelled());
        assert_eq!(hasher.permits.available_permits(), 0, "a second hash could start beside the running one");

        finish.send(()).expect("work waits");
        let permit = tokio::time::timeout(wait, hasher.permits.acquire()).await.expect("the permit comes back");
        drop(permit.expect("open"));
        assert_eq!(hasher.areas.lock().expect("not poisoned").len(), 1, "the work area is kept for the next hash");
    }

    #[tokio::test]
    async fn a_hash_beyond_a_full_queue_is_shed_at_once_and_the_queue_frees_its_places() {
        let hasher = PasswordHasher::with_queue(1, 1).expect("hasher");
        let (finish, may_finish) = std::sync::mpsc::channel::<()>();
        let running = hasher.clone();
        let busy =
            tokio::spawn(async move { running.run(move |_| may_finish.recv().map_err(anyhow::Error::new)).await });
        let wait = std::time::Duration::from_secs(10);
        let taken = async {
            while hasher.permits.available_permits() > 0 {
                tokio::task::yield_now().await;
            }
        };
        tokio::time::timeout(wait, taken).await.expect("the first hash takes the permit");
        let queued = hasher.clone();
        let waiting = tokio::spawn(async move { queued.run(|_| Ok(())).await });
        let joined = async {
            while hasher.queued() < 1 {
                tokio::task::yield_now().await;
            }
        };
        tokio::time::timeout(wait, joined).await.expect("the second hash queues");

        let third = tokio::time::timeout(wait, hasher.run(|_| Ok(()))).await.expect("answered at once");
        assert!(matches!(third, Err(HashError::Shed)), "{third:?}");

        finish.send(()).expect("work waits");
        busy.await.expect("joins").expect("the first hash ends");
        waiting.await.expect("joins").expect("the queued hash runs");
        assert_eq!(hasher.queued(), 0);
        hasher.run(|_| Ok(())).await.expect("a place is free again");
    }

    #[test]
    fn the_queue_bound_is_per_core_by_default_and_a_bad_value_names_its_variable() {
        let unset = queue_limit_from_lookup(&|_: &str| None).expect("default");
        assert_eq!(unset, per_core() * QUEUE_PER_CORE);
        assert_eq!(queue_limit_from_lookup(&|_: &str| Some(" 0 ".to_owned())).expect("no queue at all"), 0);
        for bad in ["-1", "many", "100001"] {
            let err = queue_limit_from_lookup(&|_: &str| Some(bad.to_owned())).expect_err(bad);
            assert_eq!(err.var, "PASSWORD_HASH_QUEUE");
        }
    }

    #[tokio::test]
    async fn hashing_the_same_password_twice_uses_different_salts() {
        let hasher = PasswordHasher::new(1).expect("hasher");
        let password = Password::parse("same password").expect("valid");
        let a = hasher.hash(&password).await.expect("hashes");
        let b = hasher.hash(&password).await.expect("hashes");
        assert_ne!(a, b);
    }

    #[tokio::test]
    async fn an_unknown_account_still_costs_a_verification() {
        let hasher = PasswordHasher::new(1).expect("hasher");
        hasher.verify_dummy("anything at all").await.expect("runs");
        assert!(hasher.dummy.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{}", hasher.dummy);
    }

    #[tokio::test]
    async fn hashes_made_by_the_argon2_crate_itself_still_verify() {
        use argon2::PasswordHasher as _;
        let hasher = PasswordHasher::new(1).expect("hasher");
        let ours = Argon2::new(Algorithm::Argon2id, Version::V0x13, PARAMS)
            .hash_password(b"stored before the pool")
            .expect("hashes")
            .to_string();
        assert!(hasher.verify("stored before the pool", &ours).await.expect("verifies"));
        assert!(!hasher.verify("stored before the poo1", &ours).await.expect("verifies"));
    }

    #[tokio::test]
    async fn hashes_with_other_parameters_verify_in_their_own_work_area() {
        use argon2::PasswordHasher as _;
        let hasher = PasswordHasher::new(1).expect("hasher");
        let params = Params::new(64, 1, 1, Some(16)).expect("params");
        let small = Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password(b"cheaper params")
            .expect("hashes")
            .to_string();
        assert!(small.starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "{small}");
        assert!(hasher.verify("cheaper params", &small).await.expect("verifies"));
        assert!(!hasher.verify("cheaper param", &small).await.expect("verifies"));
    }

    #[tokio::test]
    async fn concurrent_hashes_reuse_at_most_one_work_area_per_permit() {
        let hasher = PasswordHasher::new(2).expect("hasher");
        let password = Password::parse("many at once").expect("valid");
        let mut runs = tokio::task::JoinSet::new();
        for _ in 0..6 {
            let (hasher, password) = (hasher.clone(), password.clone());
            runs.spawn(async move { hasher.hash(&password).await });
        }
        for hash in runs.join_all().await {
            assert!(hasher.verify("many at once", &hash.expect("hashes")).await.expect("verifies"));
        }
        let areas = hasher.areas.lock().expect("lock");
        assert!((1..=2).contains(&areas.len()), "{} work areas", areas.len());
        assert!(areas.iter().all(|area| area.len() == PARAMS.block_count()));
    }
}
