//! Liveness and readiness probes, for load balancers and Kubernetes.

use axum::{extract::State, http::StatusCode};
use serde::Serialize;
use sqlx::PgPool;

use crate::extract::Json;

#[derive(Debug, Serialize)]
pub struct Health {
    status: &'static str,
}

/// `GET /health/live`: the process is up and serving.
pub async fn live() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// `GET /health/ready`: the database answers; 503 otherwise.
pub async fn ready(State(db): State<PgPool>) -> (StatusCode, Json<Health>) {
    let probe = tokio::time::timeout(std::time::Duration::from_secs(2), sqlx::query!("SELECT 1 AS one").fetch_one(&db));
    match probe.await {
        Ok(Ok(_)) => (StatusCode::OK, Json(Health { status: "ok" })),
        Ok(Err(err)) => {
            tracing::warn!(error = %err, "readiness probe failed");
            (StatusCode::SERVICE_UNAVAILABLE, Json(Health { status: "database unavailable" }))
        }
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, Json(Health { status: "database timed out" })),
    }
}
