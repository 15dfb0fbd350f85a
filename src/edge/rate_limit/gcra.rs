//! GCRA, the generic cell rate algorithm: a token bucket kept as one number per
//! key, its theoretical arrival time (TAT), and the in-process store of those
//! numbers.
//!
//! A quota of `q` requests per window of `w` becomes one request every
//! `T = w / q` (the emission interval), with bursts of up to `q`: a request is
//! allowed when, after adding `T` to the key's TAT, the TAT is at most `q · T`
//! ahead of now. A key whose TAT is in the past has its whole quota back and can
//! be forgotten, which is what keeps the store bounded.
//!
//! Time is in whole microseconds, in the store and in the Redis script alike
//! (`redis.lua`), so that both count exactly the same way; `T` is rounded down
//! to a whole microsecond and the capacity is `q · T`, so a burst is exactly `q`.

use std::{
    collections::HashMap,
    hash::{BuildHasher, Hash, RandomState},
    sync::Mutex,
    time::Instant,
};

/// A quota: `quota` requests per `window_us` microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub quota: u64,
    pub window_secs: u64,
    /// `T`: the time one request's share takes to come back.
    pub interval_us: u64,
}

impl Rate {
    /// `None` when the quota is 0 or larger than the window in microseconds.
    pub fn new(quota: u64, window_secs: u64) -> Option<Self> {
        let interval_us = window_secs.checked_mul(1_000_000)?.checked_div(quota)?;
        (interval_us > 0).then_some(Self { quota, window_secs, interval_us })
    }

    /// `q · T`: how far ahead of now a TAT may be.
    pub fn capacity_us(&self) -> u64 {
        self.interval_us * self.quota
    }
}

/// What a request gets from one policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// Requests still available now (the `r` of the `RateLimit` header).
    pub remaining: u64,
    /// Microseconds until one more request is available: within it the client
    /// can use no more than `remaining`, and, when refused, how long to wait
    /// (`Retry-After`). It is the `t` of the `RateLimit` header, draft -11's
    /// "effective window": the seconds "within which the client can use no more
    /// than the available quota". Not the time until the whole quota is back:
    /// within that, units come back one by one and more than `remaining` can be used.
    pub wait_us: u64,
}

impl Decision {
    /// The decision for a key whose TAT is `ahead_us` past now once the request
    /// is counted (or, when refused, left as it was).
    pub fn from_ahead(rate: Rate, allowed: bool, ahead_us: u64) -> Self {
        let capacity = rate.capacity_us();
        let remaining = capacity.saturating_sub(ahead_us) / rate.interval_us;
        let wait_us = (ahead_us + (remaining + 1) * rate.interval_us).saturating_sub(capacity);
        Self { allowed, remaining, wait_us }
    }

    /// Whole seconds, rounded up, as the headers want them.
    pub fn wait_secs(&self) -> u64 {
        self.wait_us.div_ceil(1_000_000)
    }
}

/// One GCRA step: the decision, and the key's new TAT when the request is allowed.
pub fn step(rate: Rate, tat_us: u64, now_us: u64) -> (Decision, Option<u64>) {
    let base = tat_us.max(now_us);
    let new_tat = base + rate.interval_us;
    if new_tat - now_us <= rate.capacity_us() {
        (Decision::from_ahead(rate, true, new_tat - now_us), Some(new_tat))
    } else {
        (Decision::from_ahead(rate, false, base - now_us), None)
    }
}

/// Microseconds on a monotonic clock that starts with the process.
#[derive(Debug, Clone, Copy)]
pub struct Clock(Instant);

impl Clock {
    pub fn new() -> Self {
        Self(Instant::now())
    }

    pub fn now_us(&self) -> u64 {
        // Starts at 1 s, so that 0 can mean "no TAT" and never collides with a real one.
        u64::try_from(self.0.elapsed().as_micros()).unwrap_or(u64::MAX) + 1_000_000
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

const SHARDS: usize = 64;
/// A shard is swept of expired keys once it holds this many, or twice as many
/// as were left at its last sweep: amortised O(1) per request, and memory bounded
/// by twice the number of keys active within the longest window.
const FIRST_SWEEP: usize = 1024;

/// Keys with a deadline in microseconds (a TAT, or when a remembered fact
/// expires), spread over mutex-guarded shards so that concurrent requests for
/// different keys rarely wait for one another. Each lock is held for one map
/// operation, never across an `.await`.
#[derive(Debug)]
pub struct ExpiringMap<K> {
    shards: Box<[Mutex<Shard<K>>]>,
    hasher: RandomState,
}

#[derive(Debug)]
struct Shard<K> {
    deadlines: HashMap<K, u64, RandomState>,
    sweep_at: usize,
}

impl<K: Hash + Eq> ExpiringMap<K> {
    pub fn new() -> Self {
        let hasher = RandomState::new();
        let shards = (0..SHARDS)
            .map(|_| Mutex::new(Shard { deadlines: HashMap::with_hasher(hasher.clone()), sweep_at: FIRST_SWEEP }))
            .collect();
        Self { shards, hasher }
    }

    fn shard(&self, key: &K) -> std::sync::MutexGuard<'_, Shard<K>> {
        let index = usize::try_from(self.hasher.hash_one(key)).unwrap_or_default() % SHARDS;
        // A panic while a lock was held cannot leave a deadline half-written.
        self.shards[index].lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// One GCRA step for `key` at `now_us`.
    pub fn gcra(&self, key: K, rate: Rate, now_us: u64) -> Decision {
        let mut shard = self.shard(&key);
        let tat = shard.deadlines.get(&key).copied().unwrap_or(0);
        let (decision, new_tat) = step(rate, tat, now_us);
        if let Some(new_tat) = new_tat {
            shard.deadlines.insert(key, new_tat);
            shard.sweep_if_due(now_us);
        }
        decision
    }

    /// Remembers `key` until `until_us`, unless its shard holds `max_per_shard`
    /// live keys already (then nothing is remembered, and `false` returned).
    pub fn remember(&self, key: K, until_us: u64, now_us: u64, max_per_shard: usize) -> bool {
        let mut shard = self.shard(&key);
        if shard.deadlines.len() >= max_per_shard && !shard.deadlines.contains_key(&key) {
            shard.sweep(now_us);
            if shard.deadlines.len() >= max_per_shard {
                return false;
            }
        }
        shard.deadlines.insert(key, until_us);
        shard.sweep_if_due(now_us);
        true
    }

    /// Whether `key` is remembered at `now_us`.
    pub fn contains(&self, key: &K, now_us: u64) -> bool {
        self.shard(key).deadlines.get(key).is_some_and(|until| *until > now_us)
    }

    /// Keys held, expired or not (for tests of the bound).
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().unwrap_or_else(std::sync::PoisonError::into_inner).deadlines.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<K: Hash + Eq> Default for ExpiringMap<K> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Hash + Eq> Shard<K> {
    fn sweep_if_due(&mut self, now_us: u64) {
        if self.deadlines.len() >= self.sweep_at {
            self.sweep(now_us);
        }
    }

    /// Drops expired keys; when a spike has passed (under a quarter of the table
    /// is used), gives the table's memory back, keeping room to double.
    fn sweep(&mut self, now_us: u64) {
        self.deadlines.retain(|_, deadline| *deadline > now_us);
        let len = self.deadlines.len();
        if len < self.deadlines.capacity() / 4 {
            self.deadlines.shrink_to((len * 2).max(FIRST_SWEEP));
        }
        self.sweep_at = (len * 2).max(FIRST_SWEEP);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: u64 = 1_000_000;

    #[test]
    fn a_burst_of_the_quota_is_allowed_then_one_request_per_interval() {
        let rate = Rate::new(3, 60).expect("valid");
        assert_eq!(rate.interval_us, 20 * SECOND);
        let map = ExpiringMap::new();
        let now = 100 * SECOND;
        let remaining: Vec<_> = (0..3).map(|_| map.gcra("k", rate, now)).map(|d| (d.allowed, d.remaining)).collect();
        assert_eq!(remaining, [(true, 2), (true, 1), (true, 0)]);
        let refused = map.gcra("k", rate, now);
        assert!(!refused.allowed);
        assert_eq!((refused.remaining, refused.wait_secs()), (0, 20));
        // 5 s later: 15 s to wait; 20 s later, one more request.
        assert_eq!(map.gcra("k", rate, now + 5 * SECOND).wait_secs(), 15);
        let again = map.gcra("k", rate, now + 20 * SECOND);
        assert!(again.allowed);
        assert_eq!(again.remaining, 0);
        // Another key has its own budget.
        assert!(map.gcra("other", rate, now).allowed);
    }

    #[test]
    fn the_wait_is_the_time_until_one_more_request_is_available() {
        let rate = Rate::new(10, 10).expect("valid");
        let (first, tat) = step(rate, 0, 50 * SECOND);
        assert_eq!((first.remaining, first.wait_us), (9, SECOND));
        // Half an interval later, the used share has half come back.
        let (second, _) = step(rate, tat.expect("allowed"), 50 * SECOND + SECOND / 2);
        assert_eq!((second.remaining, second.wait_us), (8, SECOND / 2));
        assert_eq!(second.wait_secs(), 1);
    }

    #[test]
    fn rates_refuse_a_zero_quota_and_quotas_finer_than_a_microsecond() {
        assert!(Rate::new(0, 60).is_none());
        assert!(Rate::new(2_000_000, 1).is_none());
        assert!(Rate::new(1_000_000, 1).is_some());
    }

    #[test]
    fn expired_keys_are_swept_so_the_map_stays_bounded() {
        let rate = Rate::new(1, 1).expect("valid");
        let map = ExpiringMap::new();
        let mut now = 10 * SECOND;
        for i in 0..100_000u64 {
            map.gcra(i, rate, now);
            now += 100; // 100 µs apart: each key is idle again after 1 s.
        }
        // 10 s of keys, of which the last second's are live.
        assert!(map.len() < 2 * SHARDS * FIRST_SWEEP + 2 * 10_000, "{} keys held", map.len());
    }

    #[test]
    fn a_sweep_after_a_spike_gives_the_memory_back() {
        let mut shard = Shard { deadlines: HashMap::with_hasher(RandomState::new()), sweep_at: FIRST_SWEEP };
        for i in 0..100_000u64 {
            shard.deadlines.insert(i, if i < 10 { 10 * SECOND } else { SECOND });
        }
        let spike = shard.deadlines.capacity();
        assert!(spike >= 100_000);
        shard.sweep(2 * SECOND);
        assert_eq!(shard.deadlines.len(), 10);
        assert!(shard.deadlines.capacity() < spike / 16, "{} of {spike} kept", shard.deadlines.capacity());
        assert!(shard.deadlines.capacity() >= FIRST_SWEEP, "room for the next sweep's worth");
        assert_eq!(shard.sweep_at, FIRST_SWEEP);
    }

    #[test]
    fn remembered_keys_expire() {
        let map = ExpiringMap::new();
        assert!(map.remember(("acct", 1), 5 * SECOND, SECOND, 10));
        assert!(map.contains(&("acct", 1), 4 * SECOND));
        assert!(!map.contains(&("acct", 1), 5 * SECOND));
        assert!(!map.contains(&("acct", 2), SECOND));
    }

    #[test]
    fn remembering_stops_at_the_bound_until_keys_expire() {
        let map = ExpiringMap::new();
        let remembered = (0..SHARDS as u64 * 10).filter(|i| map.remember(*i, 5 * SECOND, SECOND, 2)).count();
        assert!(remembered <= 2 * SHARDS, "{remembered} remembered");
        assert!(map.len() <= 2 * SHARDS);
        // Once they have expired, there is room again.
        assert!(map.remember(u64::MAX, 10 * SECOND, 6 * SECOND, 2));
    }
}
