//! The SQL, one module per resource, as functions over any executor (a pool, a
//! connection or a transaction), returning flat rows.
//!
//! Every read is one statement. Queries are checked at compile time against the
//! migrations (`.sqlx/` holds the offline data).

pub mod articles;
pub mod comments;
pub mod profiles;
pub mod tags;
pub mod users;

use sqlx::{
    PgPool,
    postgres::{PgConnectOptions, PgPoolOptions},
};

/// Migrations embedded in the binary, applied at start-up.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!();

/// A pool whose connections always plan queries for their actual parameters.
///
/// The list query has optional filters; with a generic plan (which PostgreSQL
/// switches prepared statements to after five executions) it would scan every
/// article, so custom plans are forced.
pub async fn connect(options: PgConnectOptions, max_connections: u32) -> Result<PgPool, sqlx::Error> {
    let options = options.application_name("conduit").options([("plan_cache_mode", "force_custom_plan")]);
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(std::time::Duration::from_secs(5))
        .connect_with(options)
        .await
}
