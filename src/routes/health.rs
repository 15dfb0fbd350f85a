//! Liveness and readiness probes, for load balancers and Kubernetes.

use axum::{extract::State, http::StatusCode};
use serde::Serialize;
use sqlx::PgPool;

use crate::{
    db::{self, Reads},
    extract::Json,
};

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Health {
    status: &'static str,
}

/// The process is up and serving.
#[utoipa::path(get, path = "/health/live", tag = "Health", responses((status = 200, description = "Serving", body = Health)))]
pub async fn live() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// Both pools reach the database: the one for writes and the one for
/// one-statement reads (most requests), unless all of its connections are
/// lent; 503 otherwise.
#[utoipa::path(get, path = "/health/ready", tag = "Health", responses(
    (status = 200, description = "Ready", body = Health),
    (status = 503, description = "The database does not answer", body = Health),
))]
pub async fn ready(State(db): State<PgPool>, State(reads): State<Reads>) -> (StatusCode, Json<Health>) {
    let write_probe = async { sqlx::query!("SELECT 1 AS one").fetch_one(&db).await.map(drop).map_err(db::Error::from) };
    // Every read connection lent means the pool is busy reaching the database:
    // the probe does not queue behind reads, or a loaded server would look down.
    let read_probe = async {
        let probed = reads.try_run(async |conn| Ok(sqlx::query!("SELECT 1 AS one").fetch_one(conn).await.map(drop)?));
        probed.await.unwrap_or(Ok(()))
    };
    let probe =
        tokio::time::timeout(std::time::Duration::from_secs(2), async { tokio::try_join!(write_probe, read_probe) });
    match probe.await {
        Ok(Ok(_)) => (StatusCode::OK, Json(Health { status: "ok" })),
        Ok(Err(err)) => {
            tracing::warn!(error = %err, "readiness probe failed");
            (StatusCode::SERVICE_UNAVAILABLE, Json(Health { status: "database unavailable" }))
        }
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, Json(Health { status: "database timed out" })),
    }
}
