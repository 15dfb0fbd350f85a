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
///
/// Migrations the database has and the binary does not know are allowed
/// (`ignore_missing`), as in the check of `MIGRATE_ON_START=false`: after a
/// newer version's `conduit migrate`, an older one (a rolling upgrade's old
/// pods, a rollback's Job) still starts and migrates what it knows.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate::Migrator { ignore_missing: true, ..sqlx::migrate!() };

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

/// What start-up does about the schema (`MIGRATE_ON_START`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Schema {
    /// Apply the migrations this binary has and the database lacks (the
    /// default): under sqlx's advisory lock, so that servers started together
    /// apply each migration once.
    #[default]
    Migrate,
    /// Apply nothing: refuse to start unless the database has every migration
    /// this binary has, unchanged (`conduit migrate` applied them).
    Check,
}

/// Applies the migrations, then opens the pools: [`open_with_schema`] with
/// [`Schema::Migrate`].
pub async fn open(
    options: PgConnectOptions,
    max_connections: u32,
    statement_timeout: Duration,
) -> anyhow::Result<(PgPool, Reads)> {
    open_with_schema(options, max_connections, statement_timeout, Schema::Migrate).await
}

/// Applies the migrations (or checks them: `schema`), then the data migrations
/// ([`backfill`]), then opens the pool for writes ([`connect`]) and the one for
/// reads ([`Reads`]), both with at most `max_connections` connections.
///
/// PostgreSQL cancels any statement of theirs that runs longer than
/// `statement_timeout` (the request's time limit): when a request times out, its
/// future is dropped, but its statement would otherwise run on, holding a backend
/// and its locks, and its connection could not serve another request until it
/// finished. A cancelled statement is answered like the timeout itself (a 503).
/// The migrations run in a pool of one connection of their own, without that
/// limit (one may rewrite a large table), and like the write pool it waits a few
/// seconds for a database that is still starting.
pub async fn open_with_schema(
    options: PgConnectOptions,
    max_connections: u32,
    statement_timeout: Duration,
    schema: Schema,
) -> anyhow::Result<(PgPool, Reads)> {
    // A database that is still starting is waited for a few seconds.
    let migrations = pool(options.clone(), 1, Duration::from_secs(5)).await.context("connecting to PostgreSQL")?;
    match schema {
        Schema::Migrate => MIGRATOR.run(&migrations).await.context("applying database migrations")?,
        Schema::Check => {
            let mut conn = migrations.acquire().await.context("connecting to PostgreSQL")?;
            check_migrations(&mut conn).await?;
            tracing::info!(
                migrations = MIGRATOR.iter().filter(|m| !m.migration_type.is_down_migration()).count(),
                "MIGRATE_ON_START=false: the database has every migration, none applied"
            );
        }
    }
    // In both modes: rows an older version wrote during a rolling upgrade, after
    // `conduit migrate` ran, are filled in by the next start.
    backfill(&migrations).await;
    migrations.close().await;
    let options = with_statement_timeout(options, statement_timeout);
    let writes = connect(options.clone(), max_connections).await.context("connecting to PostgreSQL")?;
    Ok((writes, Reads::new(options, max_connections)))
}

/// The data migrations that follow the schema's: idempotent, in batches, and
/// never fatal (what they did not reach is tried again at the next start).
/// Returns how many rows they filled.
async fn backfill(db: &PgPool) -> u64 {
    match users::backfill_username_skeletons(db).await {
        Ok(0) => 0,
        Ok(filled) => {
            tracing::info!(filled, "usernames' skeletons filled in");
            filled
        }
        Err(err) => {
            tracing::warn!(error = %err, "filling in usernames' skeletons stopped: it resumes at the next start");
            0
        }
    }
}

/// The migrations sqlx keeps its record of applied ones in.
const MIGRATIONS_TABLE: &str = "_sqlx_migrations";

/// What `conduit migrate` did.
#[derive(Debug)]
pub struct Migrated {
    /// The migrations applied now, in order: version and description.
    pub applied: Vec<(i64, String)>,
    /// How many the database has in all (this binary's).
    pub known: usize,
    /// Rows the data migrations filled in.
    pub backfilled: u64,
}

/// `conduit migrate`: applies the migrations the database lacks with sqlx's
/// migrator, then the data migrations, and reports what it applied.
///
/// sqlx takes a PostgreSQL advisory lock (per database) around its work; this
/// takes the same lock first, on the same connection (advisory locks are
/// re-entrant within a session), so that the record read before and after is
/// this run's alone, even with other migrators or servers starting at once.
pub async fn migrate(options: PgConnectOptions) -> anyhow::Result<Migrated> {
    use sqlx::migrate::Migrate as _;
    let pool = pool(options, 1, Duration::from_secs(5)).await.context("connecting to PostgreSQL")?;
    let mut conn = pool.acquire().await.context("connecting to PostgreSQL")?;
    conn.lock().await.context("taking the migrations' advisory lock")?;
    let before = applied_migrations(&mut conn).await?.unwrap_or_default();
    MIGRATOR.run(&mut *conn).await.context("applying database migrations")?;
    let after = applied_migrations(&mut conn).await?.unwrap_or_default();
    conn.unlock().await.context("releasing the migrations' advisory lock")?;
    drop(conn);
    let backfilled = backfill(&pool).await;
    pool.close().await;
    let applied = after
        .iter()
        .filter(|(version, _)| !before.iter().any(|(was, _)| was == version))
        .filter_map(|(version, _)| MIGRATOR.iter().find(|m| m.version == *version))
        .map(|m| (m.version, m.description.to_string()))
        .collect();
    let known = MIGRATOR.iter().filter(|m| !m.migration_type.is_down_migration()).count();
    Ok(Migrated { applied, known, backfilled })
}

/// The database's record of applied migrations (version, checksum), `None`
/// when it has none (no migrations table: never migrated). Reads only.
async fn applied_migrations(conn: &mut sqlx::PgConnection) -> anyhow::Result<Option<Vec<(i64, Vec<u8>)>>> {
    use sqlx::migrate::Migrate as _;
    match conn.dirty_version(MIGRATIONS_TABLE).await {
        Ok(None) => {}
        Ok(Some(version)) => anyhow::bail!(
            "migration {version} failed partway (`success` is false in {MIGRATIONS_TABLE}): repair the \
             database, delete that row, then run `conduit migrate`"
        ),
        Err(sqlx::migrate::MigrateError::Execute(err)) if is_undefined_table(&err) => return Ok(None),
        Err(err) => return Err(err).context("reading the applied migrations"),
    }
    let applied = conn.list_applied_migrations(MIGRATIONS_TABLE).await.context("reading the applied migrations")?;
    Ok(Some(applied.into_iter().map(|m| (m.version, m.checksum.into_owned())).collect()))
}

fn is_undefined_table(err: &sqlx::Error) -> bool {
    err.as_database_error().and_then(|db| db.code()).as_deref() == Some("42P01")
}

/// `MIGRATE_ON_START=false`: the database must have every migration this
/// binary has, each with the same checksum, and none failed partway. Migrations
/// the binary does not know are allowed: during a rolling upgrade, the old
/// version keeps serving (and restarting) after `conduit migrate` applied the
/// new version's, which add to the schema without breaking the old one
/// (docs/deployment.md, "Migrations").
pub async fn check_migrations(conn: &mut sqlx::PgConnection) -> anyhow::Result<()> {
    let applied = applied_migrations(conn).await?;
    let known: Vec<(i64, &str, &[u8])> = MIGRATOR
        .iter()
        .filter(|m| !m.migration_type.is_down_migration())
        .map(|m| (m.version, &*m.description, &*m.checksum))
        .collect();
    compare_migrations(&known, applied.as_deref()).map_err(anyhow::Error::msg)
}

/// The verdict of [`check_migrations`] on `known` (this binary's migrations:
/// version, description, checksum) against `applied` (the database's record,
/// `None` without one): what is missing or changed, naming `conduit migrate`.
fn compare_migrations(known: &[(i64, &str, &[u8])], applied: Option<&[(i64, Vec<u8>)]>) -> Result<(), String> {
    const HOW: &str = "MIGRATE_ON_START=false applies none: run `conduit migrate` with this version first";
    let Some(applied) = applied else {
        return Err(format!("the database has no migrations applied (no {MIGRATIONS_TABLE} table); {HOW}"));
    };
    let mut missing = Vec::new();
    let mut changed = Vec::new();
    for (version, description, checksum) in known {
        match applied.iter().find(|(v, _)| v == version) {
            None => missing.push(format!("{version} ({description})")),
            Some((_, applied)) if applied.as_slice() != *checksum => changed.push(format!("{version} ({description})")),
            Some(_) => {}
        }
    }
    if !changed.is_empty() {
        return Err(format!(
            "migrations {} differ from the ones applied to the database (a migration must never be edited once \
             applied); `conduit migrate` refuses them too: ship the change as a new migration",
            changed.join(", ")
        ));
    }
    if !missing.is_empty() {
        return Err(format!("the database lacks migrations {}; {HOW}", missing.join(", ")));
    }
    Ok(())
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
    fn the_check_passes_with_every_migration_applied_unchanged_and_newer_ones_beside_them() {
        let known: [(i64, &str, &[u8]); 2] = [(1, "initial", b"aa"), (2, "counters", b"bb")];
        let applied = [(1, b"aa".to_vec()), (2, b"bb".to_vec())];
        assert_eq!(compare_migrations(&known, Some(&applied)), Ok(()));
        // A newer version's migration, applied by its `conduit migrate` during a rolling upgrade.
        let newer = [(1, b"aa".to_vec()), (2, b"bb".to_vec()), (3, b"cc".to_vec())];
        assert_eq!(compare_migrations(&known, Some(&newer)), Ok(()));
    }

    #[test]
    fn the_check_names_what_is_missing_or_changed_and_conduit_migrate() {
        let known: [(i64, &str, &[u8]); 2] = [(1, "initial", b"aa"), (2, "counters", b"bb")];
        let none = compare_migrations(&known, None).expect_err("never migrated");
        assert!(none.contains("no _sqlx_migrations table") && none.contains("`conduit migrate`"), "{none}");
        let missing = compare_migrations(&known, Some(&[(1, b"aa".to_vec())])).expect_err("one missing");
        assert!(
            missing.contains("lacks migrations 2 (counters)") && missing.contains("`conduit migrate`"),
            "{missing}"
        );
        let changed =
            compare_migrations(&known, Some(&[(1, b"zz".to_vec()), (2, b"bb".to_vec())])).expect_err("edited");
        assert!(
            changed.contains("migrations 1 (initial) differ") && changed.contains("`conduit migrate`"),
            "{changed}"
        );
    }

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
