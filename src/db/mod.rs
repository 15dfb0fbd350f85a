//! The SQL, one module per resource, as functions over any executor (a pool, a
//! connection or a transaction), returning flat rows and typed outcomes.
//!
//! Every read is one statement. Queries are checked at compile time against the
//! migrations (`.sqlx/` holds the offline data). This layer owns the schema: it
//! alone knows the constraints' names, and turns their violations into [`Error`]s
//! that say what happened in the API's terms.

pub mod articles;
mod borrowed;
pub mod comments;
pub mod identities;
pub mod profiles;
mod reads;
mod replica;
pub mod sessions;
pub mod tags;
pub mod users;

pub use reads::PoolStats;
pub use replica::{Reads, Replica, ReplicaConfig, Status as ReplicaStatus, WroteAs, announce};

/// What a statement can run into that a caller must tell apart; anything else
/// is [`Error::Sql`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A unique value that another row already has.
    #[error("the {0:?} is taken")]
    Taken(Unique),
    /// The caller's own account is gone (a valid token outlived it).
    #[error("the caller's account is gone")]
    CallerGone,
    /// A row the statement refers to was deleted meanwhile.
    #[error("the {0:?} is gone")]
    Gone(Resource),
    /// A user tried to follow themselves.
    #[error("a user cannot follow themselves")]
    SelfFollow,
    /// A text PostgreSQL cannot hold (a NUL character), which can match nothing.
    #[error("text with a NUL character")]
    NulInText,
    #[error(transparent)]
    Sql(sqlx::Error),
}

/// The values that must be unique.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unique {
    Username,
    Email,
    Slug,
}

/// The rows that can vanish under a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    Article,
    Profile,
}

impl From<sqlx::Error> for Error {
    fn from(err: sqlx::Error) -> Self {
        let Some(db) = err.as_database_error() else { return Self::Sql(err) };
        count_refusal(db.code().as_deref());
        if db.code().as_deref() == Some("22021") {
            return Self::NulInText;
        }
        match db.constraint() {
            // A look-alike of a taken name reads as taken: the answer does not say which rule.
            Some("users_username_key" | "users_username_skeleton_key") if db.is_unique_violation() => {
                Self::Taken(Unique::Username)
            }
            Some("users_email_key") if db.is_unique_violation() => Self::Taken(Unique::Email),
            Some("articles_slug_key") if db.is_unique_violation() => Self::Taken(Unique::Slug),
            Some("follows_not_self") if db.is_check_violation() => Self::SelfFollow,
            Some(
                "articles_author_id_fkey"
                | "comments_author_id_fkey"
                | "follows_follower_id_fkey"
                | "favorites_user_id_fkey",
            ) if db.is_foreign_key_violation() => Self::CallerGone,
            Some("favorites_article_id_fkey" | "comments_article_id_fkey" | "article_tags_article_id_fkey")
                if db.is_foreign_key_violation() =>
            {
                Self::Gone(Resource::Article)
            }
            Some("follows_followee_id_fkey") if db.is_foreign_key_violation() => Self::Gone(Resource::Profile),
            _ => Self::Sql(err),
        }
    }
}

/// Counts a statement PostgreSQL refused in `conduit_db_statement_errors_total`,
/// by SQLSTATE class: the code's first two characters (`23` integrity, `57`
/// operator intervention, ...), one of PostgreSQL's classes or `other`, a bounded
/// set of static labels (nothing allocated for the label). Every refusal a
/// statement meets is classified in [`Error::from`], so this is the one place
/// that counts.
fn count_refusal(code: Option<&str>) {
    let class = code.and_then(|code| code.get(..2)).map_or("other", sqlstate_class);
    metrics::counter!(crate::telemetry::metrics::STATEMENT_ERRORS, "sqlstate_class" => class).increment(1);
}

/// PostgreSQL's SQLSTATE classes (Appendix A of its manual, version 15).
const SQLSTATE_CLASSES: [&str; 43] = [
    "00", "01", "02", "03", "08", "09", "0A", "0B", "0F", "0L", "0P", "0Z", "20", "21", "22", "23", "24", "25", "26",
    "27", "28", "2B", "2D", "2F", "34", "38", "39", "3B", "3D", "3F", "40", "42", "44", "53", "54", "55", "57", "58",
    "72", "F0", "HV", "P0", "XX",
];

/// The static label of a code's first two characters: its class, or `other`.
fn sqlstate_class(prefix: &str) -> &'static str {
    SQLSTATE_CLASSES.iter().find(|class| class.eq_ignore_ascii_case(prefix)).copied().unwrap_or("other")
}

/// Whether `err` says the database cannot be reached, or the connection to it
/// was lost: nothing about the request itself, and a retry later may succeed.
/// I/O and TLS failures; a pool closed (the server is stopping); the SQLSTATEs
/// of class 08 (connection exception), 57P01-57P03 (the server is shutting
/// down, crashed, or is starting up) and 53300 (no connection slot free).
pub fn is_unavailable(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::PoolClosed | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|code| code.starts_with("08") || matches!(&*code, "57P01" | "57P02" | "57P03" | "53300")),
        _ => false,
    }
}

use std::time::Duration;

use anyhow::Context as _;
use sqlx::{
    PgPool,
    postgres::{PgConnectOptions, PgPoolOptions},
};

/// Migrations embedded in the binary, applied at start-up.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!();

/// The settings of every connection, for reads and writes alike: each statement
/// is planned once and the plan reused.
///
/// Every statement is written to have one good plan for all its parameters: each
/// way of listing articles has its own statement rather than optional filters in
/// one `WHERE`, and rows of a page are read per row (see `articles::list`). The
/// generic plan is forced rather than left to PostgreSQL's heuristic, which
/// re-plans the first five executions and may switch plans after them.
///
/// JIT compilation is off: a generic plan's costs are estimated for unknown
/// parameters (a `LIMIT $2` as a tenth of the table), which at a million articles
/// crossed `jit_above_cost` and added 200 ms of compiling to a 1 ms page.
///
pub(crate) fn session_options(options: PgConnectOptions) -> PgConnectOptions {
    options.application_name("conduit").options([("plan_cache_mode", "force_generic_plan"), ("jit", "off")])
}

/// Applies the migrations, then opens the pool for writes ([`connect`]) and the
/// one for reads ([`Reads`]), both with at most `max_connections` connections.
///
/// PostgreSQL cancels any statement of theirs that runs longer than
/// `statement_timeout` (the request's time limit): when a request times out, its
/// future is dropped, but its statement would otherwise run on, holding a backend
/// and its locks, and its connection could not serve another request until it
/// finished. A cancelled statement is answered like the timeout itself (a 503).
/// The migrations run in a pool of one connection of their own, without that
/// limit (one may rewrite a large table), and like the write pool it waits a few
/// seconds for a database that is still starting.
pub async fn open(
    options: PgConnectOptions,
    max_connections: u32,
    statement_timeout: Duration,
) -> anyhow::Result<(PgPool, Reads)> {
    // A database that is still starting is waited for a few seconds.
    let migrations = pool(options.clone(), 1, Duration::from_secs(5)).await.context("connecting to PostgreSQL")?;
    MIGRATOR.run(&migrations).await.context("applying database migrations")?;
    match users::backfill_username_skeletons(&migrations).await {
        Ok(0) => {}
        Ok(filled) => tracing::info!(filled, "usernames' skeletons filled in"),
        Err(err) => {
            tracing::warn!(error = %err, "filling in usernames' skeletons stopped: it resumes at the next start")
        }
    }
    migrations.close().await;
    let options = with_statement_timeout(options, statement_timeout);
    let writes = connect(options.clone(), max_connections).await.context("connecting to PostgreSQL")?;
    Ok((writes, Reads::new(options, max_connections)))
}

/// `options` with PostgreSQL's `statement_timeout` set to `timeout`, at least
/// 1 ms (0 would turn the limit off).
pub fn with_statement_timeout(options: PgConnectOptions, timeout: Duration) -> PgConnectOptions {
    options.options([("statement_timeout", format!("{}ms", timeout.as_millis().max(1)))])
}

/// The pool for writes (and anything else that is not a one-statement read,
/// which [`Reads`] serves).
///
/// A connection is pinged before use only when it has been idle for a second or
/// more: sqlx's default pings on every acquire, one extra round trip per request.
/// A connection that breaks while in steady use fails the request that holds it
/// (a 503: a write is not retried); the pool then replaces it.
///
/// A connection is waited for [`WRITE_ACQUIRE_TIMEOUT`] at most: sqlx retries a
/// refused connection until then, and a database that is down must be answered
/// 503 within two seconds, not after a long queue.
pub async fn connect(options: PgConnectOptions, max_connections: u32) -> Result<PgPool, sqlx::Error> {
    pool(options, max_connections, WRITE_ACQUIRE_TIMEOUT).await
}

/// How long a write waits for a connection, whether the pool is busy or the
/// database refuses new connections.
pub const WRITE_ACQUIRE_TIMEOUT: Duration = Duration::from_millis(1500);

async fn pool(
    options: PgConnectOptions,
    max_connections: u32,
    acquire_timeout: Duration,
) -> Result<PgPool, sqlx::Error> {
    let options = session_options(options);
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(acquire_timeout)
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= Duration::from_secs(1) {
                    sqlx::Connection::ping(conn).await?;
                }
                Ok(true)
            })
        })
        .connect_with(options)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstate_classes_are_bounded_static_labels() {
        assert_eq!(sqlstate_class("23"), "23");
        assert_eq!(sqlstate_class("0a"), "0A");
        assert_eq!(sqlstate_class("P0"), "P0");
        for unknown in ["ZZ", "99", "é", ""] {
            assert_eq!(sqlstate_class(unknown), "other", "{unknown:?}");
        }
    }
}
