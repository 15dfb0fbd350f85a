//! Logs and traces: `tracing` to stdout, as text or JSON, filtered by `RUST_LOG`;
//! each request in its W3C trace ([`trace`], [`traceparent`]); spans exported over
//! OTLP when a collector is configured ([`otel`]); and [`metrics`] for Prometheus.

pub mod metrics;
pub mod otel;
pub mod trace;
pub mod traceparent;

use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::{EnvFilter, Layer as _, filter::Targets, fmt, prelude::*};

use crate::config::{Config, LogFormat};

/// The filter when `RUST_LOG` is unset: our events, one line per request, and
/// the OpenTelemetry exporter's warnings (failed exports).
pub const DEFAULT_FILTER: &str = "conduit=info,tower_http=info,sqlx=warn,opentelemetry=warn";

/// What is exported, whatever `RUST_LOG` says: our spans (requests, SQL
/// statements, Argon2) and the events inside them.
const EXPORTED: tracing::Level = tracing::Level::INFO;

/// The installed subscriber's exporter, if any: [`Telemetry::shutdown`] sends
/// the spans still buffered.
#[derive(Debug)]
#[must_use = "shut down after serving, or the last spans are lost"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

/// Installs the global subscriber: logs, and the OTLP exporter when configured
/// (`config.traces`). The log filter was validated with the configuration.
pub fn init(config: &Config) -> anyhow::Result<Telemetry> {
    let filter = EnvFilter::try_new(&config.log_filter).unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let Some(endpoint) = &config.traces.traces_endpoint else {
        // No exporter: the same subscriber as before export existed, nothing more.
        let registry = tracing_subscriber::registry().with(filter);
        // `try_init` fails only when a subscriber is already set (tests): keep that one.
        let _ = match config.log_format {
            LogFormat::Text => registry.with(text()).try_init(),
            LogFormat::Json => registry.with(json()).try_init(),
        };
        return Ok(Telemetry { provider: None });
    };
    let provider = otel::provider(&config.traces, endpoint)?;
    // Each layer its own filter: `RUST_LOG=warn` quiets the logs, not the export.
    let exported = otel::layer(&provider).with_filter(Targets::new().with_target(env!("CARGO_CRATE_NAME"), EXPORTED));
    let registry = tracing_subscriber::registry().with(exported);
    let installed = match config.log_format {
        LogFormat::Text => registry.with(text().with_filter(filter)).try_init(),
        LogFormat::Json => registry.with(json().with_filter(filter)).try_init(),
    };
    if installed.is_ok() {
        trace::set_exporting();
        tracing::info!(endpoint, "exporting spans over OTLP");
    }
    Ok(Telemetry { provider: Some(provider) })
}

fn text<S>() -> impl tracing_subscriber::Layer<S>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    fmt::layer().with_target(false)
}

fn json<S>() -> impl tracing_subscriber::Layer<S>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    fmt::layer().json().flatten_event(true).with_current_span(true)
}

impl Telemetry {
    /// Exports the spans still buffered (the SDK bounds the wait) and stops the
    /// exporter; nothing without one.
    pub async fn shutdown(self) {
        let Some(provider) = self.provider else { return };
        // The SDK blocks on its export thread: not on an async worker.
        let shutdown = tokio::task::spawn_blocking(move || provider.shutdown()).await;
        match shutdown {
            Ok(Ok(())) => {}
            Ok(Err(err)) => tracing::warn!(error = %err, "exporting the last spans failed"),
            Err(err) => tracing::warn!(error = %err, "exporting the last spans failed"),
        }
    }
}
