//! The HTTP server: the accept loop, its bounds, and the stop.
//!
//! A stop goes the way Kubernetes expects of a pod. When the signal comes, the
//! caller turns readiness off (`/health/ready` answers 503), and the server goes
//! on serving for the drain period ([`Settings::drain`]) so that load balancers
//! take it out of rotation; its responses meanwhile carry `Connection: close`,
//! so that clients open their next connection elsewhere, and idle keep-alive
//! connections are closed at once (their clients reconnect, while the server
//! still accepts). Then it stops accepting (serving what is already in the
//! listen backlog, as far as the connection cap allows), finishes the requests
//! being answered, closes idle connections at once and those that have not sent
//! a whole request (head and body) within [`connection::HEAD_WAIT_ON_STOP`],
//! and returns; connections still open after the grace period
//! ([`Settings::grace`]) are closed. Dropping the future closes every
//! connection at once (a second signal: see `crate::run`).
//!
//! At most [`Settings::connection_limit`] connections are open at once: past
//! that, new ones wait in the listen backlog. Per connection, see
//! [`super::connection`] for the header-read, body and keep-alive timeouts.

use std::{sync::Arc, time::Duration};

use tokio::{
    net::TcpListener,
    sync::{Semaphore, watch},
};

use super::connection::{self, Stage, Timeouts};
use crate::config::ConfigError;

/// File descriptors kept for everything but client connections (database
/// connections, the embedded cluster's pipes, log files, ...).
const RESERVED_FILES: u64 = 256;

/// The connection cap when `MAX_CONNECTIONS` is unset and the file limit is
/// higher (it is often 1,048,576 or unlimited once raised): each connection
/// costs a task and hyper's buffers (some 20 KiB when busy), and more clients
/// than this are better spread over more instances.
pub const DEFAULT_MAX_CONNECTIONS: usize = 16_384;

/// How connections are bounded and how a stop goes.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `HEADER_READ_TIMEOUT_SECONDS` (10): a request head must be complete this
    /// long after the connection opened, or after its first byte.
    pub header_read_timeout: Duration,
    /// `KEEP_ALIVE_TIMEOUT_SECONDS` (30): an idle keep-alive connection is closed after this.
    pub keep_alive_timeout: Duration,
    /// `MAX_CONNECTIONS`: at most this many client connections; `None` sizes it
    /// to the file limit ([`Settings::connection_limit`]).
    pub max_connections: Option<usize>,
    /// `SHUTDOWN_DRAIN_SECONDS` (5): how long the server goes on serving after
    /// the stop signal, with readiness off.
    pub drain: Duration,
    /// `SHUTDOWN_GRACE_SECONDS` (15): after the drain, how long requests in
    /// flight have to finish before their connections are closed. With the
    /// default drain, 20 s in all: with the pools' close (5 s at most), a stop
    /// fits Kubernetes' default `terminationGracePeriodSeconds` of 30.
    pub grace: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            keep_alive_timeout: Duration::from_secs(30),
            max_connections: None,
            drain: Duration::from_secs(5),
            grace: Duration::from_secs(15),
        }
    }
}

impl Settings {
    /// Reads the settings from `get` (blank values already taken as unset).
    pub fn from_lookup(get: &impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let seconds = |var: &'static str, default: Duration, range: std::ops::RangeInclusive<u64>| {
            crate::config::parse_number(get, var, default.as_secs(), range).map(Duration::from_secs)
        };
        let defaults = Self::default();
        let max_connections = match get("MAX_CONNECTIONS") {
            None => None,
            Some(_) => Some(crate::config::parse_number(get, "MAX_CONNECTIONS", 0, 1..=10_000_000)?),
        };
        Ok(Self {
            header_read_timeout: seconds("HEADER_READ_TIMEOUT_SECONDS", defaults.header_read_timeout, 1..=3_600)?,
            keep_alive_timeout: seconds("KEEP_ALIVE_TIMEOUT_SECONDS", defaults.keep_alive_timeout, 1..=3_600)?,
            max_connections,
            drain: seconds("SHUTDOWN_DRAIN_SECONDS", defaults.drain, 0..=3_600)?,
            grace: seconds("SHUTDOWN_GRACE_SECONDS", defaults.grace, 0..=3_600)?,
        })
    }

    /// The configured `MAX_CONNECTIONS`, else what the file limit leaves once
    /// 256 files (`RESERVED_FILES`) are set aside (at least half of it), up to
    /// [`DEFAULT_MAX_CONNECTIONS`]; never above what a semaphore holds.
    pub fn connection_limit(&self, file_limit: u64) -> usize {
        let limit = self.max_connections.unwrap_or_else(|| connections_for(file_limit).min(DEFAULT_MAX_CONNECTIONS));
        limit.min(Semaphore::MAX_PERMITS)
    }

    /// Whether the configured `MAX_CONNECTIONS` is more than the file limit
    /// leaves for connections: past that, `accept` fails for lack of descriptors.
    pub fn exceeds_file_limit(&self, file_limit: u64) -> bool {
        self.max_connections.is_some_and(|max| max > connections_for(file_limit))
    }
}

/// What `file_limit` leaves for client connections.
fn connections_for(file_limit: u64) -> usize {
    let spare = file_limit.saturating_sub(RESERVED_FILES).max(file_limit / 2).max(1);
    usize::try_from(spare).unwrap_or(usize::MAX)
}

/// Raises the soft limit on open files to the hard one (a soft limit of 1,024
/// is common, and each connection takes a descriptor), and returns the limit
/// now in force.
pub fn raise_file_limit() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else { return 1024 };
    if soft < hard {
        match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => return hard,
            Err(err) => tracing::warn!(soft, hard, error = %err, "cannot raise the open files limit"),
        }
    }
    soft
}

/// Serves `app` on `listener` until `shutdown` resolves, then stops as the
/// module's documentation says, within [`Settings::grace`] of the end of the
/// drain period.
pub async fn serve_until(
    listener: TcpListener,
    app: axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    settings: &Settings,
) -> std::io::Result<()> {
    let open_files = raise_file_limit();
    let limit = settings.connection_limit(open_files);
    if settings.exceeds_file_limit(open_files) {
        tracing::warn!(
            max_connections = limit,
            open_files,
            "MAX_CONNECTIONS is more than the open-files limit leaves for connections: \
             past that, connections wait until accept finds a descriptor"
        );
    }
    let timeouts = Timeouts { header_read: settings.header_read_timeout, keep_alive: settings.keep_alive_timeout };
    let (stage, watching) = watch::channel(Stage::Serving);
    let slots = Arc::new(Semaphore::new(limit));
    let addr = listener.local_addr()?;
    tracing::info!(%addr, max_connections = limit, open_files, ?timeouts, "serving");
    let grace = settings.grace;

    {
        let accepting = accept(&listener, &app, timeouts, &watching, &slots);
        tokio::pin!(accepting);
        tokio::pin!(shutdown);
        tokio::select! {
            () = &mut shutdown => {}
            // Never: it accepts for as long as it is polled.
            () = &mut accepting => {}
        }
        tracing::info!(drain = ?settings.drain, "stopping: serving on while load balancers take this server out");
        let _ = stage.send(Stage::Draining);
        let _ = tokio::time::timeout(settings.drain, &mut accepting).await;
    }
    // Connections that completed their handshake while the server drained sit in
    // the backlog: serve them, rather than let the kernel reset them on close.
    // Accepted from the socket itself: the reactor may not have reported them yet.
    // A slot first: one accepted without a slot would be closed unanswered. At the
    // cap, those left in the backlog are reset when the listener closes.
    let listener = listener.into_std()?;
    while let Ok(slot) = slots.clone().try_acquire_owned() {
        let Ok((stream, peer)) = listener.accept() else { break };
        let Ok(stream) = stream.set_nonblocking(true).and_then(|()| tokio::net::TcpStream::from_std(stream)) else {
            continue;
        };
        let (app, watching) = (app.clone(), watching.clone());
        tokio::spawn(async move {
            connection::serve(stream, peer, app, timeouts, watching).await;
            drop(slot);
        });
    }
    drop(listener);
    tracing::info!("stopped accepting; finishing the requests in flight");
    let _ = stage.send(Stage::Closing);

    let all = u32::try_from(limit).unwrap_or(u32::MAX);
    match tokio::time::timeout(grace, slots.acquire_many(all)).await {
        Ok(_) => tracing::info!("in-flight requests finished; shutting down"),
        Err(_) => {
            tracing::warn!(?grace, "grace period over: closing the remaining connections");
            let _ = stage.send(Stage::Aborting);
        }
    }
    Ok(())
}

/// Accepts connections for as long as it is polled, each once a slot is free.
async fn accept(
    listener: &TcpListener,
    app: &axum::Router,
    timeouts: Timeouts,
    watching: &watch::Receiver<Stage>,
    slots: &Arc<Semaphore>,
) {
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else { return };
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(err) if is_connection_error(&err) => continue,
            Err(err) => {
                // Out of file descriptors (EMFILE, ENFILE) or memory: wait for
                // connections to close rather than spin.
                tracing::error!(error = %err, "cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (app, watching) = (app.clone(), watching.clone());
        tokio::spawn(async move {
            connection::serve(stream, peer, app, timeouts, watching).await;
            drop(slot);
        });
    }
}

/// An error of the one connection being accepted, not of the listener.
fn is_connection_error(err: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    matches!(err.kind(), ConnectionRefused | ConnectionAborted | ConnectionReset)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn settings(vars: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let map: HashMap<&str, &str> = vars.iter().copied().collect();
        Settings::from_lookup(&|name: &str| map.get(name).map(|v| (*v).to_owned()))
    }

    #[test]
    fn defaults_bound_heads_idle_connections_and_the_drain() {
        let defaults = settings(&[]).expect("defaults are valid");
        assert_eq!(defaults.header_read_timeout, Duration::from_secs(10));
        assert_eq!(defaults.keep_alive_timeout, Duration::from_secs(30));
        assert_eq!(defaults.drain, Duration::from_secs(5));
        assert_eq!(defaults.grace, Duration::from_secs(15));
        assert_eq!(defaults.max_connections, None);
        // Drain, grace and the pools' close (5 s at most) within Kubernetes' default 30 s.
        assert!(defaults.drain + defaults.grace + Duration::from_secs(5) < Duration::from_secs(30));
    }

    #[test]
    fn the_connection_limit_follows_the_file_limit_up_to_16384_unless_set() {
        let defaults = Settings::default();
        assert_eq!(defaults.connection_limit(1_024), 768);
        assert_eq!(defaults.connection_limit(300), 150);
        assert_eq!(defaults.connection_limit(16_640), 16_384);
        assert_eq!(defaults.connection_limit(1_048_576), 16_384);
        // RLIM_INFINITY: more than a semaphore holds (it would panic).
        assert_eq!(defaults.connection_limit(u64::MAX), 16_384);
        assert!(!defaults.exceeds_file_limit(1_024));
        let set = settings(&[("MAX_CONNECTIONS", "5000")]).expect("valid");
        assert_eq!(set.connection_limit(1_024), 5_000);
        assert!(set.exceeds_file_limit(1_024), "5,000 connections need more than 1,024 files");
        assert!(!set.exceeds_file_limit(8_192));
        assert_eq!(set.connection_limit(u64::MAX), 5_000);
        let most = settings(&[("MAX_CONNECTIONS", "10000000")]).expect("valid");
        assert_eq!(most.connection_limit(u64::MAX), 10_000_000);
        assert!(most.connection_limit(u64::MAX) <= Semaphore::MAX_PERMITS);
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (var, value) in [
            ("HEADER_READ_TIMEOUT_SECONDS", "0"),
            ("KEEP_ALIVE_TIMEOUT_SECONDS", "soon"),
            ("MAX_CONNECTIONS", "0"),
            ("SHUTDOWN_DRAIN_SECONDS", "-1"),
            ("SHUTDOWN_GRACE_SECONDS", "3601"),
        ] {
            assert_eq!(settings(&[(var, value)]).expect_err(var).var, var);
        }
        assert_eq!(settings(&[("SHUTDOWN_DRAIN_SECONDS", "0")]).expect("no drain").drain, Duration::ZERO);
        assert_eq!(settings(&[("SHUTDOWN_GRACE_SECONDS", "40")]).expect("a grace").grace, Duration::from_secs(40));
    }
}
