//! Configuration from environment variables (and an optional `.env` file).
//!
//! Every variable is read once at start-up. A bad value stops the server with one
//! message naming the variable; nothing is silently defaulted after a typo.

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

#[derive(Debug, Clone)]
pub struct Config {
    pub database: Database,
    /// Holds the embedded cluster and the generated JWT secret.
    pub data_dir: PathBuf,
    /// `None` in embedded mode means "generate one and keep it in `data_dir`".
    pub jwt_secret: Option<SecretString>,
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

impl Config {
    /// Reads the process environment, after loading `.env` if there is one.
    pub fn from_env() -> Result<Self, ConfigError> {
        if let Err(err) = dotenvy::dotenv()
            && !err.not_found()
        {
            return Err(invalid(".env", err.to_string()));
        }
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Builds the configuration from any variable source (tests pass a map).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());

        let database = match get("DATABASE_URL") {
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                Database::External(SecretString::from(url))
            }
            Some(_) => {
                return Err(invalid("DATABASE_URL", "must be a postgres:// or postgresql:// URL"));
            }
            None => Database::Embedded,
        };

        let jwt_secret = get("JWT_SECRET").map(SecretString::from);
        match (&database, &jwt_secret) {
            (_, Some(secret)) if secret_len(secret) < crate::auth::jwt::MIN_SECRET_BYTES => {
                return Err(invalid(
                    "JWT_SECRET",
                    format!("must be at least {} bytes long", crate::auth::jwt::MIN_SECRET_BYTES),
                ));
            }
            (Database::External(_), None) => {
                return Err(invalid(
                    "JWT_SECRET",
                    "is required when DATABASE_URL is set (at least 32 random bytes, e.g. `openssl rand -hex 32`)",
                ));
            }
            _ => {}
        }

        let data_dir = get("CONDUIT_DATA_DIR").map_or_else(|| PathBuf::from(".conduit"), PathBuf::from);

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

        let log_format = match get("LOG_FORMAT").as_deref().map(str::to_ascii_lowercase).as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => return Err(invalid("LOG_FORMAT", format!("`{other}` is neither `text` nor `json`"))),
        };

        let log_filter = get("RUST_LOG").unwrap_or_else(|| crate::telemetry::DEFAULT_FILTER.to_owned());
        if let Err(err) = tracing_subscriber::EnvFilter::try_new(&log_filter) {
            return Err(invalid("RUST_LOG", format!("`{log_filter}` is not a valid filter: {err}")));
        }

        Ok(Self {
            database,
            data_dir,
            jwt_secret,
            jwt_ttl,
            bind_addr,
            cors_origins,
            db_max_connections,
            log_format,
            log_filter,
            request_timeout,
        })
    }
}

fn secret_len(secret: &SecretString) -> usize {
    use secrecy::ExposeSecret as _;
    secret.expose_secret().len()
}

fn parse_number<T>(
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

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        Config::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn no_variables_mean_embedded_mode_on_localhost() {
        let config = config(&[]).expect("defaults are valid");
        assert!(matches!(config.database, Database::Embedded));
        assert_eq!(config.bind_addr.to_string(), "127.0.0.1:8080");
        assert_eq!(config.cors_origins, CorsOrigins::Any);
        assert!(config.jwt_secret.is_none());
    }

    #[test]
    fn an_external_database_requires_a_long_secret() {
        let url = ("DATABASE_URL", "postgres://u@localhost/db");
        assert_eq!(config(&[url]).expect_err("no secret").var, "JWT_SECRET");
        assert_eq!(config(&[url, ("JWT_SECRET", "short")]).expect_err("short").var, "JWT_SECRET");
        assert!(config(&[url, ("JWT_SECRET", &"s".repeat(32))]).is_ok());
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
}
