//! Conduit: the RealWorld API on Axum, SQLx and PostgreSQL.
//!
//! Requests flow one way: `routes` (HTTP DTOs) → `domain` (parsed values) → `db`
//! (SQL). `app` wires the routes and middleware; `run` owns the process lifecycle.

pub mod app;
pub mod auth;
pub mod cli;
pub mod config;
pub mod db;
pub mod domain;
pub mod edge;
pub mod embedded_pg;
pub mod error;
pub mod extract;
pub mod openapi;
pub mod routes;
pub mod seed;
pub mod telemetry;

use std::{io::Write as _, os::unix::fs::OpenOptionsExt as _, path::Path, sync::Arc, time::Duration};

use anyhow::Context as _;
use secrecy::{ExposeSecret as _, SecretString};
use sqlx::{PgPool, postgres::PgConnectOptions};

use crate::{
    app::{AppState, HttpOptions},
    auth::{DeletedAccounts, JwtKeys, PasswordHasher},
    config::{Config, Database, DatabaseConfig, JwtSecret},
    db::Reads,
    embedded_pg::EmbeddedPostgres,
    routes::health::Readiness,
};

/// Runs the server until SIGINT or SIGTERM, starting and stopping the embedded
/// PostgreSQL around it when no `DATABASE_URL` is configured.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let secret = match &config.jwt_secret {
        JwtSecret::Given(secret) => secret.clone(),
        JwtSecret::InDataDir => load_or_create_secret(&config.database.data_dir)?,
    };
    let database = open_database(&config.database, config.db_max_connections, config.request_timeout).await?;
    let served = serve(&config, &database, secret).await;
    let closed = database.close().await;
    served.and(closed)
}

async fn serve(config: &Config, database: &OpenDatabase, secret: SecretString) -> anyhow::Result<()> {
    let deleted_accounts =
        DeletedAccounts::follow(&database.options, config.jwt_ttl).await.context("subscribing to deleted accounts")?;
    let state = AppState {
        writes: database.writes.clone(),
        reads: database.reads.clone(),
        jwt: Arc::new(JwtKeys::new(&secret, config.jwt_ttl)),
        deleted_accounts,
        hasher: PasswordHasher::with_queue(crate::auth::password::per_core(), config.password_hash_queue)?,
        readiness: Readiness::default(),
    };
    let readiness = state.readiness.clone();
    // Before the router: its metrics layer takes its handles from the recorder. Stops when dropped.
    let _metrics = telemetry::metrics::Exporter::start(&config.metrics, &state).await?;
    let limits = edge::rate_limit::RateLimits::new(&config.rate_limit)?;
    let app = app::router_with_limits(
        state,
        &HttpOptions {
            cors_origins: config.cors_origins.clone(),
            request_timeout: config.request_timeout,
            hsts: config.hsts_max_age,
        },
        &limits,
    );
    let listener = tokio::net::TcpListener::bind(config.bind_addr)
        .await
        .with_context(|| format!("binding BIND_ADDR {}", config.bind_addr))?;
    tracing::info!(addr = %listener.local_addr()?, "listening");
    // Readiness turns off at the signal, before the drain period starts.
    let shutdown = async move {
        shutdown_signal().await;
        readiness.stop();
    };
    // Past the drain period, a request just started may run its full time.
    let grace = config.request_timeout + Duration::from_secs(5);
    edge::server::serve_until(listener, app, shutdown, &config.server, grace).await.context("serving HTTP")
}

/// The configured database, migrated, with its pools open; [`OpenDatabase::close`]
/// closes them and stops the embedded cluster, if one was started.
#[derive(Debug)]
pub struct OpenDatabase {
    pub writes: PgPool,
    pub reads: Reads,
    /// How to reach it, for connections of their own (`auth::DeletedAccounts`).
    pub options: PgConnectOptions,
    embedded: Option<EmbeddedPostgres>,
}

/// Opens the configured database, for the server and `conduit seed` alike: the
/// server of `DATABASE_URL`, else the embedded cluster, started here; then
/// [`db::open`] applies the migrations and opens both pools, with at most
/// `max_connections` connections each and `statement_timeout` on every statement.
pub async fn open_database(
    config: &DatabaseConfig,
    max_connections: u32,
    statement_timeout: Duration,
) -> anyhow::Result<OpenDatabase> {
    let (options, embedded): (PgConnectOptions, _) = match &config.source {
        Database::External(url) => {
            (url.expose_secret().parse().context("DATABASE_URL is not a valid PostgreSQL URL")?, None)
        }
        Database::Embedded => {
            let pg = EmbeddedPostgres::start(&config.data_dir).await?;
            (pg.connect_options(), Some(pg))
        }
    };
    match db::open(options.clone(), max_connections, statement_timeout).await {
        Ok((writes, reads)) => Ok(OpenDatabase { writes, reads, options, embedded }),
        Err(err) => {
            // Leave no cluster running behind a failed start.
            if let Some(pg) = embedded
                && let Err(stop) = pg.stop().await
            {
                tracing::warn!(error = %stop, "cannot stop the embedded PostgreSQL");
            }
            Err(err)
        }
    }
}

impl OpenDatabase {
    /// Closes both pools, then stops the embedded cluster, if one was started.
    pub async fn close(self) -> anyhow::Result<()> {
        self.reads.close().await;
        // A connection still held by a request abandoned at the end of the grace
        // period would make `close` wait forever: bound it, the process is exiting.
        if tokio::time::timeout(Duration::from_secs(5), self.writes.close()).await.is_err() {
            tracing::warn!("database connections still in use after 5 s; exiting without waiting for them");
        }
        match self.embedded {
            Some(pg) => pg.stop().await,
            None => Ok(()),
        }
    }
}

/// Resolves on the first SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %err, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(err) => {
                tracing::error!(error = %err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = ctrl_c => tracing::info!("SIGINT received"),
        () = terminate => tracing::info!("SIGTERM received"),
    }
}

/// The embedded mode's signing secret: generated once, kept in the data directory
/// (mode 0600) so that tokens survive restarts.
pub fn load_or_create_secret(data_dir: &Path) -> anyhow::Result<SecretString> {
    let path = data_dir.join("jwt-secret");
    std::fs::create_dir_all(data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
    match std::fs::read_to_string(&path) {
        Ok(secret) if secret.trim().len() >= auth::jwt::MIN_SECRET_BYTES => {
            return Ok(SecretString::from(secret.trim()));
        }
        Ok(_) => anyhow::bail!("{} is shorter than 32 bytes: delete it to generate a new one", path.display()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(err).with_context(|| format!("reading {}", path.display())),
    }
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|err| anyhow::anyhow!("no OS randomness: {err}"))?;
    let secret: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(secret.as_bytes())?;
    file.sync_all()?;
    Ok(SecretString::from(secret))
}
