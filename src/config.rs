//! Configuration from environment variables (and an optional `.env` file).
//!
//! Every variable is read once at start-up. A bad value stops the server with one
//! message naming the variable; nothing is silently defaulted after a typo.
//!
//! The settings of the database ([`DatabaseConfig`]) are all `conduit seed` reads;
//! the server's [`Config`] holds them and its own, the signing secret among them.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use secrecy::SecretString;

/// Where the data comes from.
#[derive(Debug, Clone)]
pub enum Database {
    /// `DATABASE_URL` is set: use that server and start nothing.
    External(SecretString),
    /// `DATABASE_URL` is unset: run a private PostgreSQL in `data_dir`.
    Embedded,
}

/// Which origins browsers may call the API from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CorsOrigins {
    Any,
    List(Vec<String>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Where the data is: what the server and `conduit seed` share.
#[derive(Debug, Clone)]
pub struct DatabaseConfig {
    pub source: Database,
    /// Holds the embedded cluster, and the server's generated JWT secret.
    pub data_dir: PathBuf,
}

/// The key the server signs and checks tokens with.
#[derive(Debug, Clone)]
pub enum JwtSecret {
    /// `JWT_SECRET`, long enough.
    Given(SecretString),
    /// Embedded mode without `JWT_SECRET`: generated once and kept in the data
    /// directory (see [`crate::load_or_create_secret`]).
    InDataDir,
}

/// The server's configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub database: DatabaseConfig,
    pub jwt_secret: JwtSecret,
    pub jwt_ttl: Duration,
    pub bind_addr: SocketAddr,
    pub cors_origins: CorsOrigins,
    /// The size of each pool: the one-statement reads', and the one for the rest.
    pub db_max_connections: u32,
    pub log_format: LogFormat,
    /// A `tracing` filter directive (`RUST_LOG`).
    pub log_filter: String,
    /// Longest time a request may take before it is abandoned and answered 503.
    pub request_timeout: Duration,
    /// `HSTS_MAX_AGE`: `Strict-Transport-Security` on every response when set.
    pub hsts_max_age: Option<Duration>,
    /// Where `/metrics` is served (`METRICS_ADDR`).
    pub metrics: crate::telemetry::metrics::MetricsConfig,
    /// How many password hashes may wait for a core (`PASSWORD_HASH_QUEUE`).
    pub password_hash_queue: usize,
    /// `COMMON_PASSWORDS`: whether new passwords on the common lists are refused.
    pub common_passwords: crate::domain::CommonPasswords,
    pub rate_limit: crate::edge::rate_limit::RateLimitConfig,
    /// Connection bounds and the stop (`crate::edge::server`).
    pub server: crate::edge::server::Settings,
    /// OTLP export of spans (`OTEL_EXPORTER_OTLP_ENDPOINT`, ...).
    pub traces: crate::telemetry::otel::OtlpConfig,
    /// OpenID Connect providers (`OIDC_<NAME>_*`, `OIDC_FRONTEND_URL`).
    pub oidc: crate::auth::oidc::OidcConfig,
    /// `REFRESH_TOKEN_TTL_SECONDS` and `SESSION_MAX_AGE_SECONDS` (docs/auth.md).
    pub sessions: crate::auth::session::SessionLifetimes,
    /// `MIGRATE_ON_START`: whether `serve` applies the migrations, or only checks
    /// that `conduit migrate` has (see [`crate::db::Schema`]).
    pub schema: crate::db::Schema,
    /// `DATABASE_READ_URL` and `MAX_REPLICA_LAG_MS`: the read replica, if any.
    pub replica: Option<crate::db::ReplicaConfig>,
}

/// A bad configuration value, naming its variable.
#[derive(Debug, thiserror::Error)]
#[error("configuration error: {var}: {message}")]
pub struct ConfigError {
    pub var: &'static str,
    pub message: String,
}

fn invalid(var: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError { var, message: message.into() }
}

impl DatabaseConfig {
    /// Reads the process environment, after loading `.env` if there is one.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(environment()?)
    }

    /// Builds the configuration from any variable source (tests pass a map).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = non_empty(lookup);
        let source = match get("DATABASE_URL") {
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                Database::External(SecretString::from(url))
            }
            Some(_) => {
                return Err(invalid("DATABASE_URL", "must be a postgres:// or postgresql:// URL"));
            }
            None => Database::Embedded,
        };
        let data_dir = get("CONDUIT_DATA_DIR").map_or_else(|| PathBuf::from(".conduit"), PathBuf::from);
        Ok(Self { source, data_dir })
    }
}

impl Config {
    /// Reads the process environment, after loading `.env` if there is one.
    pub fn from_env() -> Result<Self, ConfigError> {
        let lookup = environment()?;
        // The providers are named by the variables that are set (after `.env`).
        let names: Vec<String> = std::env::vars_os().filter_map(|(name, _)| name.into_string().ok()).collect();
        Self::from_lookup_and_names(lookup, names)
    }

    /// Builds the configuration from any variable source (tests pass a map),
    /// without OpenID Connect providers (they are named by the variables set:
    /// see [`Config::from_lookup_and_names`]).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        Self::from_lookup_and_names(lookup, Vec::new())
    }

    /// Builds the configuration from any variable source, `names` being the
    /// variables that are set (to find the `OIDC_<NAME>_ISSUER` ones).
    pub fn from_lookup_and_names(
        lookup: impl Fn(&str) -> Option<String>,
        names: Vec<String>,
    ) -> Result<Self, ConfigError> {
        let metrics = crate::telemetry::metrics::MetricsConfig::from_lookup(&lookup)?;
        let get = non_empty(lookup);
        let database = DatabaseConfig::from_lookup(&get)?;
        let password_hash_queue = crate::auth::password::queue_limit_from_lookup(&get)?;
        let common_passwords = get("COMMON_PASSWORDS")
            .map(|v| crate::domain::CommonPasswords::parse(&v).map_err(|err| invalid("COMMON_PASSWORDS", err)))
            .transpose()?
            .unwrap_or_default();

        let jwt_secret = match (get("JWT_SECRET").map(SecretString::from), &database.source) {
            (Some(secret), _) if secret_len(&secret) < crate::auth::jwt::MIN_SECRET_BYTES => {
                return Err(invalid(
                    "JWT_SECRET",
                    format!("must be at least {} bytes long", crate::auth::jwt::MIN_SECRET_BYTES),
                ));
            }
            (Some(secret), _) if secret_entropy_bits(&secret) < MIN_SECRET_ENTROPY_BITS => {
                return Err(invalid(
                    "JWT_SECRET",
                    "is too predictable (repeated or patterned characters): use random bytes, e.g. `openssl rand -base64 48`",
                ));
            }
            (Some(secret), _) => JwtSecret::Given(secret),
            (None, Database::External(_)) => {
                return Err(invalid(
                    "JWT_SECRET",
                    "is required when DATABASE_URL is set (random bytes, e.g. `openssl rand -base64 48`)",
                ));
            }
            (None, Database::Embedded) => JwtSecret::InDataDir,
        };

        let bind_addr = bind_addr(&get)?;

        let cors_origins = match get("CORS_ORIGINS") {
            None => CorsOrigins::Any,
            Some(v) if v.trim() == "*" => CorsOrigins::Any,
            Some(v) => {
                let origins: Vec<String> =
                    v.split(',').map(|o| o.trim().trim_end_matches('/').to_owned()).filter(|o| !o.is_empty()).collect();
                if let Some(bad) = origins.iter().find(|o| {
                    !(o.starts_with("http://") || o.starts_with("https://"))
                        || o.parse::<axum::http::HeaderValue>().is_err()
                }) {
                    return Err(invalid(
                        "CORS_ORIGINS",
                        format!("`{bad}` is not an origin like https://app.example.com"),
                    ));
                }
                CorsOrigins::List(origins)
            }
        };

        let db_max_connections = parse_number(&get, "DATABASE_MAX_CONNECTIONS", 10, 1..=1000)?;
        let jwt_ttl = Duration::from_secs(parse_number(&get, "JWT_TTL_SECONDS", 86_400, 60..=31_536_000)?);
        let request_timeout = Duration::from_secs(parse_number(&get, "REQUEST_TIMEOUT_SECONDS", 30, 1..=3_600)?);

        let hsts_max_age = match get("HSTS_MAX_AGE") {
            None => None,
            Some(_) => Some(Duration::from_secs(parse_number(&get, "HSTS_MAX_AGE", 0, 0..=63_072_000)?)),
        };

        let log_format = match get("LOG_FORMAT").as_deref().map(str::to_ascii_lowercase).as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => return Err(invalid("LOG_FORMAT", format!("`{other}` is neither `text` nor `json`"))),
        };

        let log_filter = get("RUST_LOG").unwrap_or_else(|| crate::telemetry::DEFAULT_FILTER.to_owned());
        if let Err(err) = tracing_subscriber::EnvFilter::try_new(&log_filter) {
            return Err(invalid("RUST_LOG", format!("`{log_filter}` is not a valid filter: {err}")));
        }

        let server = crate::edge::server::Settings::from_lookup(&get)?;

        Ok(Self {
            database,
            jwt_secret,
            jwt_ttl,
            bind_addr,
            cors_origins,
            db_max_connections,
            log_format,
            log_filter,
            request_timeout,
            hsts_max_age,
            metrics,
            password_hash_queue,
            common_passwords,
            rate_limit: crate::edge::rate_limit::RateLimitConfig::from_lookup(&get)?,
            server,
            traces: crate::telemetry::otel::OtlpConfig::from_lookup(&get)?,
            oidc: crate::auth::oidc::config_from_lookup(names, &get)?,
            sessions: session_lifetimes(&get)?,
            schema: schema(&get)?,
            replica: crate::db::ReplicaConfig::from_lookup(&get)?,
        })
    }
}

/// `BIND_ADDR`, for the server and `conduit healthcheck` alike.
fn bind_addr(get: &impl Fn(&str) -> Option<String>) -> Result<SocketAddr, ConfigError> {
    match get("BIND_ADDR") {
        Some(v) => v.parse().map_err(|_| invalid("BIND_ADDR", format!("`{v}` is not an address like 127.0.0.1:8080"))),
        None => Ok(SocketAddr::from(([127, 0, 0, 1], 8080))),
    }
}

/// The server's `BIND_ADDR` from the process environment (and `.env`), read
/// alone: `conduit healthcheck` needs no other setting.
pub fn bind_addr_from_env() -> Result<SocketAddr, ConfigError> {
    let get = non_empty(environment()?);
    bind_addr(&get)
}

/// `MIGRATE_ON_START`: `true` (the default, for the zero-configuration run)
/// applies the migrations at start-up; `false` (several instances, a migration
/// Job) only checks them.
fn schema(get: &impl Fn(&str) -> Option<String>) -> Result<crate::db::Schema, ConfigError> {
    match get("MIGRATE_ON_START").map(|v| v.trim().to_ascii_lowercase()).as_deref() {
        None | Some("true") => Ok(crate::db::Schema::Migrate),
        Some("false") => Ok(crate::db::Schema::Check),
        Some(other) => Err(invalid("MIGRATE_ON_START", format!("`{other}` is neither `true` nor `false`"))),
    }
}

/// The sessions' lifetimes: a refresh token's idle lifetime, 14 days by
/// default, may not exceed the session's absolute one, 30 days by default.
fn session_lifetimes(
    get: &impl Fn(&str) -> Option<String>,
) -> Result<crate::auth::session::SessionLifetimes, ConfigError> {
    let refresh_idle = parse_number(get, "REFRESH_TOKEN_TTL_SECONDS", 14 * 86_400, 60..=31_536_000)?;
    let max_age = parse_number(get, "SESSION_MAX_AGE_SECONDS", 30 * 86_400, 60..=31_536_000)?;
    if refresh_idle > max_age {
        return Err(invalid(
            "REFRESH_TOKEN_TTL_SECONDS",
            format!("`{refresh_idle}` is longer than SESSION_MAX_AGE_SECONDS (`{max_age}`)"),
        ));
    }
    Ok(crate::auth::session::SessionLifetimes {
        refresh_idle: Duration::from_secs(refresh_idle),
        max_age: Duration::from_secs(max_age),
    })
}

/// The process environment, after loading `.env` if there is one: how both
/// configurations are read.
fn environment() -> Result<impl Fn(&str) -> Option<String>, ConfigError> {
    if let Err(err) = dotenvy::dotenv()
        && !err.not_found()
    {
        return Err(invalid(".env", err.to_string()));
    }
    Ok(|name: &str| std::env::var(name).ok())
}

/// `lookup` with blank values taken as unset.
fn non_empty(lookup: impl Fn(&str) -> Option<String>) -> impl Fn(&str) -> Option<String> {
    move |name| lookup(name).filter(|v| !v.trim().is_empty())
}

fn secret_len(secret: &SecretString) -> usize {
    use secrecy::ExposeSecret as _;
    secret.expose_secret().len()
}

/// The least [`secret_entropy_bits`] a `JWT_SECRET` must show (RFC 8725 §3.5: no
/// low-entropy keys). RFC 7518 §3.2 asks HS256 for a key of 256 bits. The
/// estimate below can only undercount a random string (`n` characters show at
/// most `log2 n` bits each), so random keys of that size measure far above
/// this: over 200,000 samples each, 32 random bytes in base64url measured at
/// least 179 bits, in hex (64 characters) 214, and `openssl rand -hex 24` (the
/// scripts' 48 characters) 152; `openssl rand -base64 48` 298. Repeated and
/// patterned strings measure under 100 (`aaaa…` 0, `abcabc…` 30, `0123…ef`
/// repeated 39, the alphabet in order 15, `changeme` × 4 80). A hand-made
/// phrase can still pass: this catches the mistakes a length check misses,
/// not every bad key.
const MIN_SECRET_ENTROPY_BITS: f64 = 128.0;

/// A lower estimate of a secret's entropy in bits: its length times the lesser
/// of two empirical Shannon entropies per byte, of the bytes themselves (low
/// when few distinct characters are used: `aaaa`, `abab`) and of the
/// differences between neighbours (low for runs and sequences: `abcdef…`,
/// `0123…`, even with many distinct characters). A string that repeats a
/// shorter one (`xyzxyz…`) counts only that period's length.
fn secret_entropy_bits(secret: &SecretString) -> f64 {
    use secrecy::ExposeSecret as _;
    let bytes = secret.expose_secret().as_bytes();
    let period = (1..bytes.len()).find(|&p| bytes[p..].iter().zip(bytes).all(|(a, b)| a == b)).unwrap_or(bytes.len());
    let deltas: Vec<u8> = bytes.windows(2).map(|w| w[1].wrapping_sub(w[0])).collect();
    let per_byte = shannon_bits_per_symbol(bytes).min(shannon_bits_per_symbol(&deltas));
    // The period's length as f64: a secret is far shorter than 2^52 bytes.
    #[allow(clippy::cast_precision_loss)]
    let length = period as f64;
    per_byte * length
}

/// The Shannon entropy of the symbols' frequencies in `symbols`, in bits per symbol.
#[allow(clippy::cast_precision_loss)]
fn shannon_bits_per_symbol(symbols: &[u8]) -> f64 {
    if symbols.is_empty() {
        return 0.0;
    }
    let mut counts = [0u32; 256];
    for &s in symbols {
        counts[usize::from(s)] += 1;
    }
    let n = symbols.len() as f64;
    counts.iter().filter(|&&c| c > 0).map(|&c| f64::from(c) / n).map(|p| -p * p.log2()).sum()
}

pub(crate) fn parse_number<T>(
    get: &impl Fn(&str) -> Option<String>,
    var: &'static str,
    default: T,
    range: std::ops::RangeInclusive<T>,
) -> Result<T, ConfigError>
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy,
{
    let Some(raw) = get(var) else { return Ok(default) };
    match raw.trim().parse::<T>() {
        Ok(n) if range.contains(&n) => Ok(n),
        _ => Err(invalid(var, format!("`{raw}` is not a whole number from {} to {}", range.start(), range.end()))),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn lookup(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        move |name| map.get(name).cloned()
    }

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from_lookup(lookup(vars))
    }

    fn database(vars: &[(&str, &str)]) -> Result<DatabaseConfig, ConfigError> {
        DatabaseConfig::from_lookup(lookup(vars))
    }

    /// The URL of an external database, `None` for the embedded one.
    fn url(config: &DatabaseConfig) -> Option<&str> {
        use secrecy::ExposeSecret as _;
        match &config.source {
            Database::External(url) => Some(url.expose_secret()),
            Database::Embedded => None,
        }
    }

    #[test]
    fn no_variables_mean_embedded_mode_on_localhost() {
        let config = config(&[]).expect("defaults are valid");
        assert!(matches!(config.database.source, Database::Embedded));
        assert_eq!(config.database.data_dir, PathBuf::from(".conduit"));
        assert_eq!(config.bind_addr.to_string(), "127.0.0.1:8080");
        assert_eq!(config.cors_origins, CorsOrigins::Any);
        assert!(matches!(config.jwt_secret, JwtSecret::InDataDir));
    }

    #[test]
    fn an_external_database_requires_a_long_secret() {
        let url = ("DATABASE_URL", "postgres://u@localhost/db");
        assert_eq!(config(&[url]).expect_err("no secret").var, "JWT_SECRET");
        assert_eq!(config(&[url, ("JWT_SECRET", "short")]).expect_err("short").var, "JWT_SECRET");
        let secret = GOOD_SECRET;
        let config = config(&[url, ("JWT_SECRET", secret)]).expect("long secret");
        assert!(matches!(config.jwt_secret, JwtSecret::Given(_)));
    }

    /// `openssl rand -base64 32`, as the error message suggests (with 48).
    const GOOD_SECRET: &str = "84alG+EgYj9wwbCmuZhQeBqT0noxEXIQIeJugNvGcr0=";

    fn bits(secret: &str) -> f64 {
        secret_entropy_bits(&SecretString::from(secret))
    }

    #[test]
    fn random_secrets_pass_the_entropy_check() {
        for secret in [
            GOOD_SECRET,
            "84alG-EgYj9wwbCmuZhQeBqT0noxEXIQIeJugNvGcr0", // base64url, no padding
            "8c/lMddu+snUd6U8Qjm7RJiTD6oy+/zRFAcNajFGuplAU18CEA1g8YwZp+B3S893", // openssl rand -base64 48
            "3f9a0c1be47d28566e1fa9c0d4b37e2851c9f06ab3d47e1829f0c5a6be13d784", // openssl rand -hex 32
            "b5e1093cd7a42f68e0c1b97a35d4f2086ec1a9b4d5307f2e", // openssl rand -hex 24 (scripts/lib/server.sh)
        ] {
            assert!(bits(secret) >= MIN_SECRET_ENTROPY_BITS, "{secret}: {}", bits(secret));
            let config = config(&[("DATABASE_URL", "postgres://u@localhost/db"), ("JWT_SECRET", secret)]);
            assert!(matches!(config.expect("random").jwt_secret, JwtSecret::Given(_)));
        }
    }

    #[test]
    fn repeated_and_patterned_secrets_are_refused_and_told_how_to_make_one() {
        for secret in [
            "a".repeat(32),
            "abc".repeat(11),
            "0123456789abcdef".repeat(4),
            "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ".to_owned(),
            "changeme".repeat(4),
            "test-secret-test-secret-test-secret-!".to_owned(),
            "correct horse battery staple!!!!".to_owned(),
            // A random 16 bytes repeated: every byte looks random, the period does not.
            "b5e1093cd7a42f68b5e1093cd7a42f68b5e1093cd7a42f68".to_owned(),
            // 16 random bytes in hex: 128 bits, half the key HS256 wants (RFC 7518 §3.2).
            "e4b1d3a09c57f2816d0be3c94a7f5d21".to_owned(),
        ] {
            assert!(bits(&secret) < MIN_SECRET_ENTROPY_BITS, "{secret}: {}", bits(&secret));
            let err = config(&[("JWT_SECRET", &secret)]).expect_err(&secret);
            assert_eq!(err.var, "JWT_SECRET");
            assert!(err.to_string().contains("openssl rand -base64 48"), "{err}");
        }
    }

    #[test]
    fn a_given_secret_is_used_in_embedded_mode_too() {
        let secret = GOOD_SECRET;
        let given = config(&[("JWT_SECRET", secret)]).expect("long secret");
        assert!(matches!(given.jwt_secret, JwtSecret::Given(_)));
        assert_eq!(config(&[("JWT_SECRET", "short")]).expect_err("short").var, "JWT_SECRET");
    }

    #[test]
    fn the_database_settings_need_no_secret_nor_any_server_setting() {
        let vars =
            [("DATABASE_URL", "postgresql://u@localhost/db"), ("BIND_ADDR", "localhost"), ("JWT_SECRET", "short")];
        let database = database(&vars).expect("the server's settings are not read");
        assert_eq!(url(&database), Some("postgresql://u@localhost/db"));
        assert_eq!(database.data_dir, PathBuf::from(".conduit"));
    }

    #[test]
    fn the_server_reads_the_database_settings_as_the_seeder_does() {
        let secret = GOOD_SECRET;
        for vars in [
            vec![("JWT_SECRET", secret)],
            vec![("CONDUIT_DATA_DIR", "/var/lib/conduit"), ("DATABASE_URL", " ")],
            vec![("DATABASE_URL", "postgres://u@localhost/db"), ("JWT_SECRET", secret)],
        ] {
            let alone = database(&vars).expect("valid");
            let within = config(&vars).expect("valid").database;
            assert_eq!((url(&alone), &alone.data_dir), (url(&within), &within.data_dir), "{vars:?}");
        }
        for vars in [[("DATABASE_URL", "mysql://x")], [("DATABASE_URL", "localhost/db")]] {
            assert_eq!(database(&vars).expect_err("bad URL").var, "DATABASE_URL");
            assert_eq!(config(&vars).expect_err("bad URL").var, "DATABASE_URL");
        }
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (var, value) in [
            ("BIND_ADDR", "localhost"),
            ("DATABASE_MAX_CONNECTIONS", "0"),
            ("DATABASE_MAX_CONNECTIONS", "ten"),
            ("DATABASE_URL", "mysql://x"),
            ("CORS_ORIGINS", "app.example.com"),
            ("LOG_FORMAT", "xml"),
            ("RUST_LOG", "conduit=loud"),
            ("RATE_LIMIT_ANONYMOUS", "lots"),
            ("TRUSTED_PROXIES", "10.0.0.0/33"),
            ("COMMON_PASSWORDS", "off"),
            ("MIGRATE_ON_START", "no"),
        ] {
            let err = config(&[(var, value)]).expect_err(var);
            assert_eq!(err.var, var);
            assert!(err.to_string().contains(var));
        }
    }

    #[test]
    fn openid_providers_are_named_by_the_variables_set_and_a_missing_one_is_named() {
        let vars = [
            ("OIDC_CORP_ISSUER", "https://id.example.com"),
            ("OIDC_CORP_CLIENT_ID", "conduit"),
            ("OIDC_CORP_REDIRECT_URL", "https://api.example.com/api/auth/oidc/corp/callback"),
            ("OIDC_FRONTEND_URL", "https://app.example.com"),
        ];
        let names = || vars.iter().map(|(name, _)| (*name).to_owned()).collect::<Vec<_>>();
        let err = Config::from_lookup_and_names(lookup(&vars), names()).expect_err("no secret");
        assert_eq!(err.var, "OIDC_CORP_CLIENT_SECRET");
        assert!(err.to_string().contains("OIDC_CORP_CLIENT_SECRET"));
        let mut vars = vars.to_vec();
        vars.push(("OIDC_CORP_CLIENT_SECRET", "s3cret"));
        let names = vars.iter().map(|(name, _)| (*name).to_owned()).collect();
        let named = Config::from_lookup_and_names(lookup(&vars), names).expect("valid");
        assert_eq!(named.oidc.providers[0].name, "corp");
        assert!(config(&vars).expect("without names, no provider").oidc.providers.is_empty());
    }

    #[test]
    fn cors_origins_are_a_comma_separated_list() {
        let config = config(&[("CORS_ORIGINS", "https://a.example, http://localhost:4200/")]).expect("valid");
        assert_eq!(
            config.cors_origins,
            CorsOrigins::List(vec!["https://a.example".to_owned(), "http://localhost:4200".to_owned()])
        );
    }

    #[test]
    fn session_lifetimes_default_to_two_weeks_idle_and_thirty_days_in_all_and_idle_may_not_exceed_all() {
        let defaults = config(&[]).expect("defaults are valid").sessions;
        assert_eq!(defaults.refresh_idle, Duration::from_secs(14 * 86_400));
        assert_eq!(defaults.max_age, Duration::from_secs(30 * 86_400));
        let set = config(&[("REFRESH_TOKEN_TTL_SECONDS", "3600"), ("SESSION_MAX_AGE_SECONDS", "7200")]).expect("valid");
        assert_eq!(set.sessions.refresh_idle, Duration::from_secs(3600));
        assert_eq!(set.sessions.max_age, Duration::from_secs(7200));
        let longer = config(&[("REFRESH_TOKEN_TTL_SECONDS", "7200"), ("SESSION_MAX_AGE_SECONDS", "3600")]);
        assert_eq!(longer.expect_err("idle beyond the whole").var, "REFRESH_TOKEN_TTL_SECONDS");
        assert_eq!(config(&[("SESSION_MAX_AGE_SECONDS", "10")]).expect_err("too short").var, "SESSION_MAX_AGE_SECONDS");
    }

    #[test]
    fn migrations_are_applied_at_start_unless_migrate_on_start_is_false() {
        use crate::db::Schema;
        assert_eq!(config(&[]).expect("default").schema, Schema::Migrate);
        for (value, schema) in [("true", Schema::Migrate), ("TRUE", Schema::Migrate), (" false ", Schema::Check)] {
            assert_eq!(config(&[("MIGRATE_ON_START", value)]).expect(value).schema, schema, "{value}");
        }
        for bad in ["0", "off", "yes", "flase"] {
            let err = config(&[("MIGRATE_ON_START", bad)]).expect_err(bad);
            assert_eq!(err.var, "MIGRATE_ON_START");
            assert!(err.to_string().contains("neither `true` nor `false`"), "{err}");
        }
    }
}
