//! Logging: `tracing` to stdout, as text or JSON, filtered by `RUST_LOG`; and
//! [`metrics`] for Prometheus.

pub mod metrics;

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

use crate::config::LogFormat;

/// The filter when `RUST_LOG` is unset: our events and one line per request.
pub const DEFAULT_FILTER: &str = "conduit=info,tower_http=info,sqlx=warn";

/// Installs the global subscriber; `filter` was validated with the configuration.
pub fn init(format: LogFormat, filter: &str) {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let registry = tracing_subscriber::registry().with(filter);
    // `try_init` fails only when a subscriber is already set (tests): keep that one.
    let _ = match format {
        LogFormat::Text => registry.with(fmt::layer().with_target(false)).try_init(),
        LogFormat::Json => registry.with(fmt::layer().json().flatten_event(true).with_current_span(true)).try_init(),
    };
}
