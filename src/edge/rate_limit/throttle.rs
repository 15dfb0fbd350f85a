//! Login throttling: failed logins slow down, per client address and per
//! account, with a delay that doubles with each attempt past a few free ones,
//! and a successful login resets it (docs/operations/rate-limits.md, "Login
//! throttling").
//!
//! Each key keeps two numbers: the attempts since its last successful login,
//! and the time before which no attempt is allowed. An attempt is counted when
//! it is allowed, before the password is checked, and sets that time at once:
//! so parallel attempts cannot slip through while the first is being checked.
//! An attempt before that time is refused (429) without a password check. A
//! successful login deletes the key; a key with no attempt for
//! [`Throttle::decay`] is forgotten.
//!
//! The account's key is only counted for addresses not known for the account
//! (the known-address rule of the `login-account` budget), so an attacker
//! cannot slow its owner down on the addresses they log in from.

use std::{
    collections::HashMap,
    hash::{BuildHasher as _, RandomState},
    sync::Mutex,
    time::Duration,
};

use super::store::{AccountId, Subject};

/// The throttle's settings (`LOGIN_THROTTLE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttle {
    /// Attempts allowed without delay since the last successful login.
    pub free: u32,
    /// The delay after the first attempt past them; it doubles with each next one.
    pub base: Duration,
    /// The longest delay.
    pub cap: Duration,
    /// A key with no attempt for this long is forgotten.
    pub decay: Duration,
}

impl Default for Throttle {
    /// After 3 attempts without a success: 1 s before the next, then 2 s, 4 s,
    /// … up to 1 min; forgotten after 15 min without an attempt.
    fn default() -> Self {
        Self {
            free: 3,
            base: Duration::from_secs(1),
            cap: Duration::from_secs(60),
            decay: Duration::from_secs(15 * 60),
        }
    }
}

impl Throttle {
    /// `off` (`None`), or `<free attempts>/<first delay>/<longest delay>`, the
    /// delays in seconds or with a unit `ms`, `s` or `m`: `3/1s/1m`.
    pub fn parse(text: &str) -> Result<Option<Self>, String> {
        let text = text.trim();
        if text.eq_ignore_ascii_case("off") {
            return Ok(None);
        }
        let bad = || format!("`{text}` is neither `off` nor like `3/1s/1m` (free attempts/first delay/longest delay)");
        let mut parts = text.split('/');
        let (Some(free), Some(base), Some(cap), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return Err(bad());
        };
        let free: u32 = free.trim().parse().map_err(|_| bad())?;
        let (base, cap) = (duration(base).ok_or_else(bad)?, duration(cap).ok_or_else(bad)?);
        if base.is_zero() || cap < base || cap > Duration::from_secs(3600) {
            return Err(format!("{}: the first delay must be above 0 and at most the longest, at most 1h", bad()));
        }
        Ok(Some(Self { free, base, cap, ..Self::default() }))
    }

    /// The delay set by the `attempts`-th attempt since the last success.
    pub fn delay_us(&self, attempts: u32) -> u64 {
        if attempts < self.free.max(1) {
            return 0;
        }
        let doublings = (attempts - self.free.max(1)).min(40);
        let base = u64::try_from(self.base.as_micros()).unwrap_or(u64::MAX);
        let cap = u64::try_from(self.cap.as_micros()).unwrap_or(u64::MAX);
        base.saturating_mul(1 << doublings).min(cap)
    }

    pub fn decay_us(&self) -> u64 {
        u64::try_from(self.decay.as_micros()).unwrap_or(u64::MAX)
    }
}

fn duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let digits = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    let number: u64 = number.parse().ok()?;
    match unit.trim() {
        "ms" => Some(Duration::from_millis(number)),
        "" | "s" => Some(Duration::from_secs(number)),
        "m" => number.checked_mul(60).map(Duration::from_secs),
        _ => None,
    }
}

/// Whose attempts a counter holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ThrottleKey {
    Address(Subject),
    Account(AccountId),
}

impl ThrottleKey {
    /// The key's name after the prefix: the account's keeps the braces of its
    /// Redis Cluster hash tag, the slot of its known addresses.
    pub fn redis_suffix(&self) -> String {
        match self {
            Self::Address(subject) => format!("throttle:{subject}"),
            Self::Account(account) => format!("throttle:{}", Subject::Account(*account)),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    attempts: u32,
    next_at_us: u64,
    expires_us: u64,
}

const SHARDS: usize = 64;
/// At most 64 × 4,096 = 262,144 keys (about 15 MB). When a shard is full of
/// live keys, a new key is not counted (its attempts are not slowed down, and
/// the budgets still hold them) until others decay.
const PER_SHARD: usize = 4096;

/// The in-process counters: mutex-guarded shards, each lock held for one
/// map operation.
#[derive(Debug)]
pub struct ThrottleMap {
    shards: Box<[Mutex<HashMap<ThrottleKey, Entry>>]>,
    hasher: RandomState,
}

impl Default for ThrottleMap {
    fn default() -> Self {
        Self { shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(), hasher: RandomState::new() }
    }
}

impl ThrottleMap {
    fn shard(&self, key: &ThrottleKey) -> std::sync::MutexGuard<'_, HashMap<ThrottleKey, Entry>> {
        let index = usize::try_from(self.hasher.hash_one(key)).unwrap_or_default() % SHARDS;
        self.shards[index].lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Counts an attempt at `now_us`: `Ok(())` when it is allowed, or the
    /// microseconds left to wait (and nothing counted).
    pub fn attempt(&self, key: ThrottleKey, throttle: &Throttle, now_us: u64) -> Result<(), u64> {
        let mut shard = self.shard(&key);
        let live = shard.get(&key).copied().filter(|entry| entry.expires_us > now_us);
        if let Some(entry) = live
            && now_us < entry.next_at_us
        {
            return Err(entry.next_at_us - now_us);
        }
        if live.is_none() && shard.len() >= PER_SHARD {
            shard.retain(|_, entry| entry.expires_us > now_us);
            if shard.len() >= PER_SHARD {
                return Ok(());
            }
        }
        let attempts = live.map_or(0, |entry| entry.attempts).saturating_add(1);
        let next_at_us = now_us.saturating_add(throttle.delay_us(attempts));
        shard.insert(key, Entry { attempts, next_at_us, expires_us: now_us.saturating_add(throttle.decay_us()) });
        Ok(())
    }

    /// A successful login: the key starts afresh.
    pub fn reset(&self, key: &ThrottleKey) {
        self.shard(key).remove(key);
    }

    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().unwrap_or_else(std::sync::PoisonError::into_inner).len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: u64 = 1_000_000;

    #[test]
    fn the_delay_doubles_past_the_free_attempts_up_to_the_cap() {
        let throttle = Throttle::default();
        let delays: Vec<u64> = (1..=11).map(|n| throttle.delay_us(n) / SECOND).collect();
        assert_eq!(delays, [0, 0, 1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(throttle.delay_us(u32::MAX), 60 * SECOND);
    }

    #[test]
    fn an_attempt_before_the_delay_is_refused_and_not_counted() {
        let map = ThrottleMap::default();
        let throttle = Throttle::default();
        let key = ThrottleKey::Account(AccountId::of_email("jake@example.com"));
        let now = 100 * SECOND;
        for _ in 0..3 {
            assert_eq!(map.attempt(key, &throttle, now), Ok(()));
        }
        // The third set 1 s: parallel attempts now are all refused.
        assert_eq!(map.attempt(key, &throttle, now), Err(SECOND));
        assert_eq!(map.attempt(key, &throttle, now + SECOND / 2), Err(SECOND / 2));
        assert_eq!(map.attempt(key, &throttle, now + SECOND), Ok(()));
        assert_eq!(map.attempt(key, &throttle, now + SECOND + 1), Err(2 * SECOND - 1));
        // Another key is not affected; a success starts afresh.
        let other = ThrottleKey::Address(Subject::address(Some("203.0.113.7".parse().expect("ip"))));
        assert_eq!(map.attempt(other, &throttle, now + SECOND + 1), Ok(()));
        map.reset(&key);
        assert_eq!(map.attempt(key, &throttle, now + SECOND + 1), Ok(()));
    }

    #[test]
    fn counters_decay_after_a_quiet_spell() {
        let map = ThrottleMap::default();
        let throttle = Throttle::default();
        let key = ThrottleKey::Account(AccountId::of_email("jake@example.com"));
        for i in 0..5 {
            let _ = map.attempt(key, &throttle, SECOND + i * 10 * SECOND);
        }
        let later = SECOND + 40 * SECOND + throttle.decay_us();
        assert_eq!(map.attempt(key, &throttle, later), Ok(()));
        assert_eq!(map.attempt(key, &throttle, later), Ok(()), "counting from 1 again");
    }

    #[test]
    fn the_setting_is_off_or_free_attempts_and_two_delays() {
        assert_eq!(Throttle::parse("off"), Ok(None));
        let throttle = Throttle::parse(" 5/500ms/2m ").expect("valid").expect("on");
        assert_eq!(
            (throttle.free, throttle.base, throttle.cap),
            (5, Duration::from_millis(500), Duration::from_secs(120))
        );
        for bad in ["", "3/1s", "3/0s/1m", "3/1m/1s", "x/1s/1m", "3/1s/2h", "3/1s/1m/1"] {
            assert!(Throttle::parse(bad).is_err(), "{bad}");
        }
    }
}
