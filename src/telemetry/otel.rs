//! Optional export of spans over OTLP (protobuf over HTTP) to an OpenTelemetry
//! collector, when `OTEL_EXPORTER_OTLP_ENDPOINT` is set.
//!
//! Exported: each request's span (a child of the caller's span when the request
//! has a valid `traceparent`), each SQL statement's (the `db` functions', one
//! statement each) and each Argon2 computation's, with their attributes. Spans go
//! out in batches from the SDK's own thread (reqwest's blocking client), so a slow
//! or absent collector costs requests nothing but the span bookkeeping; a failed
//! export is logged (`opentelemetry` target, at `warn`) and its spans dropped.
//!
//! Without the variable no OpenTelemetry layer is installed at all.

use anyhow::Context as _;
use opentelemetry::trace::{SpanContext, TraceContextExt as _, TraceFlags, TraceState, TracerProvider as _};
use opentelemetry_otlp::{Protocol, WithExportConfig as _};
use opentelemetry_sdk::{Resource, trace::SdkTracerProvider};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use super::traceparent::{SpanId, TraceId, TraceParent};
use crate::config::ConfigError;

/// Where and as what spans are exported; `None` fields mean no export.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OtlpConfig {
    /// The full URL spans are posted to; `None`: nothing is exported.
    pub traces_endpoint: Option<String>,
    /// `service.name` of the exported spans.
    pub service_name: String,
}

const ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
const TRACES_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";

impl OtlpConfig {
    /// Reads the standard variables of the OpenTelemetry specification:
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (used as is) or else
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` (`/v1/traces` appended); `OTEL_SDK_DISABLED=true`
    /// turns export off; `OTEL_SERVICE_NAME` (default `conduit`); when spans are
    /// exported, the protocol (`OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`, or else
    /// `OTEL_EXPORTER_OTLP_PROTOCOL`), if given, must be `http/protobuf`, the only
    /// one built in; without export neither is checked. The exporter and the
    /// SDK read the others themselves (`OTEL_EXPORTER_OTLP_HEADERS`, `_TIMEOUT`,
    /// `OTEL_TRACES_SAMPLER`, `OTEL_BSP_*`, `OTEL_RESOURCE_ATTRIBUTES`).
    pub fn from_lookup(get: &impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let service_name = get("OTEL_SERVICE_NAME").unwrap_or_else(|| env!("CARGO_PKG_NAME").to_owned());
        let disabled = match get("OTEL_SDK_DISABLED").map(|v| v.trim().to_ascii_lowercase()).as_deref() {
            None | Some("false") => false,
            Some("true") => true,
            Some(other) => {
                return Err(invalid("OTEL_SDK_DISABLED", format!("`{other}` is neither `true` nor `false`")));
            }
        };
        if disabled {
            // Nothing is exported, so nothing else is read: a cluster-wide setting
            // meant for other services must not stop this one.
            return Ok(Self { traces_endpoint: None, service_name });
        }
        let traces_endpoint = match (get(TRACES_ENDPOINT), get(ENDPOINT)) {
            (Some(url), _) => Some(checked_url(TRACES_ENDPOINT, url.trim())?),
            (None, Some(base)) => {
                Some(format!("{}/v1/traces", checked_url(ENDPOINT, base.trim())?.trim_end_matches('/')))
            }
            (None, None) => None,
        };
        // Only when spans are exported, and only the protocol that applies to
        // traces: the signal's own variable wins over the general one, as the
        // specification says.
        if traces_endpoint.is_some() {
            let protocol = ["OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"]
                .into_iter()
                .find_map(|var| get(var).map(|value| (var, value)));
            if let Some((var, protocol)) = protocol.filter(|(_, p)| p.trim() != "http/protobuf") {
                return Err(invalid(var, format!("`{protocol}` is not supported: only `http/protobuf` is built in")));
            }
        }
        Ok(Self { traces_endpoint, service_name })
    }
}

fn invalid(var: &'static str, message: String) -> ConfigError {
    ConfigError { var, message }
}

fn checked_url(var: &'static str, url: &str) -> Result<String, ConfigError> {
    let parsed: axum::http::Uri = url.parse().map_err(|_| invalid(var, format!("`{url}` is not a URL")))?;
    if !matches!(parsed.scheme_str(), Some("http" | "https")) || parsed.host().is_none() {
        return Err(invalid(var, format!("`{url}` is not an http:// or https:// URL")));
    }
    Ok(url.to_owned())
}

/// The SDK's tracer provider for `config`: batches spans to the endpoint.
pub(super) fn provider(config: &OtlpConfig, endpoint: &str) -> anyhow::Result<SdkTracerProvider> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(endpoint)
        .build()
        .with_context(|| format!("OTLP exporter for {endpoint}"))?;
    let resource = Resource::builder()
        .with_service_name(config.service_name.clone())
        .with_attribute(opentelemetry::KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build();
    Ok(SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource).build())
}

/// The `tracing` layer that turns spans into OpenTelemetry spans of `provider`.
pub(super) fn layer<S>(provider: &SdkTracerProvider) -> impl tracing_subscriber::Layer<S> + use<S>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    tracing_opentelemetry::layer()
        .with_tracer(provider.tracer(env!("CARGO_PKG_NAME")))
        // The thread's name would be copied into every span.
        .with_threads(false)
}

/// Starts the OpenTelemetry span of the request's `span`, as a child of the
/// caller's span when there is one, and returns the ids the SDK gave it (`None`
/// when the span is disabled).
pub(super) fn start_request_span(span: &Span, parent: Option<TraceParent>) -> Option<TraceParent> {
    if let Some(parent) = parent {
        let flags = if parent.sampled { TraceFlags::SAMPLED } else { TraceFlags::default() };
        let remote = SpanContext::new(
            opentelemetry::trace::TraceId::from_bytes(parent.trace_id.0),
            opentelemetry::trace::SpanId::from_bytes(parent.span_id.0),
            flags,
            true,
            TraceState::NONE,
        );
        // Fails only for a disabled span; it then has no context either.
        let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(remote));
    }
    let context = span.context();
    let started = context.span().span_context().clone();
    started.is_valid().then(|| TraceParent {
        trace_id: TraceId(started.trace_id().to_bytes()),
        span_id: SpanId(started.span_id().to_bytes()),
        sampled: started.is_sampled(),
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<OtlpConfig, ConfigError> {
        let map: HashMap<&str, &str> = vars.iter().copied().collect();
        OtlpConfig::from_lookup(&|name: &str| map.get(name).map(|v| (*v).to_owned()))
    }

    #[test]
    fn nothing_is_exported_without_an_endpoint() {
        let config = config(&[]).expect("valid");
        assert_eq!(config.traces_endpoint, None);
        assert_eq!(config.service_name, "conduit");
    }

    #[test]
    fn the_general_endpoint_gets_the_traces_path_and_the_traces_endpoint_is_used_as_is() {
        for (vars, expected) in [
            (vec![(ENDPOINT, "http://collector:4318")], "http://collector:4318/v1/traces"),
            (vec![(ENDPOINT, "http://collector:4318/")], "http://collector:4318/v1/traces"),
            (vec![(ENDPOINT, "https://otel.example.com/base")], "https://otel.example.com/base/v1/traces"),
            (vec![(TRACES_ENDPOINT, "http://127.0.0.1:9/spans")], "http://127.0.0.1:9/spans"),
            (vec![(ENDPOINT, "http://a:4318"), (TRACES_ENDPOINT, "http://b:4318/t")], "http://b:4318/t"),
        ] {
            assert_eq!(config(&vars).expect("valid").traces_endpoint.as_deref(), Some(expected), "{vars:?}");
        }
    }

    #[test]
    fn the_sdk_can_be_disabled_and_the_service_renamed() {
        let config =
            config(&[(ENDPOINT, "http://c:4318"), ("OTEL_SDK_DISABLED", "true"), ("OTEL_SERVICE_NAME", "api")])
                .expect("valid");
        assert_eq!((config.traces_endpoint, config.service_name.as_str()), (None, "api"));
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (var, value) in [
            (ENDPOINT, "collector:4318"),
            (ENDPOINT, "grpc://collector:4317"),
            (TRACES_ENDPOINT, "not a url"),
            ("OTEL_SDK_DISABLED", "yes"),
        ] {
            assert_eq!(config(&[(var, value)]).expect_err(var).var, var);
        }
        for (var, value) in
            [("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"), ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/json")]
        {
            assert_eq!(config(&[(ENDPOINT, "http://c:4318"), (var, value)]).expect_err(var).var, var);
        }
        assert!(config(&[(ENDPOINT, "http://c:4318"), ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")]).is_ok());
    }

    #[test]
    fn the_protocol_is_checked_only_when_spans_are_exported() {
        // A cluster-wide grpc setting meant for other services does not stop start-up
        // when this one exports nothing.
        let grpc = ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc");
        assert_eq!(config(&[grpc]).expect("no endpoint").traces_endpoint, None);
        let disabled = config(&[grpc, (ENDPOINT, "http://c:4318"), ("OTEL_SDK_DISABLED", "true")]);
        assert_eq!(disabled.expect("disabled").traces_endpoint, None);
        // The traces' own protocol wins over the general one.
        let traces = ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf");
        assert!(config(&[grpc, traces, (ENDPOINT, "http://c:4318")]).is_ok());
    }
}
