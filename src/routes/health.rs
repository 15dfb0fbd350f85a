//! Liveness and readiness probes, for load balancers and Kubernetes.
//!
//! Live: the process answers HTTP. Ready: it is not stopping, and each pool
//! reaches PostgreSQL. A pool reaches it when a connection it has to spare (an
//! idle one, or for the reads a new one) answers a ping; a pool whose every
//! connection is lent is busy, not down, and is judged by a connection the
//! probe opens for itself, outside the pools, which must answer as well. So a
//! loaded server stays ready, and one whose database is stopped, hung or
//! unreachable turns unready within [`PROBE_TIMEOUT`].
//!
//! One probe runs at a time and its verdict serves every probe for
//! [`VERDICT_TTL`]: a flood of `/health/ready` cannot open connections faster
//! than that.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{extract::State, http::StatusCode};
use serde::Serialize;
use sqlx::{Connection as _, PgPool};
use tokio::sync::Mutex;

use crate::{
    db::{self, Reads},
    extract::Json,
};

/// How long the database may take to answer a probe.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// How long a verdict is reused.
pub const VERDICT_TTL: Duration = Duration::from_millis(500);

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Health {
    status: &'static str,
}

/// Whether the server should be sent traffic; shared by every clone.
#[derive(Debug, Clone, Default)]
pub struct Readiness(Arc<ReadinessInner>);

#[derive(Debug, Default)]
struct ReadinessInner {
    stopping: AtomicBool,
    /// The last probe's verdict (`None`: ready) and when it was reached.
    last: Mutex<Option<(Instant, Option<&'static str>)>>,
}

impl Readiness {
    /// From now on, the server is not ready: it is about to stop.
    pub fn stop(&self) {
        self.0.stopping.store(true, Ordering::Relaxed);
    }

    pub fn is_stopping(&self) -> bool {
        self.0.stopping.load(Ordering::Relaxed)
    }
}

/// The process is up and serving.
#[utoipa::path(get, path = "/health/live", tag = "Health", responses((status = 200, description = "Serving", body = Health)))]
pub async fn live() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// Ready for traffic: not stopping, and both pools (the one for writes, the
/// one for one-statement reads) reach the database; a pool that is merely busy
/// is not down.
#[utoipa::path(get, path = "/health/ready", tag = "Health", responses(
    (status = 200, description = "Ready", body = Health),
    (status = 503, description = "Stopping, or the database does not answer", body = Health),
))]
pub async fn ready(
    State(readiness): State<Readiness>,
    State(writes): State<PgPool>,
    State(reads): State<Reads>,
) -> (StatusCode, Json<Health>) {
    let verdict = if readiness.is_stopping() { Some("stopping") } else { verdict(&readiness, &writes, &reads).await };
    match verdict {
        None => (StatusCode::OK, Json(Health { status: "ok" })),
        Some(status) => (StatusCode::SERVICE_UNAVAILABLE, Json(Health { status })),
    }
}

/// The cached verdict, or a new probe's.
async fn verdict(readiness: &Readiness, writes: &PgPool, reads: &Reads) -> Option<&'static str> {
    let mut last = readiness.0.last.lock().await;
    if let Some((at, verdict)) = *last
        && at.elapsed() < VERDICT_TTL
    {
        return verdict;
    }
    let verdict = match tokio::time::timeout(PROBE_TIMEOUT, probe(writes, reads)).await {
        Ok(Ok(())) => None,
        Ok(Err(err)) => {
            tracing::warn!(error = %err, "readiness probe failed");
            Some("database unavailable")
        }
        Err(_) => {
            tracing::warn!(timeout = ?PROBE_TIMEOUT, "readiness probe timed out");
            Some("database timed out")
        }
    };
    *last = Some((Instant::now(), verdict));
    verdict
}

/// Both pools, at once; a busy one is checked with a connection of the probe's own.
async fn probe(writes: &PgPool, reads: &Reads) -> Result<(), db::Error> {
    let write_probe = async {
        if writes.is_closed() {
            return Err(db::Error::Sql(sqlx::Error::PoolClosed));
        }
        match writes.try_acquire() {
            Some(mut conn) => conn.ping().await.map(|()| true).map_err(db::Error::Sql),
            None => Ok(false),
        }
    };
    let read_probe = async {
        match reads.try_run(async |conn| conn.ping().await.map_err(db::Error::Sql)).await {
            Some(probed) => probed.map(|()| true),
            None => Ok(false),
        }
    };
    let (wrote, read) = tokio::try_join!(write_probe, read_probe)?;
    if wrote && read {
        return Ok(());
    }
    // A busy pool: does PostgreSQL take a new connection and answer on it?
    let mut conn = match sqlx::PgConnection::connect_with(&writes.connect_options()).await {
        Ok(conn) => conn,
        // It answered, but has no connection slot free: up, and busy.
        Err(sqlx::Error::Database(err)) if err.code().as_deref() == Some("53300") => return Ok(()),
        Err(err) => return Err(db::Error::Sql(err)),
    };
    conn.ping().await.map_err(db::Error::Sql)?;
    let _ = conn.close().await;
    Ok(())
}
