//! Budgets in Redis, shared by every instance: one GCRA step is one script call
//! (`gcra.lua`), atomic, on one multiplexed connection that reconnects by itself.
//!
//! When Redis does not answer within the timeout, or answers with an error, the
//! request is decided by the in-process store instead (the caller's fallback),
//! and for the next second no request waits for Redis: then one tries again.
//! The outage is logged when it starts and when it ends, not per request, and
//! every decision made in-process meanwhile is counted in
//! `conduit_rate_limit_backend_fallbacks_total`.

use std::{
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
    time::Duration,
};

use redis::{
    Client, Script,
    aio::{ConnectionManager, ConnectionManagerConfig},
};
use secrecy::ExposeSecret as _;

use super::{
    Policy,
    config::RedisConfig,
    gcra::{Clock, Decision, Rate},
    store::{AccountId, Subject},
    throttle::{Throttle, ThrottleKey},
};

/// How long Redis is left alone after a failure.
const RETRY_AFTER_US: u64 = 1_000_000;

/// How many addresses Redis remembers per account (the most recent logins'):
/// what bounds the known addresses there.
const KNOWN_PER_ACCOUNT: u64 = 20;

pub struct RedisStore {
    connection: ConnectionManager,
    script: Script,
    remember_script: Script,
    throttle_script: Script,
    prefix: String,
    timeout: Duration,
    clock: Clock,
    /// No request asks Redis before this time (µs on `clock`).
    retry_at_us: AtomicU64,
    down: AtomicBool,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore").field("prefix", &self.prefix).field("timeout", &self.timeout).finish()
    }
}

impl RedisStore {
    /// Prepares the connection without opening it (it opens with the first
    /// request, and a Redis that is down at start-up is an outage like any other).
    /// Must be called within a Tokio runtime.
    pub fn new(config: &RedisConfig) -> anyhow::Result<Self> {
        let client = Client::open(config.url.expose_secret())
            .map_err(|err| anyhow::anyhow!("REDIS_URL is not a valid Redis URL: {err}"))?;
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.timeout))
            .set_response_timeout(Some(config.timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1));
        let connection = ConnectionManager::new_lazy_with_config(client, manager_config)
            .map_err(|err| anyhow::anyhow!("cannot prepare the Redis connection: {err}"))?;
        Ok(Self {
            connection,
            script: Script::new(include_str!("gcra.lua")),
            remember_script: Script::new(include_str!("known.lua")),
            throttle_script: Script::new(include_str!("throttle.lua")),
            prefix: config.prefix.clone(),
            timeout: config.timeout,
            clock: Clock::new(),
            retry_at_us: AtomicU64::new(0),
            down: AtomicBool::new(false),
        })
    }

    /// The account's known addresses. The hex in braces is a Redis Cluster hash
    /// tag, the same as in its bucket's key (`login-account:e:{<hex>}`): a script
    /// given both keys needs them in one slot.
    fn known_key(&self, account: AccountId) -> String {
        format!("{}known:{{{account}}}", self.prefix)
    }

    /// One GCRA step for `subject` under `policy`, exempt when `exempt_if_known`
    /// names an address known for its account. `None` when Redis cannot answer
    /// (the caller decides in-process); `Some(None)` when exempt.
    pub async fn check(
        &self,
        policy: Policy,
        subject: Subject,
        exempt_if_known: Option<(AccountId, Subject)>,
        rate: Rate,
    ) -> Option<Option<Decision>> {
        let key = format!("{}{}:{subject}", self.prefix, policy.name());
        let mut invocation = self.script.key(key);
        invocation.arg(rate.interval_us).arg(rate.quota);
        if let Some((account, address)) = exempt_if_known {
            invocation.key(self.known_key(account)).arg(address.to_string());
        }
        let (outcome, ahead) = self.call(invocation.invoke_async::<(i64, u64)>(&mut self.connection.clone())).await?;
        match outcome {
            2 => Some(None),
            allowed => Some(Some(Decision::from_ahead(rate, allowed == 1, ahead))),
        }
    }

    /// Remembers that `address` logged into `account`, for `ttl`.
    pub async fn remember(&self, account: AccountId, address: Subject, ttl: Duration) {
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        let mut invocation = self.remember_script.key(self.known_key(account));
        invocation.arg(address.to_string()).arg(ttl_ms).arg(KNOWN_PER_ACCOUNT);
        let _: Option<i64> = self.call(invocation.invoke_async(&mut self.connection.clone())).await;
    }

    /// Counts a login attempt against `key`'s throttle (`throttle.lua`). `None`
    /// when Redis cannot answer; `Some(None)` when exempt (`known_for`).
    pub async fn throttle(
        &self,
        key: ThrottleKey,
        known_for: Option<(AccountId, Subject)>,
        throttle: &Throttle,
    ) -> Option<Option<Result<(), u64>>> {
        let mut invocation = self.throttle_script.key(format!("{}{}", self.prefix, key.redis_suffix()));
        invocation
            .arg(throttle.free)
            .arg(u64::try_from(throttle.base.as_micros()).unwrap_or(u64::MAX))
            .arg(u64::try_from(throttle.cap.as_micros()).unwrap_or(u64::MAX))
            .arg(u64::try_from(throttle.decay.as_millis()).unwrap_or(u64::MAX));
        if let Some((account, address)) = known_for {
            invocation.key(self.known_key(account)).arg(address.to_string());
        }
        let (outcome, wait) = self.call(invocation.invoke_async::<(i64, u64)>(&mut self.connection.clone())).await?;
        Some(match outcome {
            2 => None,
            1 => Some(Ok(())),
            _ => Some(Err(wait)),
        })
    }

    /// A successful login: `key`'s throttle starts afresh.
    pub async fn reset_throttle(&self, key: ThrottleKey) {
        let name = format!("{}{}", self.prefix, key.redis_suffix());
        let _: Option<i64> = self.call(redis::cmd("DEL").arg(name).query_async(&mut self.connection.clone())).await;
    }

    /// Runs `request` unless Redis is resting after a failure, within the
    /// timeout; logs the outage's start and end.
    async fn call<T>(&self, request: impl Future<Output = redis::RedisResult<T>>) -> Option<T> {
        let now = self.clock.now_us();
        if now < self.retry_at_us.load(Ordering::Relaxed) {
            return None;
        }
        let error = match tokio::time::timeout(self.timeout, request).await {
            Ok(Ok(value)) => {
                if self.down.swap(false, Ordering::Relaxed) {
                    tracing::info!("Redis answers again: rate limits are shared again");
                }
                return Some(value);
            }
            Ok(Err(err)) => err.to_string(),
            Err(_) => format!("no answer within {} ms", self.timeout.as_millis()),
        };
        self.retry_at_us.store(now + RETRY_AFTER_US, Ordering::Relaxed);
        if !self.down.swap(true, Ordering::Relaxed) {
            tracing::warn!(%error, "Redis is unavailable: rate limits are kept in this process until it answers");
        }
        None
    }
}
