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
    auth::{JwtKeys, PasswordHasher, Revocations},
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
    let mut database =
        open_database_with_schema(&config.database, config.db_max_connections, config.request_timeout, config.schema)
            .await?;
    if let Some(replica) = &config.replica {
        let replica = db::Replica::start(replica, &database.options, config.db_max_connections, config.request_timeout);
        database.reads = database.reads.clone().with_replica(replica);
    }
    let served = serve(&config, &database, secret).await;
    let closed = database.close().await;
    served.and(closed)
}

async fn serve(config: &Config, database: &OpenDatabase, secret: SecretString) -> anyhow::Result<()> {
    let revocations =
        Revocations::follow(&database.options, config.jwt_ttl).await.context("subscribing to revocations")?;
    let state = AppState {
        writes: database.writes.clone(),
        reads: database.reads.clone(),
        jwt: Arc::new(JwtKeys::new(&secret, config.jwt_ttl).with_session_lifetimes(config.sessions)),
        revocations,
        hasher: PasswordHasher::with_queue(crate::auth::password::per_core(), config.password_hash_queue)?,
        common_passwords: config.common_passwords,
        readiness: Readiness::default(),
        oidc: Arc::new(
            crate::auth::oidc::Oidc::new(&config.oidc, crate::auth::oidc::CacheSettings::default())
                .context("OpenID Connect providers")?,
        ),
        session_policy: Default::default(),
    };
    let readiness = state.readiness.clone();
    // Before the server, so that no signal is missed; and they stay caught.
    let mut signals = StopSignals::install()?;
    // Before the router: its metrics layer takes its handles from the recorder. Stops when dropped.
    let _metrics = telemetry::metrics::Exporter::start(&config.metrics, &config.server, &state).await?;
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
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = edge::server::serve_until(
        listener,
        app,
        async move {
            let _ = stopped.await;
        },
        &config.server,
    );
    tokio::pin!(serving);
    tokio::select! {
        served = &mut serving => return served.context("serving HTTP"),
        signal = signals.next() => {
            tracing::info!(signal, "stopping: readiness off");
            // Readiness turns off at the signal, before the drain period starts.
            readiness.stop();
            let _ = stop.send(());
        }
    }
    // A second signal cuts the stop short: every connection is closed now (the
    // pools are still closed and the embedded cluster stopped).
    tokio::select! {
        served = &mut serving => served.context("serving HTTP"),
        signal = signals.next() => {
            tracing::warn!(signal, "second stop signal: closing every connection now, without the drain or the grace period");
            Ok(())
        }
    }
}

/// The configured database, migrated, with its pools open; [`OpenDatabase::close`]
/// closes them and stops the embedded cluster, if one was started.
#[derive(Debug)]
pub struct OpenDatabase {
    pub writes: PgPool,
    pub reads: Reads,
    /// How to reach it, for connections of their own (`auth::Revocations`).
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
    open_database_with_schema(config, max_connections, statement_timeout, db::Schema::Migrate).await
}

/// [`open_database`], with the migrations applied or only checked (`schema`:
/// `MIGRATE_ON_START`).
pub async fn open_database_with_schema(
    config: &DatabaseConfig,
    max_connections: u32,
    statement_timeout: Duration,
    schema: db::Schema,
) -> anyhow::Result<OpenDatabase> {
    let (options, embedded) = connect_options(config).await?;
    match db::open_with_schema(options.clone(), max_connections, statement_timeout, schema).await {
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

/// How to reach the configured database: the server of `DATABASE_URL`, else
/// the embedded cluster, started here (the caller stops it).
async fn connect_options(config: &DatabaseConfig) -> anyhow::Result<(PgConnectOptions, Option<EmbeddedPostgres>)> {
    Ok(match &config.source {
        Database::External(url) => {
            (url.expose_secret().parse().context("DATABASE_URL is not a valid PostgreSQL URL")?, None)
        }
        Database::Embedded => {
            let pg = EmbeddedPostgres::start(&config.data_dir).await?;
            (pg.connect_options(), Some(pg))
        }
    })
}

/// `conduit migrate`: applies the migrations to the configured database (the
/// embedded cluster is started for it, and stopped after).
pub async fn migrate(config: &DatabaseConfig) -> anyhow::Result<db::Migrated> {
    let (options, embedded) = connect_options(config).await?;
    let migrated = db::migrate(options).await;
    let stopped = match embedded {
        Some(pg) => pg.stop().await,
        None => Ok(()),
    };
    let migrated = migrated?;
    stopped.map(|()| migrated)
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

/// SIGINT and SIGTERM, caught from their installation on (no longer ending the
/// process): the first starts the stop, a second cuts it short.
struct StopSignals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn install() -> anyhow::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            interrupt: signal(SignalKind::interrupt()).context("listening for SIGINT")?,
            terminate: signal(SignalKind::terminate()).context("listening for SIGTERM")?,
        })
    }

    /// The next signal's name.
    async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.interrupt.recv() => "SIGINT",
            _ = self.terminate.recv() => "SIGTERM",
        }
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
