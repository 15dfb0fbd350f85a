//! Prometheus metrics: the process-wide recorder, the series' names, and the
//! exporter that serves `GET /metrics` on a listener of its own
//! (`METRICS_ADDR`), never on the API's port.
//!
//! Everything is recorded through the `metrics` facade, so any module (the rate
//! limiter, the password hasher, the database layer) emits its series with the
//! facade's macros and this recorder renders them all. Without a recorder (the
//! exporter turned off, or in a unit test) the macros do nothing.
//!
//! Series that are cheap to read at any time (the pools' sizes) are sampled
//! when Prometheus scrapes, not kept up to date per request.

mod http;

use std::{net::SocketAddr, sync::OnceLock, time::Duration};

use ::metrics::{Unit, describe_counter, describe_gauge, describe_histogram, gauge};
use anyhow::Context as _;
use axum::{
    Router,
    extract::State,
    http::{StatusCode, header},
    response::IntoResponse,
    routing::get,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use sqlx::PgPool;
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};

pub use http::HttpMetricsLayer;

use crate::{app::AppState, config::ConfigError, db::Reads};

// The series' names; docs/operations/metrics.md says what each one counts.
/// At most this many connections to the metrics listener at once (a Prometheus
/// server or two keep one each); past it, new ones wait in the listen backlog.
pub const MAX_SCRAPERS: usize = 16;

pub const HTTP_REQUESTS: &str = "conduit_http_requests_total";
pub const HTTP_DURATION: &str = "conduit_http_request_duration_seconds";
pub const HTTP_IN_FLIGHT: &str = "conduit_http_requests_in_flight";
pub const POOL_CONNECTIONS: &str = "conduit_db_pool_connections";
pub const POOL_IDLE: &str = "conduit_db_pool_idle_connections";
pub const POOL_WAITING: &str = "conduit_db_pool_waiting";
pub const POOL_MAX: &str = "conduit_db_pool_max_connections";
pub const STATEMENT_ERRORS: &str = "conduit_db_statement_errors_total";
pub const READS_SERVED: &str = "conduit_db_reads_total";
pub const REPLICA_LAG: &str = "conduit_db_replica_lag_seconds";
pub const HASHES_IN_PROGRESS: &str = "conduit_password_hashes_in_progress";
pub const HASHES_QUEUED: &str = "conduit_password_hashes_queued";
pub const HASH_DURATION: &str = "conduit_password_hash_duration_seconds";
pub const HASHES_SHED: &str = "conduit_password_hashes_shed_total";
pub const BUILD_INFO: &str = "conduit_build_info";

/// Request latency buckets: from 1 ms (a cached read on loopback) to 10 s (past
/// any answer a client still waits for; the request time limit answers 503 at
/// 30 s by default and lands in `+Inf`). Roughly ×2.5 apart, so a p99 read from
/// them is within a bucket's width of the truth where an API's latencies lie.
const HTTP_BUCKETS: [f64; 13] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Argon2id takes about 20 ms per hash on a core of the machines we measured
/// (release build); an overloaded or debug build takes up to seconds.
const HASH_BUCKETS: [f64; 11] = [0.005, 0.01, 0.02, 0.035, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0];

/// How often the recorder drains its histograms' samples when nobody scrapes.
const UPKEEP_PERIOD: Duration = Duration::from_secs(5);

/// Where the exporter listens, from `METRICS_ADDR`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsConfig {
    /// `None`: no exporter, no recorder.
    pub addr: Option<SocketAddr>,
    /// Whether the address was given (`METRICS_ADDR` set). The default address
    /// may be taken by another server on the same machine: the server then runs
    /// without metrics and says so. A given address must be had, or start-up fails.
    pub explicit: bool,
}

/// `METRICS_ADDR` when it is unset.
pub const DEFAULT_ADDR: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9464);

impl MetricsConfig {
    /// Reads `METRICS_ADDR` from the raw lookup: an empty value is meaningful
    /// here (it turns the exporter off), unlike unset.
    pub fn from_lookup(lookup: &impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        match lookup("METRICS_ADDR") {
            None => Ok(Self { addr: Some(DEFAULT_ADDR), explicit: false }),
            Some(v) if v.trim().is_empty() => Ok(Self { addr: None, explicit: true }),
            Some(v) => match v.trim().parse() {
                Ok(addr) => Ok(Self { addr: Some(addr), explicit: true }),
                Err(_) => Err(ConfigError {
                    var: "METRICS_ADDR",
                    message: format!("`{v}` is not an address like 127.0.0.1:9464 (empty turns metrics off)"),
                }),
            },
        }
    }
}

/// Installs the process-wide Prometheus recorder once, describes every series
/// and sets `conduit_build_info`; later calls return the same handle. Install it
/// before the router is built: the HTTP layer takes its handles when made.
pub fn install() -> anyhow::Result<PrometheusHandle> {
    static RECORDER: OnceLock<Result<PrometheusHandle, String>> = OnceLock::new();
    RECORDER
        .get_or_init(|| {
            let handle = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full(HTTP_DURATION.to_owned()), &HTTP_BUCKETS)
                .and_then(|b| b.set_buckets_for_metric(Matcher::Full(HASH_DURATION.to_owned()), &HASH_BUCKETS))
                .map_err(|err| err.to_string())?
                .install_recorder()
                .map_err(|err| err.to_string())?;
            describe();
            Ok(handle)
        })
        .clone()
        .map_err(|err| anyhow::anyhow!("installing the metrics recorder: {err}"))
}

fn describe() {
    describe_counter!(HTTP_REQUESTS, "HTTP requests answered, by method, matched route template and status class");
    describe_histogram!(HTTP_DURATION, Unit::Seconds, "Time from a request's arrival to its response's headers");
    describe_gauge!(HTTP_IN_FLIGHT, "HTTP requests being answered");
    describe_gauge!(POOL_CONNECTIONS, "Open connections of the pool (lent and idle), sampled at scrape time");
    describe_gauge!(POOL_IDLE, "Connections waiting in the pool to be lent, sampled at scrape time");
    describe_gauge!(POOL_WAITING, "Reads waiting for a connection slot of the reads pool");
    describe_gauge!(POOL_MAX, "Most connections the pool may open");
    describe_counter!(STATEMENT_ERRORS, "Statements PostgreSQL refused, by SQLSTATE class (its first two characters)");
    describe_counter!(
        READS_SERVED,
        "One-statement reads with a read replica configured, by the server that ran them (replica, primary) and why"
    );
    describe_gauge!(
        REPLICA_LAG,
        Unit::Seconds,
        "How far the read replica's replay is behind the primary, at the last poll"
    );
    describe_gauge!(HASHES_IN_PROGRESS, "Argon2id hashes and verifications running");
    describe_gauge!(HASHES_QUEUED, "Argon2id hashes and verifications waiting for a core");
    describe_histogram!(HASH_DURATION, Unit::Seconds, "Time one Argon2id hash or verification computes");
    describe_counter!(HASHES_SHED, "Hashes refused with 503 because the queue was full (PASSWORD_HASH_QUEUE)");
    describe_gauge!(BUILD_INFO, "Always 1; the labels say which build runs");
    gauge!(
        BUILD_INFO,
        "version" => env!("CARGO_PKG_VERSION"),
        "profile" => if cfg!(debug_assertions) { "debug" } else { "release" },
    )
    .set(1.0);
}

/// The pools whose numbers are sampled at scrape time.
#[derive(Debug, Clone)]
pub struct Pools {
    pub writes: PgPool,
    pub reads: Reads,
}

impl Pools {
    /// Sets the pool gauges to what the pools say now.
    fn sample(&self) {
        let writes = &self.writes;
        gauge!(POOL_CONNECTIONS, "pool" => "writes").set(writes.size());
        gauge!(POOL_IDLE, "pool" => "writes").set(writes.num_idle() as f64);
        gauge!(POOL_MAX, "pool" => "writes").set(writes.options().get_max_connections());
        // sqlx's pool does not say how many acquires wait: see docs/operations/metrics.md.
        let reads = self.reads.stats();
        gauge!(POOL_CONNECTIONS, "pool" => "reads").set(reads.connections as f64);
        gauge!(POOL_IDLE, "pool" => "reads").set(reads.idle as f64);
        gauge!(POOL_WAITING, "pool" => "reads").set(reads.waiting as f64);
        gauge!(POOL_MAX, "pool" => "reads").set(reads.max as f64);
        if let Some(replica) = self.reads.replica_stats() {
            gauge!(POOL_CONNECTIONS, "pool" => "replica").set(replica.connections as f64);
            gauge!(POOL_IDLE, "pool" => "replica").set(replica.idle as f64);
            gauge!(POOL_WAITING, "pool" => "replica").set(replica.waiting as f64);
            gauge!(POOL_MAX, "pool" => "replica").set(replica.max as f64);
        }
    }
}

/// The running exporter; dropping it stops the listener (with the server).
#[derive(Debug)]
pub struct Exporter {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Exporter {
    /// Installs the recorder and serves `/metrics` on `config.addr`; `None` when
    /// metrics are off, or when the default address is taken (logged).
    /// It is served with `server`'s header-read and keep-alive timeouts, and at
    /// most [`MAX_SCRAPERS`] connections.
    pub async fn start(
        config: &MetricsConfig,
        server: &crate::edge::server::Settings,
        state: &AppState,
    ) -> anyhow::Result<Option<Self>> {
        let Some(addr) = config.addr else {
            tracing::info!("METRICS_ADDR is empty: no metrics");
            return Ok(None);
        };
        let listener = match TcpListener::bind(addr).await {
            Ok(listener) => listener,
            Err(err) if !config.explicit => {
                tracing::warn!(%addr, error = %err, "cannot listen on the default METRICS_ADDR: serving without metrics");
                return Ok(None);
            }
            Err(err) => return Err(err).with_context(|| format!("binding METRICS_ADDR {addr}")),
        };
        let pools = Pools { writes: state.writes.clone(), reads: state.reads.clone() };
        let exporter = Self::serve(listener, install()?, pools, server)?;
        tracing::info!(addr = %exporter.addr, "metrics on /metrics");
        Ok(Some(exporter))
    }

    /// Serves `/metrics` rendered by `handle` on `listener` through the API's own
    /// accept loop (with `server`'s timeouts, at most [`MAX_SCRAPERS`]
    /// connections, no drain), and drains the recorder's histograms every
    /// [`UPKEEP_PERIOD`] between scrapes.
    pub fn serve(
        listener: TcpListener,
        handle: PrometheusHandle,
        pools: Pools,
        server: &crate::edge::server::Settings,
    ) -> std::io::Result<Self> {
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let upkeep = handle.clone();
        let settings = crate::edge::server::Settings {
            max_connections: Some(MAX_SCRAPERS),
            drain: Duration::ZERO,
            grace: Duration::from_secs(1),
            ..server.clone()
        };
        let app = Router::new().route("/metrics", get(render)).with_state((handle, pools));
        let task = tokio::spawn(async move {
            let upkeep = async move {
                let mut ticks = tokio::time::interval(UPKEEP_PERIOD);
                loop {
                    ticks.tick().await;
                    upkeep.run_upkeep();
                }
            };
            let stopped = async move {
                let _ = stopped.await;
            };
            tokio::select! {
                served = crate::edge::server::serve_until(listener, app, stopped, &settings) => {
                    if let Err(err) = served {
                        tracing::error!(error = %err, "the metrics listener failed");
                    }
                }
                () = upkeep => {}
            }
        });
        Ok(Self { addr, stop: Some(stop), task })
    }

    /// Where `/metrics` is served.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Exporter {
    /// Stops accepting scrapes; a scrape in progress is cut short.
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.abort();
    }
}

/// `GET /metrics`: the pools sampled now, then every series in the text format.
async fn render(State((handle, pools)): State<(PrometheusHandle, Pools)>) -> impl IntoResponse {
    pools.sample();
    (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], handle.render())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<MetricsConfig, ConfigError> {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        MetricsConfig::from_lookup(&|name: &str| map.get(name).cloned())
    }

    #[test]
    fn metrics_are_on_loopback_by_default_and_an_empty_address_turns_them_off() {
        assert_eq!(config(&[]).expect("default"), MetricsConfig { addr: Some(DEFAULT_ADDR), explicit: false });
        assert_eq!(config(&[("METRICS_ADDR", "")]).expect("off"), MetricsConfig { addr: None, explicit: true });
        assert_eq!(
            config(&[("METRICS_ADDR", "0.0.0.0:9100")]).expect("given").addr,
            Some(SocketAddr::from(([0, 0, 0, 0], 9100)))
        );
        assert_eq!(config(&[("METRICS_ADDR", "localhost")]).expect_err("bad").var, "METRICS_ADDR");
    }
}
