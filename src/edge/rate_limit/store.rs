//! Where budgets are kept: in this process, or in Redis shared by every
//! instance with this process's store as the fallback while Redis cannot answer.

use std::{
    fmt,
    net::{IpAddr, Ipv6Addr},
    time::Duration,
};

use sha2::{Digest as _, Sha256};

use super::{
    Policy,
    gcra::{Clock, Decision, ExpiringMap, Rate},
    redis::RedisStore,
    throttle::{Throttle, ThrottleKey, ThrottleMap},
};

/// Whose budget a request is charged to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Subject {
    /// A client address; an IPv6 one cut to its /64, which one host commonly owns whole.
    Address(IpAddr),
    /// A request with no known peer (a router called in-process, without
    /// `ConnectInfo`): all such requests share one budget.
    UnknownAddress,
    User(i64),
    /// An account, by a digest of its email.
    Account(AccountId),
}

impl Subject {
    pub fn address(ip: Option<IpAddr>) -> Self {
        match ip.map(|ip| ip.to_canonical()) {
            Some(IpAddr::V6(v6)) => Self::Address(IpAddr::V6(Ipv6Addr::from(u128::from(v6) & (u128::MAX << 64)))),
            Some(v4) => Self::Address(v4),
            None => Self::UnknownAddress,
        }
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Address(ip) => write!(f, "a:{ip}"),
            Self::UnknownAddress => f.write_str("a:unknown"),
            Self::User(id) => write!(f, "u:{id}"),
            // In braces: the Redis Cluster hash tag its known addresses share.
            Self::Account(account) => write!(f, "e:{{{account}}}"),
        }
    }
}

/// The first 16 bytes of the SHA-256 of an email as logins match it (trimmed,
/// lower-cased): the same on every instance, and no address in Redis's keys.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct AccountId([u8; 16]);

impl AccountId {
    pub fn of_email(email: &str) -> Self {
        let mut hasher = Sha256::new();
        for c in email.trim().chars().flat_map(char::to_lowercase) {
            let mut buf = [0; 4];
            hasher.update(c.encode_utf8(&mut buf).as_bytes());
        }
        let digest = hasher.finalize();
        let mut id = [0; 16];
        id.copy_from_slice(&digest[..16]);
        Self(id)
    }
}

impl fmt::Display for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AccountId({self})")
    }
}

/// How many (account, address) pairs a shard of the in-process store keeps:
/// 64 × 4,096 = 262,144 at most (about 20 MB). When full, a new pair is not
/// remembered (its logins stay under the account's budget) until pairs expire.
const KNOWN_PER_SHARD: usize = 4096;

/// The budgets of this process.
#[derive(Debug, Default)]
pub struct LocalStore {
    clock: Clock,
    buckets: ExpiringMap<(Policy, Subject)>,
    /// Addresses that logged into an account lately.
    known: ExpiringMap<(AccountId, Subject)>,
    known_full_warned: std::sync::atomic::AtomicBool,
    /// Login throttling's counters.
    throttles: ThrottleMap,
}

impl LocalStore {
    pub(super) fn check(&self, policy: Policy, subject: Subject, rate: Rate) -> Decision {
        self.buckets.gcra((policy, subject), rate, self.clock.now_us())
    }

    fn is_known(&self, account: AccountId, address: Subject) -> bool {
        self.known.contains(&(account, address), self.clock.now_us())
    }

    fn remember(&self, account: AccountId, address: Subject, ttl: Duration) {
        let now = self.clock.now_us();
        let ttl = u64::try_from(ttl.as_micros()).unwrap_or(u64::MAX);
        if !self.known.remember((account, address), now.saturating_add(ttl), now, KNOWN_PER_SHARD)
            && !self.known_full_warned.swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            tracing::warn!("the in-process list of known login addresses is full: new ones are not remembered");
        }
    }

    /// Keys held (for tests of the bound).
    pub fn len(&self) -> usize {
        self.buckets.len() + self.known.len() + self.throttles.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The store the limiter uses.
#[derive(Debug)]
pub struct Store {
    pub local: LocalStore,
    pub redis: Option<RedisStore>,
    /// `conduit_rate_limit_backend_fallbacks_total`: a decision made in this
    /// process because Redis could not answer (a handle, taken once: it is
    /// counted on every request while Redis is away).
    fallbacks: metrics::Counter,
}

impl Store {
    /// Takes the metrics handle from the recorder installed now.
    pub fn new(local: LocalStore, redis: Option<RedisStore>) -> Self {
        Self { local, redis, fallbacks: metrics::counter!("conduit_rate_limit_backend_fallbacks_total") }
    }

    /// Charges one request to `subject`'s budget under `policy`.
    pub async fn check(&self, policy: Policy, subject: Subject, rate: Rate) -> Decision {
        if let Some(redis) = &self.redis {
            match redis.check(policy, subject, None, rate).await {
                Some(Some(decision)) => return decision,
                Some(None) => {} // exempt: only asked of account budgets
                None => self.fallbacks.increment(1),
            }
        }
        self.local.check(policy, subject, rate)
    }

    /// Charges one login attempt to `account`'s budget, unless `address` logged
    /// into it lately (`None`: exempt).
    pub async fn check_account(&self, account: AccountId, address: Subject, rate: Rate) -> Option<Decision> {
        if let Some(redis) = &self.redis {
            match redis.check(Policy::LoginAccount, Subject::Account(account), Some((account, address)), rate).await {
                Some(decision) => return decision,
                None => self.fallbacks.increment(1),
            }
        }
        if self.local.is_known(account, address) {
            return None;
        }
        Some(self.local.check(Policy::LoginAccount, Subject::Account(account), rate))
    }

    /// Counts a login attempt against `key`'s throttle: `Ok(())` when allowed,
    /// `Err(µs to wait)` when refused; `None` when exempt (an account's key,
    /// from an address known for it: `known_for`).
    pub async fn throttle(
        &self,
        key: ThrottleKey,
        known_for: Option<(AccountId, Subject)>,
        throttle: &Throttle,
    ) -> Option<Result<(), u64>> {
        if let Some(redis) = &self.redis {
            match redis.throttle(key, known_for, throttle).await {
                Some(outcome) => return outcome,
                None => self.fallbacks.increment(1),
            }
        }
        if let Some((account, address)) = known_for
            && self.local.is_known(account, address)
        {
            return None;
        }
        Some(self.local.throttles.attempt(key, throttle, self.local.clock.now_us()))
    }

    /// A successful login: `key`'s throttle starts afresh.
    pub async fn reset_throttle(&self, key: ThrottleKey) {
        self.local.throttles.reset(&key);
        if let Some(redis) = &self.redis {
            redis.reset_throttle(key).await;
        }
    }

    /// Remembers that `address` logged into `account`, for `ttl`.
    pub async fn remember(&self, account: AccountId, address: Subject, ttl: Duration) {
        if ttl.is_zero() {
            return;
        }
        // Kept here too: while Redis is away, the fallback knows the address.
        self.local.remember(account, address, ttl);
        if let Some(redis) = &self.redis {
            redis.remember(account, address, ttl).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_clients_are_counted_by_their_64_and_mapped_ones_as_ipv4() {
        let a = Subject::address(Some("2001:db8:1:2:aaaa::1".parse().expect("ip")));
        let b = Subject::address(Some("2001:db8:1:2:bbbb::9".parse().expect("ip")));
        let c = Subject::address(Some("2001:db8:1:3::1".parse().expect("ip")));
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a.to_string(), "a:2001:db8:1:2::");
        let mapped = Subject::address(Some("::ffff:203.0.113.7".parse().expect("ip")));
        assert_eq!(mapped.to_string(), "a:203.0.113.7");
        assert_eq!(Subject::address(None).to_string(), "a:unknown");
    }

    #[test]
    fn an_account_is_its_email_as_logins_match_it() {
        let id = AccountId::of_email("  Jake@Example.COM ");
        assert_eq!(id, AccountId::of_email("jake@example.com"));
        assert_ne!(id, AccountId::of_email("jane@example.com"));
        assert_eq!(id.to_string().len(), 32);
        assert!(!format!("{id:?}").contains("jake"));
        assert_eq!(Subject::Account(id).to_string(), format!("e:{{{id}}}"), "a Redis Cluster hash tag");
    }
}
