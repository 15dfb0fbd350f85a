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
    pub rate_limit: crate::edge::rate_limit::RateLimitConfig,
    /// Connection bounds and the stop (`crate::edge::server`).
    pub server: crate::edge::server::Settings,
    /// OTLP export of spans (`OTEL_EXPORTER_OTLP_ENDPOINT`, ...).
    pub traces: crate::telemetry::otel::OtlpConfig,
    /// `REFRESH_TOKEN_TTL_SECONDS` and `SESSION_MAX_AGE_SECONDS` (docs/auth.md).
    pub sessions: crate::auth::session::SessionLifetimes,
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
        Self::from_lookup(environment()?)
    }

    /// Builds the configuration from any variable source (tests pass a map).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let metrics = crate::telemetry::metrics::MetricsConfig::from_lookup(&lookup)?;
        let get = non_empty(lookup);
        let database = DatabaseConfig::from_lookup(&get)?;
        let password_hash_queue = crate::auth::password::queue_limit_from_lookup(&get)?;

        let jwt_secret = match (get("JWT_SECRET").map(SecretString::from), &database.source) {
            (Some(secret), _) if secret_len(&secret) < crate::auth::jwt::MIN_SECRET_BYTES => {
                return Err(invalid(
                    "JWT_SECRET",
                    format!("must be at least {} bytes long", crate::auth::jwt::MIN_SECRET_BYTES),
                ));
            }
            (Some(secret), _) => JwtSecret::Given(secret),
            (None, Database::External(_)) => {
                return Err(invalid(
                    "JWT_SECRET",
                    "is required when DATABASE_URL is set (at least 32 random bytes, e.g. `openssl rand -hex 32`)",
                ));
            }
            (None, Database::Embedded) => JwtSecret::InDataDir,
        };

        let bind_addr = match get("BIND_ADDR") {
            Some(v) => {
                v.parse().map_err(|_| invalid("BIND_ADDR", format!("`{v}` is not an address like 127.0.0.1:8080")))?
            }
            None => SocketAddr::from(([127, 0, 0, 1], 8080)),
        };

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
            rate_limit: crate::edge::rate_limit::RateLimitConfig::from_lookup(&get)?,
            server,
            traces: crate::telemetry::otel::OtlpConfig::from_lookup(&get)?,
            sessions: session_lifetimes(&get)?,
        })
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
        let secret = "s".repeat(32);
        let config = config(&[url, ("JWT_SECRET", &secret)]).expect("long secret");
        assert!(matches!(config.jwt_secret, JwtSecret::Given(_)));
    }

    #[test]
    fn a_given_secret_is_used_in_embedded_mode_too() {
        let secret = "s".repeat(32);
        let given = config(&[("JWT_SECRET", &secret)]).expect("long secret");
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
        let secret = "s".repeat(32);
        for vars in [
            vec![("JWT_SECRET", secret.as_str())],
            vec![("CONDUIT_DATA_DIR", "/var/lib/conduit"), ("DATABASE_URL", " ")],
            vec![("DATABASE_URL", "postgres://u@localhost/db"), ("JWT_SECRET", secret.as_str())],
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
        ] {
            let err = config(&[(var, value)]).expect_err(var);
            assert_eq!(err.var, var);
            assert!(err.to_string().contains(var));
        }
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
}
