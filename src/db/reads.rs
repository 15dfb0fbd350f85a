//! Connections for the one-statement reads, taken back without a round trip.
//!
//! sqlx's pool pings every connection it takes back (`return_to_pool` in
//! sqlx-core 0.9, not configurable), in case a cancelled future left it
//! mid-query. For a read that is one statement, that ping is a third of the
//! request's trips to PostgreSQL, and each trip wakes two processes on the cores
//! the server shares with PostgreSQL. Here a read runs inside [`Pool::run`],
//! which takes its connection back, with no trip at all, once it has run to
//! completion.
//!
//! Only a read whose future was dropped midway (the client left, or the request
//! timed out) leaves its connection to be pinged, in a task of its
//! own: the ping waits for the abandoned statement to finish (PostgreSQL cancels
//! it at the request's time limit, see [`super::open`]), then the connection is
//! pooled again, or closed if it does not answer within [`RECOVER_TIMEOUT`].
//! The lease's slot stays taken meanwhile, so abandoned statements cannot pile
//! up beyond the pool's size.
//!
//! Like the write pool ([`super::connect`]), a connection idle for a second or
//! more is pinged before it is lent again; one that breaks while in steady use
//! fails the read that holds it, and is then replaced. Also like it (sqlx's
//! defaults), connections do not live for ever: one idle for [`IDLE_TIMEOUT`] is
//! closed, so that a quiet server gives its backends back to PostgreSQL, and one
//! open for [`MAX_LIFETIME`] is closed when it comes back or while it waits, so
//! that a backend's caches cannot grow without end and a server moved behind
//! the same address (a failover) is reached again. An expired connection is not
//! lent again, even before the pool's task has closed it. Writes keep sqlx's pool:
//! they run several statements in a transaction.
//!
//! A read is idempotent: one that fails because the connection it was lent from
//! the idle ones had died (PostgreSQL restarted, or ended the session: see
//! [`super::is_unavailable`]) runs once more, on a new connection. A restart
//! otherwise fails one read per pooled connection. When PostgreSQL refuses new
//! connections, the first read to meet it retries for [`CONNECT_RETRY`] (a
//! server that is starting, a restart); the reads after it, while the refusals
//! go on, try once: a database that is down is answered within a second, not
//! after a queue of retries.

use std::{
    ops::{Deref, DerefMut},
    sync::{
        Arc, Mutex, MutexGuard, PoisonError, Weak,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use sqlx::{
    Connection as _, PgConnection,
    postgres::{PgConnectOptions, PgDatabaseError, PgSeverity},
};

use super::Error;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};

/// How long a read waits for a connection (a free slot and, if need be, a new
/// connection) before it fails with [`sqlx::Error::PoolTimedOut`].
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// A connection idle this long is pinged before it is lent again.
const PING_AFTER: Duration = Duration::from_secs(1);

/// How long an abandoned connection may take to finish its statement and answer.
const RECOVER_TIMEOUT: Duration = Duration::from_secs(30);

/// A connection idle this long is closed (sqlx's default, as in the write pool).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10 * 60);

/// A connection open this long is closed once no read holds it (sqlx's default).
pub const MAX_LIFETIME: Duration = Duration::from_secs(30 * 60);

/// How long a new connection is retried while PostgreSQL refuses it for a
/// passing reason.
const CONNECT_RETRY: Duration = Duration::from_secs(1);

/// How long closing a connection (the Terminate message) may take.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// At most `max_connections` connections, opened on first need and closed when
/// idle for [`IDLE_TIMEOUT`] or open for [`MAX_LIFETIME`].
#[derive(Debug, Clone)]
pub struct Pool(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    options: PgConnectOptions,
    /// One permit per connection that may be open; a lease holds one.
    permits: Arc<Semaphore>,
    /// How many permits there are (the semaphore says only how many are free).
    max_connections: usize,
    /// Reads waiting for a permit, for the metrics ([`Pool::stats`]).
    waiting: AtomicUsize,
    /// Connections between reads, in the order they came back: the most
    /// recently used last. Empty for good once the pool is closed.
    idle: Mutex<Vec<Idle>>,
    idle_timeout: Duration,
    max_lifetime: Duration,
    /// When a new connection was last refused, if the refusals have not ended.
    refused_since: Mutex<Option<Instant>>,
    /// How long a read waits for a connection ([`ACQUIRE_TIMEOUT`] unless set).
    acquire_timeout: Duration,
    /// How long a refused connection is retried ([`CONNECT_RETRY`] unless set).
    connect_retry: Duration,
}

#[derive(Debug)]
struct Idle {
    conn: PgConnection,
    opened: Instant,
    since: Instant,
}

/// A connection lent for one read, handed back by [`Pool::run`].
#[derive(Debug)]
struct Lease {
    /// `Some` until the lease ends.
    conn: Option<PgConnection>,
    opened: Instant,
    pool: Pool,
    permit: Option<OwnedSemaphorePermit>,
    /// Taken from the idle ones, rather than opened for this read.
    reused: bool,
}

impl Pool {
    /// A pool that opens no connection until the first read, with sqlx's
    /// [`IDLE_TIMEOUT`] and [`MAX_LIFETIME`].
    pub fn new(options: PgConnectOptions, max_connections: u32) -> Self {
        Self::with_lifetimes(options, max_connections, IDLE_TIMEOUT, MAX_LIFETIME)
    }

    /// A pool whose connections are closed when idle for `idle_timeout` or open
    /// for `max_lifetime`. Made in a Tokio runtime, it starts a task that closes
    /// the idle ones that have expired; the task ends at its first tick after the
    /// pool is closed or dropped.
    pub fn with_lifetimes(
        options: PgConnectOptions,
        max_connections: u32,
        idle_timeout: Duration,
        max_lifetime: Duration,
    ) -> Self {
        Self::with_settings(options, max_connections, idle_timeout, max_lifetime, ACQUIRE_TIMEOUT, CONNECT_RETRY)
    }

    fn with_settings(
        options: PgConnectOptions,
        max_connections: u32,
        idle_timeout: Duration,
        max_lifetime: Duration,
        acquire_timeout: Duration,
        connect_retry: Duration,
    ) -> Self {
        let inner = Arc::new(Inner {
            options: super::session_options(options),
            permits: Arc::new(Semaphore::new(max_connections as usize)),
            max_connections: max_connections as usize,
            waiting: AtomicUsize::new(0),
            idle: Mutex::new(Vec::new()),
            idle_timeout,
            max_lifetime,
            refused_since: Mutex::new(None),
            acquire_timeout,
            connect_retry,
        });
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            // A zero period would panic in `interval`.
            let period = (idle_timeout.min(max_lifetime) / 4).max(Duration::from_millis(1));
            runtime.spawn(reap(Arc::downgrade(&inner), period));
        }
        Self(inner)
    }

    /// A pool that waits at most `acquire_timeout` for a connection and never
    /// retries a refused one: for a server that may be skipped (the read
    /// replica, whose reads fall back to the primary), whose absence must cost
    /// a read no more than that.
    pub fn skippable(options: PgConnectOptions, max_connections: u32, acquire_timeout: Duration) -> Self {
        Self::with_settings(options, max_connections, IDLE_TIMEOUT, MAX_LIFETIME, acquire_timeout, Duration::ZERO)
    }

    /// Runs `read` (one statement) on a connection of the pool, an idle one if
    /// there is, else a new one, and takes the connection back. If the idle
    /// connection turns out to be dead, a copy of `read` runs on a new one
    /// (`Clone` rather than `AsyncFnMut`, whose futures the compiler cannot yet
    /// prove `Send` in a handler; a read's closure holds only references).
    pub async fn run<T>(
        &self,
        read: impl AsyncFnOnce(&mut PgConnection) -> Result<T, Error> + Clone,
    ) -> Result<T, Error> {
        let mut lease = self.acquire().await.map_err(Error::Sql)?;
        let retry = read.clone();
        let result = read(&mut lease).await;
        match result {
            Err(Error::Sql(err)) if lease.reused && super::is_unavailable(&err) => {
                tracing::debug!(error = %err, "a pooled connection was lost: reading again on a new one");
                lease.reconnect().await.map_err(Error::Sql)?;
                let again = retry(&mut lease).await;
                lease.release(again)
            }
            result => lease.release(result),
        }
    }

    /// [`Pool::run`] if a connection may be had now; `None` when every one the
    /// pool may open is lent. For probes that must not queue behind reads.
    pub async fn try_run<T>(
        &self,
        read: impl AsyncFnOnce(&mut PgConnection) -> Result<T, Error>,
    ) -> Option<Result<T, Error>> {
        let mut lease = match self.try_acquire().await? {
            Ok(lease) => lease,
            Err(err) => return Some(Err(Error::Sql(err))),
        };
        let result = read(&mut lease).await;
        Some(lease.release(result))
    }

    async fn acquire(&self) -> Result<Lease, sqlx::Error> {
        tokio::time::timeout(self.0.acquire_timeout, async {
            let permit = match self.0.permits.clone().try_acquire_owned() {
                Ok(permit) => permit,
                Err(TryAcquireError::Closed) => return Err(sqlx::Error::PoolClosed),
                Err(TryAcquireError::NoPermits) => {
                    let _waiting = Waiting::enter(&self.0.waiting);
                    self.0.permits.clone().acquire_owned().await.map_err(|_| sqlx::Error::PoolClosed)?
                }
            };
            self.lend(permit).await
        })
        .await
        .map_err(|_| sqlx::Error::PoolTimedOut)?
    }

    async fn try_acquire(&self) -> Option<Result<Lease, sqlx::Error>> {
        let permit = match self.0.permits.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(TryAcquireError::NoPermits) => return None,
            Err(TryAcquireError::Closed) => return Some(Err(sqlx::Error::PoolClosed)),
        };
        Some(
            tokio::time::timeout(self.0.acquire_timeout, self.lend(permit))
                .await
                .unwrap_or(Err(sqlx::Error::PoolTimedOut)),
        )
    }

    /// A lease on the slot `permit` holds: an idle connection if there is, else a new one.
    async fn lend(&self, permit: OwnedSemaphorePermit) -> Result<Lease, sqlx::Error> {
        // Bound first: the guard must not be held across the ping. A connection
        // that expired since the reaper's last tick is closed, not lent.
        let reused = loop {
            let idle = self.0.idle().pop();
            match idle {
                Some(idle) if self.0.expired(&idle) => retire(idle.conn),
                idle => break idle,
            }
        };
        let (conn, opened, reused) = match reused {
            Some(idle) if idle.since.elapsed() < PING_AFTER => (idle.conn, idle.opened, true),
            Some(mut idle) => match idle.conn.ping().await {
                Ok(()) => (idle.conn, idle.opened, true),
                Err(_) => (self.connect().await?, Instant::now(), false),
            },
            None => (self.connect().await?, Instant::now(), false),
        };
        Ok(Lease { conn: Some(conn), opened, pool: self.clone(), permit: Some(permit), reused })
    }

    /// Refuses further reads and closes the idle connections; a lease still out
    /// drops its connection when it ends.
    pub async fn close(&self) {
        self.0.permits.close();
        let idle = std::mem::take(&mut *self.0.idle());
        close_all(idle.into_iter().map(|idle| idle.conn)).await;
    }

    /// How many connections wait in the pool between reads.
    pub fn idle_count(&self) -> usize {
        self.0.idle().len()
    }

    /// The pool's numbers now, for the metrics.
    pub fn stats(&self) -> PoolStats {
        let idle = self.idle_count();
        let lent = self.0.max_connections.saturating_sub(self.0.permits.available_permits());
        PoolStats {
            connections: lent + idle,
            idle,
            waiting: self.0.waiting.load(Ordering::Relaxed),
            max: self.0.max_connections,
        }
    }

    /// A new connection, retried for up to [`CONNECT_RETRY`] while PostgreSQL
    /// refuses it for a passing reason (not listening yet, starting up, out of
    /// connection slots), as sqlx's pool does; tried only once while earlier
    /// refusals go on. The caller's timeout bounds it all.
    async fn connect(&self) -> Result<PgConnection, sqlx::Error> {
        let started = Instant::now();
        let mut backoff = Duration::from_millis(10);
        loop {
            match PgConnection::connect_with(&self.0.options).await {
                Err(err) if is_transient(&err) => {
                    let refusing = *self.0.refused_since().get_or_insert(started);
                    if refusing < started || started.elapsed() >= self.0.connect_retry {
                        return Err(err);
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_millis(200));
                }
                connected => {
                    if connected.is_ok() {
                        *self.0.refused_since() = None;
                    }
                    return connected;
                }
            }
        }
    }

    /// Pools `conn` again, unless it has lived its time or the pool has been
    /// closed. The latter is checked under the lock, so that `close` cannot miss
    /// a connection pushed as it runs.
    fn put_back(&self, conn: PgConnection, opened: Instant) {
        if opened.elapsed() >= self.0.max_lifetime {
            retire(conn);
            return;
        }
        let mut idle = self.0.idle();
        if !self.0.permits.is_closed() {
            idle.push(Idle { conn, opened, since: Instant::now() });
        }
    }
}

/// What [`Pool::stats`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStats {
    /// Connections open: the idle ones, and a slot per read in progress (a
    /// read that is still opening its connection counts as one).
    pub connections: usize,
    /// Connections waiting between reads.
    pub idle: usize,
    /// Reads waiting for a free slot (every connection the pool may open is lent).
    pub waiting: usize,
    /// Most connections the pool may open.
    pub max: usize,
}

/// Counts a read waiting for a slot, until it has one, times out or is dropped.
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn enter(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Self(count)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Inner {
    fn idle(&self) -> MutexGuard<'_, Vec<Idle>> {
        // The vector is whole between any two statements: a panic cannot corrupt it.
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn refused_since(&self) -> MutexGuard<'_, Option<Instant>> {
        self.refused_since.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether `idle` has waited its idle timeout or lived its lifetime.
    fn expired(&self, idle: &Idle) -> bool {
        idle.since.elapsed() >= self.idle_timeout || idle.opened.elapsed() >= self.max_lifetime
    }

    /// Takes out the idle connections that have expired.
    fn take_expired(&self) -> Vec<PgConnection> {
        self.idle().extract_if(.., |idle| self.expired(idle)).map(|idle| idle.conn).collect()
    }
}

/// Every `period`, closes the pool's expired idle connections, until the pool
/// is closed or gone.
async fn reap(pool: Weak<Inner>, period: Duration) {
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let expired = match pool.upgrade() {
            Some(inner) if !inner.permits.is_closed() => inner.take_expired(),
            _ => return,
        };
        close_all(expired).await;
    }
}

/// Closes `conns` politely (a Terminate message, so that PostgreSQL logs no
/// lost client), each within [`CLOSE_TIMEOUT`].
async fn close_all(conns: impl IntoIterator<Item = PgConnection>) {
    for conn in conns {
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, conn.close()).await;
    }
}

/// Closes `conn` in a task of its own, off the read's path; outside a runtime
/// (the process is ending) it is just dropped.
fn retire(conn: PgConnection) {
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(close_all([conn]));
    }
}

impl Lease {
    /// Replaces the lease's connection, found dead, with a new one.
    async fn reconnect(&mut self) -> Result<(), sqlx::Error> {
        // Dead: dropped, with no Terminate message to send.
        self.conn = None;
        self.conn = Some(self.pool.connect().await?);
        self.opened = Instant::now();
        self.reused = false;
        Ok(())
    }

    /// Ends the lease with the read's result, which it passes through. The
    /// connection goes back to the pool if the read left it ready for the next:
    /// it succeeded, found no row, or PostgreSQL refused the statement (every
    /// typed [`Error`] is such a refusal). After any other error (I/O, protocol,
    /// decoding: a reply may be half read) or a FATAL one (the session is over),
    /// it is closed.
    fn release<T>(mut self, result: Result<T, Error>) -> Result<T, Error> {
        let clean = match &result {
            Ok(_) | Err(Error::Sql(sqlx::Error::RowNotFound)) => true,
            Err(Error::Sql(sqlx::Error::Database(db))) => !db
                .try_downcast_ref::<PgDatabaseError>()
                .is_some_and(|db| matches!(db.severity(), PgSeverity::Fatal | PgSeverity::Panic)),
            Err(Error::Sql(_)) => false,
            Err(_) => true,
        };
        if let Some(conn) = self.conn.take().filter(|_| clean) {
            self.pool.put_back(conn, self.opened);
        }
        // `self` drops here with its permit: only now may the next read take the
        // slot, and find the connection idle.
        result
    }
}

impl Drop for Lease {
    /// A lease that was not released was cancelled mid-read: its connection may
    /// still be running the statement, or hold part of its reply.
    fn drop(&mut self) {
        let (Some(mut conn), Some(permit)) = (self.conn.take(), self.permit.take()) else { return };
        let (pool, opened) = (self.pool.clone(), self.opened);
        // Outside a runtime (the process is ending), the connection just closes.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                // sqlx reads past the abandoned reply before it pings.
                if let Ok(Ok(())) = tokio::time::timeout(RECOVER_TIMEOUT, conn.ping()).await {
                    pool.put_back(conn, opened);
                }
                drop(permit);
            });
        }
    }
}

impl Deref for Lease {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        self.conn.as_ref().expect("a lease holds its connection until it ends")
    }
}

impl DerefMut for Lease {
    fn deref_mut(&mut self) -> &mut PgConnection {
        self.conn.as_mut().expect("a lease holds its connection until it ends")
    }
}

/// A connection refused for a reason that passes: nothing listening yet (I/O),
/// 57P03 (the server is starting up) or 53300 (no connection slot free).
fn is_transient(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Io(_) => true,
        sqlx::Error::Database(db) => matches!(db.code().as_deref(), Some("57P03" | "53300")),
        _ => false,
    }
}
