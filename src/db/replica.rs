//! Where a one-statement read runs: the primary, or the optional streaming
//! replica of `DATABASE_READ_URL` (docs/deployment.md, "The read replica").
//!
//! [`Reads`] is what the routes hold. Without a replica it is the primary's
//! [`Pool`] and nothing else: one `Option` tested per read. With one, a read goes
//! to the replica when all of these hold, and to the primary otherwise:
//!
//! - the replica answered the last poll and its lag is at most
//!   `MAX_REPLICA_LAG_MS` ([`Replica::poll`], every [`POLL_PERIOD`]);
//! - for a read made with a token: this server is subscribed to the write
//!   announcements, and the replica has replayed the primary's WAL up to where
//!   it stood when the subscription began (announcements made before it are
//!   unknown), and up to the caller's last announced write.
//!
//! Read-your-writes. After a request that may have written (any method but
//! `GET`, `HEAD` and `OPTIONS`, answered other than 4xx) of a caller known by a
//! token, or that signed a user in ([`WroteAs`]), [`announce`] runs one
//! statement on the primary: it takes `pg_current_wal_lsn()`, at or past the end
//! of every transaction the request committed (a commit waits for its WAL to be
//! flushed, `synchronous_commit` being on, PostgreSQL's default), and
//! `pg_notify`s "user lsn" to every server. The statement's own commit does not
//! wait for a flush (`synchronous_commit` off for it alone): nothing is lost if
//! its notification is. This server records the position at once; the others
//! when the notification arrives. Then the answer waits, at most 100 ms, until
//! the replica has replayed that position ([`Replica::wait_replayed`]): from
//! then on every read the replica serves sees the write, whoever makes it and
//! whichever server it reaches. Only when the replica is slower than that does
//! the announcement carry the guarantee, for the writer alone: the answer then
//! leaves once this server's own listener has heard it (at most 20 ms:
//! [`Replica::wait_heard`]), by which time the other servers' listeners, sent
//! it at the same commit, have it or nearly (the window measured in
//! docs/deployment.md).
//!
//! A read on the replica that fails for want of the replica (the connection
//! refused or lost, the server shutting down, a conflict with recovery) runs
//! once more on the primary, and the replica is skipped until the next poll
//! finds it well.
//!
//! Lag in time, measured without trusting the replica's clock nor
//! `pg_last_xact_replay_timestamp()` (which, on an idle primary, grows while
//! nothing is missing): the poll records when it first saw the primary at each
//! WAL position; the lag is the age of the oldest recorded position the replica
//! has not replayed, 0 when it has replayed them all. It is known to within a
//! poll period.

use std::{
    collections::{HashMap, VecDeque},
    sync::{
        Arc, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{extract::Request, middleware::Next, response::Response};
use sqlx::{
    Connection as _, PgConnection, PgPool,
    postgres::{PgConnectOptions, PgListener, PgPoolOptions},
};
use tokio::sync::Notify;

use super::{Error, PoolStats, reads::Pool};
use crate::telemetry::metrics::{READS_SERVED, REPLICA_LAG};

/// The channel of the write announcements: "user lsn", both decimal.
const CHANNEL: &str = "conduit_writes";

/// How often the replica's position and the primary's are polled.
pub const POLL_PERIOD: Duration = Duration::from_millis(50);

/// How long a poll (or the connection it needs) may take; past it the replica
/// is taken as down.
const POLL_TIMEOUT: Duration = Duration::from_millis(500);

/// How long a read waits for a connection to the replica before it reads on the
/// primary instead.
const REPLICA_ACQUIRE_TIMEOUT: Duration = Duration::from_millis(500);

/// How long a write's answer waits for this server's own listener to hear its
/// announcement (see [`Replica::wait_heard`]).
const HEARD_WAIT: Duration = Duration::from_millis(20);

/// How long a write's answer waits for the replica to replay it (see
/// [`Replica::wait_replayed`]).
const REPLAY_WAIT: Duration = Duration::from_millis(100);

/// The longest pause between two questions to the replica while waiting.
const REPLAY_ASK_EVERY: Duration = Duration::from_millis(5);

/// How long to wait before subscribing again after the listener failed.
const RESUBSCRIBE_AFTER: Duration = Duration::from_millis(500);

/// How many primary positions the lag measure remembers: at one per poll,
/// more than a minute's worth of a replica that replays nothing.
const MAX_SAMPLES: usize = 2048;

/// The settings of `DATABASE_READ_URL` and `MAX_REPLICA_LAG_MS`.
#[derive(Debug, Clone)]
pub struct ReplicaConfig {
    pub options: PgConnectOptions,
    pub max_lag: Duration,
}

impl ReplicaConfig {
    /// `None` without `DATABASE_READ_URL`; `MAX_REPLICA_LAG_MS` (default 1000)
    /// is checked either way.
    pub fn from_lookup(get: &impl Fn(&str) -> Option<String>) -> Result<Option<Self>, crate::config::ConfigError> {
        let max_lag = crate::config::parse_number(get, "MAX_REPLICA_LAG_MS", 1000, 1..=3_600_000)?;
        let Some(url) = get("DATABASE_READ_URL") else { return Ok(None) };
        let bad = |message: &str| crate::config::ConfigError { var: "DATABASE_READ_URL", message: message.to_owned() };
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(bad("must be a postgres:// or postgresql:// URL"));
        }
        let options = url.parse().map_err(|_| bad("is not a valid PostgreSQL URL"))?;
        Ok(Some(Self { options, max_lag: Duration::from_millis(max_lag) }))
    }
}

/// Marks a response to a request that signed a user in (register, login,
/// refresh, OpenID Connect): it wrote for that user, who had no token yet.
#[derive(Debug, Clone, Copy)]
pub struct WroteAs(pub i64);

/// The pools of the one-statement reads; cheap to clone.
#[derive(Debug, Clone)]
pub struct Reads {
    primary: Pool,
    replica: Option<Arc<Replica>>,
}

impl Reads {
    /// Reads on the primary alone, with at most `max_connections` connections.
    pub fn new(options: PgConnectOptions, max_connections: u32) -> Self {
        Self { primary: Pool::new(options, max_connections), replica: None }
    }

    /// See [`Pool::with_lifetimes`].
    pub fn with_lifetimes(
        options: PgConnectOptions,
        max_connections: u32,
        idle_timeout: Duration,
        max_lifetime: Duration,
    ) -> Self {
        Self { primary: Pool::with_lifetimes(options, max_connections, idle_timeout, max_lifetime), replica: None }
    }

    /// These reads, with `replica` taking those it may.
    pub fn with_replica(self, replica: Arc<Replica>) -> Self {
        Self { replica: Some(replica), ..self }
    }

    /// The replica, when there is one.
    pub fn replica(&self) -> Option<&Arc<Replica>> {
        self.replica.as_ref()
    }

    /// Runs `read` for an anonymous caller (or one for whom nobody's writes
    /// matter): see [`Reads::run_for`].
    pub async fn run<T>(
        &self,
        read: impl AsyncFnOnce(&mut PgConnection) -> Result<T, Error> + Clone,
    ) -> Result<T, Error> {
        self.run_for(None, read).await
    }

    /// Runs `read` (one statement) for `viewer`: on the replica if it may (see
    /// the module's doc), else on the primary; see [`Pool::run`].
    pub async fn run_for<T>(
        &self,
        viewer: Option<i64>,
        read: impl AsyncFnOnce(&mut PgConnection) -> Result<T, Error> + Clone,
    ) -> Result<T, Error> {
        let Some(replica) = &self.replica else { return self.primary.run(read).await };
        match replica.route(viewer) {
            Ok(()) => {
                let fallback = read.clone();
                match replica.pool.run(read).await {
                    Err(Error::Sql(err)) if replica_failed(&err) => {
                        tracing::debug!(error = %err, "the replica failed a read: reading on the primary");
                        replica.set_status(Status::Down);
                        served("primary", "replica_failed");
                        self.primary.run(fallback).await
                    }
                    result => {
                        replica.served.fetch_add(1, Ordering::Relaxed);
                        served("replica", "ok");
                        result
                    }
                }
            }
            Err(reason) => {
                served("primary", reason);
                self.primary.run(read).await
            }
        }
    }

    /// [`Pool::try_run`] on the primary: for probes, which must not depend on
    /// the replica.
    pub async fn try_run<T>(
        &self,
        read: impl AsyncFnOnce(&mut PgConnection) -> Result<T, Error>,
    ) -> Option<Result<T, Error>> {
        self.primary.try_run(read).await
    }

    /// Refuses further reads and closes the connections, the replica's and its
    /// tasks' too.
    pub async fn close(&self) {
        if let Some(replica) = &self.replica {
            replica.close().await;
        }
        self.primary.close().await;
    }

    /// How many connections to the primary wait between reads.
    pub fn idle_count(&self) -> usize {
        self.primary.idle_count()
    }

    /// The primary pool's numbers now, for the metrics.
    pub fn stats(&self) -> PoolStats {
        self.primary.stats()
    }

    /// The replica pool's numbers now, when there is a replica.
    pub fn replica_stats(&self) -> Option<PoolStats> {
        self.replica.as_ref().map(|replica| replica.pool.stats())
    }
}

/// Counts a read in `conduit_db_reads_total`.
fn served(target: &'static str, reason: &'static str) {
    metrics::counter!(READS_SERVED, "target" => target, "reason" => reason).increment(1);
}

/// Whether a read on the replica failed for want of the replica, rather than
/// for anything about the read: then it is run on the primary.
fn replica_failed(err: &sqlx::Error) -> bool {
    super::is_unavailable(err)
        || matches!(err, sqlx::Error::PoolTimedOut)
        // 40001: "canceling statement due to conflict with recovery".
        || err.as_database_error().and_then(|db| db.code()).is_some_and(|code| code == "40001")
}

/// What the last poll found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Status {
    /// Reachable and within `MAX_REPLICA_LAG_MS`.
    Ready = 0,
    /// Not polled yet, unreachable, failing, or not a replica; or the primary
    /// could not be polled (the lag is unknown).
    Down = 1,
    /// Reachable but lagging past `MAX_REPLICA_LAG_MS`.
    Lagging = 2,
}

/// The replica, and what this server knows of it and of the writes announced.
#[derive(Debug)]
pub struct Replica {
    pool: Pool,
    max_lag: Duration,
    status: AtomicU8,
    /// The WAL position the replica had replayed at the last poll (bytes from 0/0).
    replayed: AtomicU64,
    /// Whether the listener is subscribed to the announcements.
    listening: AtomicBool,
    /// The primary's position when the listener last subscribed: writes before
    /// it may have been announced unheard, so reads with a token wait for it.
    subscribed_at: AtomicU64,
    /// Each user's last announced write not yet replayed, by position.
    writes: Mutex<HashMap<i64, u64>>,
    /// The primary's positions and when each was first seen, oldest first.
    samples: Mutex<VecDeque<(Instant, u64)>>,
    /// Reads the replica has run (for tests and logs; the metric counts them too).
    served: AtomicU64,
    /// The furthest position of the announcements the listener has heard, and
    /// what wakes those waiting for it.
    heard: AtomicU64,
    heard_more: Notify,
    /// Wakes the listener when the replica is closed or dropped.
    closed: Arc<Notify>,
    stopped: AtomicBool,
}

impl Replica {
    /// What a server knows before its first poll and subscription: the
    /// replica down, nothing replayed, not listening.
    fn new(pool: Pool, max_lag: Duration) -> Self {
        Self {
            pool,
            max_lag,
            status: AtomicU8::new(Status::Down as u8),
            replayed: AtomicU64::new(0),
            listening: AtomicBool::new(false),
            subscribed_at: AtomicU64::new(u64::MAX),
            writes: Mutex::new(HashMap::new()),
            samples: Mutex::new(VecDeque::new()),
            served: AtomicU64::new(0),
            heard: AtomicU64::new(0),
            heard_more: Notify::new(),
            closed: Arc::new(Notify::new()),
            stopped: AtomicBool::new(false),
        }
    }

    /// The replica of `config`, for a server whose primary is at `primary`;
    /// its reads have at most `max_connections` connections, each with
    /// `statement_timeout`. Starts the poll and the listener (each on a
    /// connection of its own), which run until [`Replica::close`]; until the
    /// first poll succeeds every read goes to the primary.
    pub fn start(
        config: &ReplicaConfig,
        primary: &PgConnectOptions,
        max_connections: u32,
        statement_timeout: Duration,
    ) -> Arc<Self> {
        let options = super::with_statement_timeout(config.options.clone(), statement_timeout);
        let replica =
            Arc::new(Self::new(Pool::skippable(options, max_connections, REPLICA_ACQUIRE_TIMEOUT), config.max_lag));
        let primary = primary.clone().application_name("conduit-replica-watch");
        let replica_options = config.options.clone().application_name("conduit-replica-watch");
        tokio::spawn(poll(Arc::downgrade(&replica), primary.clone(), replica_options));
        tokio::spawn(listen(Arc::downgrade(&replica), primary));
        replica
    }

    /// What the last poll found.
    pub fn status(&self) -> Status {
        match self.status.load(Ordering::Relaxed) {
            0 => Status::Ready,
            2 => Status::Lagging,
            _ => Status::Down,
        }
    }

    fn set_status(&self, status: Status) {
        self.status.store(status as u8, Ordering::Relaxed);
    }

    /// How many reads the replica has run.
    pub fn reads_served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }

    /// Whether the listener is subscribed to the announcements.
    pub fn is_listening(&self) -> bool {
        self.listening.load(Ordering::Relaxed)
    }

    /// The position of `user`'s last announced write that the replica had not
    /// replayed at the last poll, if any.
    pub fn pending_write(&self, user: i64) -> Option<u64> {
        self.writes().get(&user).copied()
    }

    /// `Ok` when a read for `viewer` may go to the replica; otherwise why not,
    /// as the metric's `reason`.
    fn route(&self, viewer: Option<i64>) -> Result<(), &'static str> {
        match self.status() {
            Status::Ready => {}
            Status::Down => return Err("replica_down"),
            Status::Lagging => return Err("replica_lagging"),
        }
        let Some(user) = viewer else { return Ok(()) };
        let replayed = self.replayed.load(Ordering::Acquire);
        if !self.is_listening() || replayed < self.subscribed_at.load(Ordering::Acquire) {
            return Err("not_listening");
        }
        match self.writes().get(&user) {
            Some(&written) if written > replayed => Err("own_write"),
            _ => Ok(()),
        }
    }

    /// Records that `user` wrote at `lsn`.
    fn record(&self, user: i64, lsn: u64) {
        if lsn <= self.replayed.load(Ordering::Acquire) {
            return;
        }
        let mut writes = self.writes();
        let entry = writes.entry(user).or_insert(lsn);
        *entry = (*entry).max(lsn);
    }

    fn writes(&self) -> MutexGuard<'_, HashMap<i64, u64>> {
        // A map is whole between any two statements: a panic cannot corrupt it.
        self.writes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes in a poll's result: the primary at `primary` (polled first), the
    /// replica having replayed up to `replayed` (polled second), at `now`.
    ///
    /// A replica found behind what it was seen to have replayed before (another
    /// standby behind the same address, or one restarted from an older
    /// restart point) is skipped until it is back there: the writes forgotten
    /// and the answers that waited for the replay relied on that position.
    fn observe(&self, now: Instant, primary: u64, replayed: u64) {
        if replayed < self.replayed.load(Ordering::Acquire) {
            self.set_status(Status::Down);
            return;
        }
        let lag = {
            let mut samples = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
            if samples.back().is_none_or(|&(_, last)| primary > last) && samples.len() < MAX_SAMPLES {
                samples.push_back((now, primary));
            }
            while samples.front().is_some_and(|&(_, position)| position <= replayed) {
                samples.pop_front();
            }
            samples.front().map_or(Duration::ZERO, |&(seen, _)| now.saturating_duration_since(seen))
        };
        self.replayed.fetch_max(replayed, Ordering::AcqRel);
        // Writes the replica now has are forgotten.
        {
            let mut writes = self.writes();
            if !writes.is_empty() {
                writes.retain(|_, written| *written > replayed);
            }
        }
        metrics::gauge!(REPLICA_LAG).set(lag.as_secs_f64());
        self.set_status(if lag > self.max_lag { Status::Lagging } else { Status::Ready });
    }

    /// Waits, at most [`HEARD_WAIT`], until this server's listener has heard an
    /// announcement at `lsn` or past it. Every listener (one per server) is
    /// sent the notification at the same commit, so once this one has it the
    /// others have it too, or are as near as their own process lets them: the
    /// write's answer, and so the client's next request, waits for that. Not
    /// waited for while not subscribed: the other servers then hear of it as
    /// fast as ever, and this one does not need to.
    async fn wait_heard(&self, lsn: u64) {
        if !self.is_listening() {
            return;
        }
        let heard = async {
            loop {
                // Made before the check, so that a wake-up in between is not missed.
                let more = self.heard_more.notified();
                if self.heard.load(Ordering::Acquire) >= lsn {
                    return;
                }
                more.await;
            }
        };
        if tokio::time::timeout(HEARD_WAIT, heard).await.is_err() {
            tracing::debug!(lsn, "the write's announcement was not heard back within {HEARD_WAIT:?}");
        }
    }

    /// Waits, at most [`REPLAY_WAIT`], until the replica has replayed the WAL
    /// up to `lsn`, asking it (one statement, after a pause that doubles from
    /// 0.5 ms up to [`REPLAY_ASK_EVERY`]) rather than waiting for the next poll;
    /// `true` once it has. From then on every read sent to the replica sees
    /// the write, from any server and for any caller, announcement or not:
    /// this is what closes the window between the write's answer and the other
    /// servers hearing of it. Not waited for when the replica is down or
    /// lagging: reads do not go there then.
    async fn wait_replayed(&self, lsn: u64) -> bool {
        if self.status() != Status::Ready {
            return false;
        }
        let replayed = async {
            let mut pause = Duration::from_micros(500);
            loop {
                if self.replayed.load(Ordering::Acquire) >= lsn {
                    return true;
                }
                let asked = self
                    .pool
                    .run(async |conn: &mut PgConnection| {
                        Ok(sqlx::query_scalar!(r#"SELECT (pg_last_wal_replay_lsn() - '0/0'::pg_lsn)::bigint AS lsn"#)
                            .fetch_one(conn)
                            .await?)
                    })
                    .await;
                // Only what this replica answers now vouches for the write: a
                // position below the one seen before is not taken (see `observe`).
                match asked {
                    Ok(Some(position)) if u64::try_from(position).unwrap_or(0) >= lsn => {
                        self.replayed.fetch_max(u64::try_from(position).unwrap_or(0), Ordering::AcqRel);
                        return true;
                    }
                    Ok(Some(_)) => {}
                    // Not a replica, or failing: the poll will say so.
                    _ => return false,
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(REPLAY_ASK_EVERY);
            }
        };
        let replayed = tokio::time::timeout(REPLAY_WAIT, replayed).await.unwrap_or(false);
        if !replayed {
            tracing::debug!(lsn, "the replica did not replay the write within {REPLAY_WAIT:?}");
        }
        replayed
    }

    /// Stops the tasks and closes the replica's connections.
    pub async fn close(&self) {
        self.stopped.store(true, Ordering::Relaxed);
        self.closed.notify_waiters();
        self.pool.close().await;
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.closed.notify_waiters();
    }
}

/// Middleware, on the router when there is a replica: announces the writes of
/// requests that may have written for a known user (see the module's doc).
pub async fn announce(replica: Arc<Replica>, writes: PgPool, request: Request, next: Next) -> Response {
    use axum::http::Method;
    if matches!(*request.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        return next.run(request).await;
    }
    // Taken now: the handler's extractor takes the caller out of the extensions.
    let caller = crate::extract::caller_id(request.extensions());
    let response = next.run(request).await;
    // A sign-in wrote for the user signed in, whatever token came along with it.
    let user = response.extensions().get::<WroteAs>().map(|wrote| wrote.0).or(caller);
    if let Some(user) = user
        && !response.status().is_client_error()
    {
        match announce_write(&writes, user).await {
            Ok(lsn) => {
                let lsn = u64::try_from(lsn).unwrap_or(0);
                replica.record(user, lsn);
                // Once the replica has the write, every read sees it; else the
                // user's own reads are kept on the primary by the announcement.
                if !replica.wait_replayed(lsn).await {
                    replica.wait_heard(lsn).await;
                }
            }
            // The write's own reads may then meet a replica behind it, within
            // MAX_REPLICA_LAG_MS: the primary is failing, so is the write's answer.
            Err(err) => tracing::warn!(error = %err, user, "cannot announce a write to the other servers"),
        }
    }
    response
}

/// The primary's WAL position now, announced to every server as `user`'s.
async fn announce_write(writes: &PgPool, user: i64) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar!(
        r#"WITH here AS (SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint AS lsn),
                told AS (SELECT pg_notify('conduit_writes', $1::bigint::text || ' ' || here.lsn::text),
                                set_config('synchronous_commit', 'off', true)
                         FROM here)
           SELECT here.lsn AS "lsn!" FROM here, told"#,
        user
    )
    .fetch_one(writes)
    .await
}

/// Every [`POLL_PERIOD`], the primary's position, then the replica's, each on
/// a connection of its own, until the replica is closed or dropped.
async fn poll(replica: std::sync::Weak<Replica>, primary: PgConnectOptions, options: PgConnectOptions) {
    let mut ticks = tokio::time::interval(POLL_PERIOD);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (mut on_primary, mut on_replica): (Option<PgConnection>, Option<PgConnection>) = (None, None);
    let mut reported = false;
    loop {
        ticks.tick().await;
        let Some(current) = replica.upgrade() else { return };
        if current.stopped.load(Ordering::Relaxed) {
            return;
        }
        let polled = tokio::time::timeout(POLL_TIMEOUT, async {
            let primary_at = position(&mut on_primary, &primary, Side::Primary).await?;
            let replayed = position(&mut on_replica, &options, Side::Replica).await?;
            Ok::<_, PollError>((primary_at, replayed))
        })
        .await
        .unwrap_or(Err(PollError::TimedOut));
        match polled {
            Ok((primary_at, replayed)) => {
                if reported {
                    tracing::info!("the read replica answers again");
                    reported = false;
                }
                current.observe(Instant::now(), primary_at, replayed);
            }
            Err(err) => {
                // A connection that timed out or failed may be mid-reply.
                if matches!(err, PollError::TimedOut | PollError::Primary(_)) {
                    on_primary = None;
                }
                if !matches!(err, PollError::Primary(_)) {
                    on_replica = None;
                }
                if !reported {
                    tracing::warn!(error = %err, "the read replica is skipped: reads go to the primary");
                    reported = true;
                }
                current.set_status(Status::Down);
            }
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Side {
    Primary,
    Replica,
}

#[derive(Debug, thiserror::Error)]
enum PollError {
    #[error("the poll timed out")]
    TimedOut,
    #[error("polling the primary: {0}")]
    Primary(sqlx::Error),
    #[error("polling the replica: {0}")]
    Replica(sqlx::Error),
    #[error("DATABASE_READ_URL is not a server in recovery (a streaming replica)")]
    NotAReplica,
}

/// One side's WAL position: the primary's `pg_current_wal_lsn()`, the
/// replica's `pg_last_wal_replay_lsn()`, on `conn`, opened first if need be.
async fn position(conn: &mut Option<PgConnection>, options: &PgConnectOptions, side: Side) -> Result<u64, PollError> {
    let wrap = |err| match side {
        Side::Primary => PollError::Primary(err),
        Side::Replica => PollError::Replica(err),
    };
    let live = match conn {
        Some(live) => live,
        None => conn.insert(PgConnection::connect_with(options).await.map_err(wrap)?),
    };
    let lsn = match side {
        Side::Primary => Some(
            sqlx::query_scalar!(r#"SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint AS "lsn!""#)
                .fetch_one(&mut *live)
                .await,
        ),
        Side::Replica => sqlx::query_scalar!(r#"SELECT (pg_last_wal_replay_lsn() - '0/0'::pg_lsn)::bigint AS lsn"#)
            .fetch_one(&mut *live)
            .await
            .transpose(),
    };
    match lsn {
        Some(Ok(lsn)) => Ok(u64::try_from(lsn).unwrap_or(0)),
        Some(Err(err)) => {
            *conn = None;
            Err(wrap(err))
        }
        None => Err(PollError::NotAReplica),
    }
}

/// Subscribes to the announcements and records each, until the replica is
/// closed or dropped; after a failure, subscribes again.
async fn listen(replica: std::sync::Weak<Replica>, primary: PgConnectOptions) {
    loop {
        let Some(current) = replica.upgrade() else { return };
        if current.stopped.load(Ordering::Relaxed) {
            return;
        }
        let closed = current.closed.clone();
        drop(current);
        let closed = closed.notified();
        tokio::select! {
            err = follow(&replica, &primary) => {
                if let Some(current) = replica.upgrade() {
                    current.listening.store(false, Ordering::Release);
                }
                if let Some(err) = err {
                    tracing::warn!(error = %err, "the write announcements' subscription failed: reads with a token go to the primary until it is back");
                }
            }
            () = closed => return,
        }
        tokio::time::sleep(RESUBSCRIBE_AFTER).await;
    }
}

/// One subscription, on a connection of its own outside the server's pools:
/// `None` when the replica is gone, else why it ended.
async fn follow(replica: &std::sync::Weak<Replica>, primary: &PgConnectOptions) -> Option<sqlx::Error> {
    let pool =
        PgPoolOptions::new().max_connections(1).acquire_timeout(POLL_TIMEOUT * 4).connect_lazy_with(primary.clone());
    let ended = subscribed(replica, &pool).await;
    // A listener dropped mid-subscription leaves its UNLISTEN on the connection,
    // which an unreachable primary never answers: closing is not waited for long.
    let _ = tokio::time::timeout(POLL_TIMEOUT, pool.close()).await;
    ended
}

async fn subscribed(replica: &std::sync::Weak<Replica>, pool: &PgPool) -> Option<sqlx::Error> {
    let subscribe = async {
        let mut listener = PgListener::connect_with(pool).await?;
        listener.listen(CHANNEL).await?;
        // The position after LISTEN: any write announced unheard is before it.
        let at = sqlx::query_scalar!(r#"SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint AS "lsn!""#)
            .fetch_one(&mut listener)
            .await?;
        Ok::<_, sqlx::Error>((listener, at))
    };
    let (mut listener, at) = match tokio::time::timeout(POLL_TIMEOUT * 4, subscribe).await {
        Ok(Ok(subscribed)) => subscribed,
        Ok(Err(err)) => return Some(err),
        Err(_) => return Some(sqlx::Error::PoolTimedOut),
    };
    {
        let current = replica.upgrade()?;
        current.subscribed_at.store(u64::try_from(at).unwrap_or(0), Ordering::Release);
        current.listening.store(true, Ordering::Release);
    }
    loop {
        let received = listener.try_recv().await;
        let current = replica.upgrade()?;
        match received {
            Ok(Some(notification)) => match parse(notification.payload()) {
                Some((user, lsn)) => {
                    current.record(user, lsn);
                    current.heard.fetch_max(lsn, Ordering::AcqRel);
                    current.heard_more.notify_waiters();
                }
                None => tracing::warn!(payload = notification.payload(), "not a write announcement on {CHANNEL}"),
            },
            // The connection was lost: announcements may have been missed.
            Ok(None) => return Some(sqlx::Error::Protocol("the listener's connection was lost".into())),
            Err(err) => return Some(err),
        }
    }
}

/// "user lsn", both decimal.
fn parse(payload: &str) -> Option<(i64, u64)> {
    let (user, lsn) = payload.split_once(' ')?;
    Some((user.parse().ok()?, lsn.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Subscribed from the start, nothing announced before it.
    fn replica(max_lag: Duration) -> Replica {
        let replica = Replica::new(Pool::new(PgConnectOptions::new(), 1), max_lag);
        replica.listening.store(true, Ordering::Relaxed);
        replica.subscribed_at.store(0, Ordering::Relaxed);
        replica
    }

    #[test]
    fn the_lag_is_the_age_of_the_oldest_position_not_replayed_and_zero_when_all_are() {
        let replica = replica(Duration::from_millis(100));
        let start = Instant::now();
        replica.observe(start, 100, 100);
        assert_eq!(replica.status(), Status::Ready);
        // The primary moves on; the replica does not.
        replica.observe(start + Duration::from_millis(50), 200, 100);
        replica.observe(start + Duration::from_millis(100), 300, 100);
        assert_eq!(replica.status(), Status::Ready, "50 ms behind");
        replica.observe(start + Duration::from_millis(160), 300, 100);
        assert_eq!(replica.status(), Status::Lagging, "200, seen at 50 ms, waits for 110 ms");
        // It replays past 200: the oldest missing is 300, seen at 100 ms.
        replica.observe(start + Duration::from_millis(170), 300, 250);
        assert_eq!(replica.status(), Status::Ready, "300 waits for 70 ms");
        replica.observe(start + Duration::from_millis(210), 300, 250);
        assert_eq!(replica.status(), Status::Lagging, "300 waits for 110 ms");
        replica.observe(start + Duration::from_millis(220), 300, 300);
        assert_eq!(replica.status(), Status::Ready, "an idle primary fully replayed has no lag");
        replica.observe(start + Duration::from_secs(60), 300, 300);
        assert_eq!(replica.status(), Status::Ready, "however long it stays idle");
    }

    #[test]
    fn a_user_reads_on_the_primary_until_the_replica_has_replayed_their_write() {
        let replica = replica(Duration::from_secs(1));
        let now = Instant::now();
        replica.observe(now, 100, 100);
        assert_eq!(replica.route(Some(7)), Ok(()));
        replica.record(7, 150);
        assert_eq!(replica.route(Some(7)), Err("own_write"));
        assert_eq!(replica.route(Some(8)), Ok(()), "another user");
        assert_eq!(replica.route(None), Ok(()), "anonymous");
        replica.observe(now, 150, 149);
        assert_eq!(replica.route(Some(7)), Err("own_write"));
        replica.observe(now, 150, 150);
        assert_eq!(replica.route(Some(7)), Ok(()));
        assert_eq!(replica.pending_write(7), None, "forgotten once replayed");
        replica.record(7, 120);
        assert_eq!(replica.pending_write(7), None, "an announcement the replica already has is not kept");
    }

    #[test]
    fn until_subscribed_and_caught_up_reads_with_a_token_go_to_the_primary() {
        let replica = replica(Duration::from_secs(1));
        replica.observe(Instant::now(), 100, 100);
        replica.listening.store(false, Ordering::Relaxed);
        assert_eq!(replica.route(Some(1)), Err("not_listening"));
        assert_eq!(replica.route(None), Ok(()));
        replica.listening.store(true, Ordering::Relaxed);
        replica.subscribed_at.store(120, Ordering::Relaxed);
        assert_eq!(replica.route(Some(1)), Err("not_listening"));
        replica.observe(Instant::now(), 120, 120);
        assert_eq!(replica.route(Some(1)), Ok(()));
    }

    #[test]
    fn a_replica_found_behind_its_last_position_takes_no_read_until_it_is_back_there() {
        let replica = replica(Duration::from_secs(1));
        let now = Instant::now();
        replica.observe(now, 100, 100);
        assert_eq!(replica.route(None), Ok(()));
        // Another standby behind the same address, or one restarted further back.
        replica.observe(now, 120, 60);
        assert_eq!(replica.route(None), Err("replica_down"));
        replica.observe(now, 120, 110);
        assert_eq!(replica.route(None), Ok(()));
    }

    #[test]
    fn a_replica_down_or_lagging_takes_no_read() {
        let replica = replica(Duration::from_secs(1));
        assert_eq!(replica.route(None), Err("replica_down"), "not polled yet");
        replica.set_status(Status::Lagging);
        assert_eq!(replica.route(None), Err("replica_lagging"));
    }

    fn config(vars: &[(&str, &str)]) -> Result<crate::config::Config, crate::config::ConfigError> {
        let vars: HashMap<String, String> = vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        crate::config::Config::from_lookup(move |name| vars.get(name).cloned())
    }

    #[test]
    fn the_replica_is_off_without_a_url_and_its_lag_defaults_to_a_second() {
        assert!(config(&[]).expect("defaults").replica.is_none());
        assert!(config(&[("MAX_REPLICA_LAG_MS", "250")]).expect("a lag alone").replica.is_none());
        let url = ("DATABASE_READ_URL", "postgres://reader@replica:5433/conduit");
        let replica = config(&[url]).expect("a replica").replica.expect("on");
        assert_eq!(replica.max_lag, Duration::from_secs(1));
        assert_eq!((replica.options.get_host(), replica.options.get_port()), ("replica", 5433));
        let replica = config(&[url, ("MAX_REPLICA_LAG_MS", "250")]).expect("a lag").replica.expect("on");
        assert_eq!(replica.max_lag, Duration::from_millis(250));
    }

    #[test]
    fn bad_replica_settings_name_their_variable() {
        for (vars, var) in [
            (vec![("DATABASE_READ_URL", "mysql://replica/db")], "DATABASE_READ_URL"),
            (vec![("DATABASE_READ_URL", "postgres://replica:port/db")], "DATABASE_READ_URL"),
            (vec![("MAX_REPLICA_LAG_MS", "0")], "MAX_REPLICA_LAG_MS"),
            (vec![("MAX_REPLICA_LAG_MS", "1s")], "MAX_REPLICA_LAG_MS"),
            (vec![("DATABASE_READ_URL", "postgres://r/db"), ("MAX_REPLICA_LAG_MS", "-5")], "MAX_REPLICA_LAG_MS"),
        ] {
            assert_eq!(config(&vars).expect_err("refused").var, var, "{vars:?}");
        }
    }

    #[test]
    fn announcements_are_a_user_and_a_position() {
        assert_eq!(parse("42 123456"), Some((42, 123_456)));
        for bad in ["", "42", "x 1", "1 -2", "1 2 3"] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }
}
