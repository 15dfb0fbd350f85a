//! The rate limits' settings, read from the environment once at start-up
//! (`Config::from_lookup` calls [`RateLimitConfig::from_lookup`]).

use std::time::Duration;

use secrecy::SecretString;

use super::{gcra::Rate, throttle::Throttle};
use crate::{
    config::ConfigError,
    edge::client_ip::{ForwardedHeader, TrustedProxies},
};

/// Every setting of the client address and the rate limits.
#[derive(Debug, Clone)]
pub struct RateLimitConfig {
    /// `RATE_LIMIT=off` removes the layer altogether.
    pub enabled: bool,
    pub trusted_proxies: TrustedProxies,
    pub policies: Policies,
    /// How long a successful login exempts its address from the account's
    /// budget (`RATE_LIMIT_KNOWN_ADDRESS_DAYS`).
    pub known_address_ttl: Duration,
    /// Failed logins slow down (`LOGIN_THROTTLE`); `None`: off.
    pub login_throttle: Option<Throttle>,
    pub redis: Option<RedisConfig>,
}

/// The quota of each policy (see `docs/operations/rate-limits.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policies {
    /// Requests without a valid token, per client address.
    pub anonymous: Rate,
    /// Requests with a valid token, per user.
    pub user: Rate,
    /// `POST /api/users/login`, per client address.
    pub login: Rate,
    /// `POST /api/users/login`, per account (the email's), from addresses that
    /// have not logged into it lately.
    pub login_account: Rate,
    /// `POST /api/users`, per client address.
    pub register: Rate,
}

impl Default for Policies {
    /// Far above what a person using a Conduit frontend sends: a page of the
    /// RealWorld frontends makes 2-4 requests, a login or a registration one.
    fn default() -> Self {
        let rate = |quota, window| Rate::new(quota, window).unwrap_or_else(|| unreachable!("valid default"));
        Self {
            anonymous: rate(600, 60),
            user: rate(600, 60),
            login: rate(30, 300),
            login_account: rate(10, 900),
            register: rate(20, 3600),
        }
    }
}

/// The shared store (`REDIS_URL`).
#[derive(Debug, Clone)]
pub struct RedisConfig {
    pub url: SecretString,
    /// Put before every key (`RATE_LIMIT_REDIS_PREFIX`), so several deployments,
    /// or tests, can share one Redis.
    pub prefix: String,
    /// The longest a decision may wait for Redis before it is made in-process
    /// (`RATE_LIMIT_REDIS_TIMEOUT_MS`).
    pub timeout: Duration,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            trusted_proxies: TrustedProxies::default(),
            policies: Policies::default(),
            known_address_ttl: Duration::from_secs(30 * 86_400),
            login_throttle: Some(Throttle::default()),
            redis: None,
        }
    }
}

fn invalid(var: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError { var, message: message.into() }
}

impl RateLimitConfig {
    /// A configuration with limiting off: what in-process tests get unless they ask.
    pub fn off() -> Self {
        Self { enabled: false, ..Self::default() }
    }

    /// Reads the settings through `get`, which returns `None` for unset or blank
    /// variables.
    pub fn from_lookup(get: &impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let defaults = Self::default();
        let enabled = match get("RATE_LIMIT").map(|v| v.trim().to_ascii_lowercase()).as_deref() {
            None | Some("on") => true,
            Some("off") => false,
            Some(other) => return Err(invalid("RATE_LIMIT", format!("`{other}` is neither `on` nor `off`"))),
        };
        let blocks = match get("TRUSTED_PROXIES") {
            Some(list) => TrustedProxies::parse_list(&list).map_err(|e| invalid("TRUSTED_PROXIES", e))?,
            None => Vec::new(),
        };
        // Every peer trusted: any client names its own address, and every budget
        // per address is void.
        if let Some(all) = blocks.iter().find(|block| block.is_everything()) {
            return Err(invalid(
                "TRUSTED_PROXIES",
                format!("`{all}` trusts every peer, so any client could choose its address: list your proxies"),
            ));
        }
        let header_setting = get("TRUSTED_PROXY_HEADER");
        // A header with no proxy to believe it from is never read: almost surely a
        // forgotten TRUSTED_PROXIES, which would charge every client to the proxy.
        if let Some(header) = header_setting.as_deref().filter(|_| blocks.is_empty()) {
            return Err(invalid(
                "TRUSTED_PROXY_HEADER",
                format!("`{header}` is set but TRUSTED_PROXIES is not: no peer's header would be read"),
            ));
        }
        let header = match header_setting.map(|v| v.trim().to_ascii_lowercase()).as_deref() {
            None | Some("x-forwarded-for") => ForwardedHeader::XForwardedFor,
            Some("forwarded") => ForwardedHeader::Forwarded,
            Some(other) => {
                return Err(invalid(
                    "TRUSTED_PROXY_HEADER",
                    format!("`{other}` is neither `x-forwarded-for` nor `forwarded`"),
                ));
            }
        };
        let p = defaults.policies;
        let policies = Policies {
            anonymous: rate(get, "RATE_LIMIT_ANONYMOUS", p.anonymous)?,
            user: rate(get, "RATE_LIMIT_USER", p.user)?,
            login: rate(get, "RATE_LIMIT_LOGIN", p.login)?,
            login_account: rate(get, "RATE_LIMIT_LOGIN_ACCOUNT", p.login_account)?,
            register: rate(get, "RATE_LIMIT_REGISTER", p.register)?,
        };
        let known_days = match get("RATE_LIMIT_KNOWN_ADDRESS_DAYS") {
            None => 30,
            Some(v) => v.trim().parse::<u64>().ok().filter(|d| (0..=365).contains(d)).ok_or_else(|| {
                invalid("RATE_LIMIT_KNOWN_ADDRESS_DAYS", format!("`{v}` is not a whole number from 0 to 365"))
            })?,
        };
        let login_throttle = match get("LOGIN_THROTTLE") {
            None => defaults.login_throttle,
            Some(v) => Throttle::parse(&v).map_err(|err| invalid("LOGIN_THROTTLE", err))?,
        };
        // Checked whether REDIS_URL is set or not: a bad value is a mistake either way.
        let timeout_ms = match get("RATE_LIMIT_REDIS_TIMEOUT_MS") {
            None => 100,
            Some(v) => v.trim().parse::<u64>().ok().filter(|ms| (1..=10_000).contains(ms)).ok_or_else(|| {
                invalid("RATE_LIMIT_REDIS_TIMEOUT_MS", format!("`{v}` is not a whole number from 1 to 10000"))
            })?,
        };
        let redis = match get("REDIS_URL") {
            None => None,
            Some(url)
                if (url.starts_with("redis://") || url.starts_with("unix://"))
                    && redis::Client::open(url.as_str()).is_ok() =>
            {
                Some(RedisConfig {
                    url: SecretString::from(url),
                    prefix: get("RATE_LIMIT_REDIS_PREFIX").unwrap_or_else(|| "conduit:rl:".to_owned()),
                    timeout: Duration::from_millis(timeout_ms),
                })
            }
            Some(_) => {
                return Err(invalid(
                    "REDIS_URL",
                    "must be a redis://host:port/db or unix:///path URL (TLS, rediss://, is not built in)",
                ));
            }
        };
        Ok(Self {
            enabled,
            trusted_proxies: TrustedProxies::new(blocks, header),
            policies,
            known_address_ttl: Duration::from_secs(known_days * 86_400),
            login_throttle,
            redis,
        })
    }
}

/// A quota written `<requests>/<window>`, the window in seconds or with a unit:
/// `600/60`, `600/1m`, `20/1h`, `1000/1d`.
fn rate(get: &impl Fn(&str) -> Option<String>, var: &'static str, default: Rate) -> Result<Rate, ConfigError> {
    let Some(text) = get(var) else { return Ok(default) };
    parse_rate(&text).ok_or_else(|| {
        invalid(
            var,
            format!(
                "`{text}` is not a quota like `600/1m` (requests per window; the window in s, m, h or d, \
                 at most 1d, with at most one request per microsecond)"
            ),
        )
    })
}

pub fn parse_rate(text: &str) -> Option<Rate> {
    let (quota, window) = text.trim().split_once('/')?;
    let quota: u64 = quota.trim().parse().ok()?;
    let window = window.trim();
    let (number, unit) = match window.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((at, _)) => window.split_at(at),
        None => (window, "s"),
    };
    let unit = match unit.trim() {
        "s" | "" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return None,
    };
    let window_secs = number.parse::<u64>().ok()?.checked_mul(unit)?;
    if !(1..=86_400).contains(&window_secs) {
        return None;
    }
    Rate::new(quota, window_secs)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn read(vars: &[(&str, &str)]) -> Result<RateLimitConfig, ConfigError> {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        RateLimitConfig::from_lookup(&|name: &str| map.get(name).cloned())
    }

    #[test]
    fn quotas_are_requests_per_window() {
        let rate = parse_rate("600/1m").expect("valid");
        assert_eq!((rate.quota, rate.window_secs, rate.interval_us), (600, 60, 100_000));
        assert_eq!(parse_rate(" 20 / 1h ").map(|r| r.window_secs), Some(3600));
        assert_eq!(parse_rate("5/30").map(|r| r.window_secs), Some(30));
        assert_eq!(parse_rate("1000000000/1d").map(|r| r.quota), Some(1_000_000_000));
        for bad in ["", "600", "0/1m", "10/0", "10/2d", "10/1w", "-1/1m", "1/m", "2000000/1s", "x/1m"] {
            assert!(parse_rate(bad).is_none(), "{bad:?} is refused");
        }
    }

    #[test]
    fn defaults_limit_with_the_documented_quotas_and_no_redis() {
        let config = read(&[]).expect("defaults are valid");
        assert!(config.enabled);
        assert!(config.trusted_proxies.is_empty());
        assert!(config.redis.is_none());
        assert_eq!(config.policies.anonymous.quota, 600);
        assert_eq!(config.policies.login_account.window_secs, 900);
        assert_eq!(config.known_address_ttl, Duration::from_secs(30 * 86_400));
        assert_eq!(config.login_throttle, Some(Throttle::default()));
        assert_eq!(read(&[("LOGIN_THROTTLE", "OFF")]).expect("off").login_throttle, None);
    }

    #[test]
    fn every_setting_is_read() {
        let config = read(&[
            ("RATE_LIMIT", "OFF"),
            ("TRUSTED_PROXIES", "10.0.0.0/8, ::1"),
            ("TRUSTED_PROXY_HEADER", "Forwarded"),
            ("RATE_LIMIT_USER", "1000/1m"),
            ("RATE_LIMIT_KNOWN_ADDRESS_DAYS", "0"),
            ("REDIS_URL", "redis://127.0.0.1:6379/0"),
            ("RATE_LIMIT_REDIS_PREFIX", "test:"),
            ("RATE_LIMIT_REDIS_TIMEOUT_MS", "20"),
        ])
        .expect("valid");
        assert!(!config.enabled);
        assert_eq!(config.trusted_proxies.blocks().len(), 2);
        assert_eq!(config.trusted_proxies.header(), ForwardedHeader::Forwarded);
        assert_eq!(config.policies.user.quota, 1000);
        assert_eq!(config.known_address_ttl, Duration::ZERO);
        let redis = config.redis.expect("redis");
        assert_eq!((redis.prefix.as_str(), redis.timeout), ("test:", Duration::from_millis(20)));
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (var, value) in [
            ("RATE_LIMIT", "maybe"),
            ("TRUSTED_PROXIES", "10.0.0.0/40"),
            ("TRUSTED_PROXY_HEADER", "x-real-ip"),
            ("RATE_LIMIT_ANONYMOUS", "lots"),
            ("RATE_LIMIT_USER", "0/1m"),
            ("RATE_LIMIT_LOGIN", "10"),
            ("RATE_LIMIT_LOGIN_ACCOUNT", "10/0"),
            ("RATE_LIMIT_REGISTER", "10/1y"),
            ("RATE_LIMIT_KNOWN_ADDRESS_DAYS", "400"),
            ("LOGIN_THROTTLE", "3/1s"),
            ("REDIS_URL", "localhost:6379"),
            ("REDIS_URL", "redis://127.0.0.1:port"),
            ("REDIS_URL", "rediss://127.0.0.1:6379"),
        ] {
            assert_eq!(read(&[(var, value)]).expect_err(var).var, var);
        }
        let err = read(&[("REDIS_URL", "redis://x"), ("RATE_LIMIT_REDIS_TIMEOUT_MS", "0")]).expect_err("timeout");
        assert_eq!(err.var, "RATE_LIMIT_REDIS_TIMEOUT_MS");
    }

    #[test]
    fn a_bad_redis_timeout_is_refused_even_without_redis() {
        for value in ["0", "10001", "fast"] {
            let err = read(&[("RATE_LIMIT_REDIS_TIMEOUT_MS", value)]).expect_err(value);
            assert_eq!(err.var, "RATE_LIMIT_REDIS_TIMEOUT_MS");
        }
        assert!(read(&[("RATE_LIMIT_REDIS_TIMEOUT_MS", "250")]).is_ok());
    }

    #[test]
    fn trusting_every_peer_is_refused() {
        for list in ["0.0.0.0/0", "::/0", "10.0.0.0/8, 0.0.0.0/0", "::1, ::/0"] {
            let err = read(&[("TRUSTED_PROXIES", list)]).expect_err(list);
            assert_eq!(err.var, "TRUSTED_PROXIES", "{list}");
            assert!(err.message.contains("/0"), "{list}: {}", err.message);
        }
        // The narrowest blocks that are not everything are still accepted.
        assert!(read(&[("TRUSTED_PROXIES", "0.0.0.0/1, ::/1")]).is_ok());
    }

    #[test]
    fn a_proxy_header_without_trusted_proxies_is_refused() {
        for header in ["forwarded", "x-forwarded-for"] {
            let err = read(&[("TRUSTED_PROXY_HEADER", header)]).expect_err(header);
            assert_eq!(err.var, "TRUSTED_PROXY_HEADER");
        }
        let config = read(&[("TRUSTED_PROXY_HEADER", "forwarded"), ("TRUSTED_PROXIES", "10.0.0.1")]).expect("valid");
        assert_eq!(config.trusted_proxies.header(), ForwardedHeader::Forwarded);
    }
}
