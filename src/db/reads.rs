//! Connections for the one-statement reads, taken back without a round trip.
//!
//! sqlx's pool pings every connection it takes back (`return_to_pool` in
//! sqlx-core 0.9, not configurable), in case a cancelled future left it
//! mid-query. For a read that is one statement, that ping is a third of the
//! request's trips to PostgreSQL, and each trip wakes two processes on the cores
//! the server shares with PostgreSQL. This pool makes the ping unnecessary
//! instead: a connection comes back only through [`Lease::release`], after a
//! read that ran to completion. A lease dropped without it (the handler's future
//! was cancelled because the client left or the request timed out) closes its
//! connection, so none returns in an unknown state.
//!
//! Like the write pool ([`super::connect`]), a connection idle for a second or
//! more is pinged before it is lent again; one that breaks while in steady use
//! fails the read that holds it, and is then replaced.
//!
//! Writes keep sqlx's pool: they run several statements in a transaction.

use std::{
    ops::{Deref, DerefMut},
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::{Duration, Instant},
};

use sqlx::{
    Connection as _, PgConnection,
    postgres::{PgConnectOptions, PgDatabaseError, PgSeverity},
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How long a read waits for a connection (a free slot and, if need be, a new
/// connection) before it fails with [`sqlx::Error::PoolTimedOut`].
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// A connection idle this long is pinged before it is lent again.
const PING_AFTER: Duration = Duration::from_secs(1);

/// At most `max_connections` connections, opened on first need and kept open.
#[derive(Debug, Clone)]
pub struct Reads(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    options: PgConnectOptions,
    /// One permit per connection that may be open; a lease holds one.
    permits: Arc<Semaphore>,
    /// Connections between reads, with the time they came back; the most
    /// recently used last.
    idle: Mutex<Vec<(PgConnection, Instant)>>,
}

/// A connection lent for one read. Hand it back with [`Lease::release`].
#[derive(Debug)]
pub struct Lease {
    conn: PgConnection,
    pool: Reads,
    permit: OwnedSemaphorePermit,
}

impl Reads {
    /// A pool that opens no connection until the first read.
    pub fn new(options: PgConnectOptions, max_connections: u32) -> Self {
        Self(Arc::new(Inner {
            options: super::session_options(options),
            permits: Arc::new(Semaphore::new(max_connections as usize)),
            idle: Mutex::new(Vec::new()),
        }))
    }

    /// A connection for one read: an idle one if there is, else a new one.
    pub async fn acquire(&self) -> Result<Lease, sqlx::Error> {
        tokio::time::timeout(ACQUIRE_TIMEOUT, async {
            let permit = self.0.permits.clone().acquire_owned().await.map_err(|_| sqlx::Error::PoolClosed)?;
            // Bound first: the guard must not be held across the ping.
            let reused = self.idle().pop();
            let conn = match reused {
                Some((conn, since)) if since.elapsed() < PING_AFTER => conn,
                Some((mut conn, _)) => match conn.ping().await {
                    Ok(()) => conn,
                    Err(_) => PgConnection::connect_with(&self.0.options).await?,
                },
                None => PgConnection::connect_with(&self.0.options).await?,
            };
            Ok(Lease { conn, pool: self.clone(), permit })
        })
        .await
        .map_err(|_| sqlx::Error::PoolTimedOut)?
    }

    /// Refuses further reads and closes the idle connections; a lease still out
    /// closes its connection when it ends.
    pub async fn close(&self) {
        self.0.permits.close();
        let idle = std::mem::take(&mut *self.idle());
        for (conn, _) in idle {
            let _ = conn.close().await;
        }
    }

    /// How many connections wait in the pool between reads.
    pub fn idle_count(&self) -> usize {
        self.idle().len()
    }

    fn idle(&self) -> MutexGuard<'_, Vec<(PgConnection, Instant)>> {
        // The vector is whole between any two statements: a panic cannot corrupt it.
        self.0.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Lease {
    /// Ends the lease with the read's result, which it passes through. The
    /// connection goes back to the pool if the read left it ready for the next:
    /// it succeeded, found no row, or PostgreSQL refused the statement. After any
    /// other error (I/O, protocol, decoding: a reply may be half read) or a FATAL
    /// one (the session is over), it is closed.
    pub fn release<T>(self, result: Result<T, sqlx::Error>) -> Result<T, sqlx::Error> {
        let clean = match &result {
            Ok(_) | Err(sqlx::Error::RowNotFound) => true,
            Err(sqlx::Error::Database(db)) => !db
                .try_downcast_ref::<PgDatabaseError>()
                .is_some_and(|db| matches!(db.severity(), PgSeverity::Fatal | PgSeverity::Panic)),
            Err(_) => false,
        };
        let Self { conn, pool, permit } = self;
        if clean && !pool.0.permits.is_closed() {
            pool.idle().push((conn, Instant::now()));
        }
        // Only now may the next read take the slot, and find the connection idle.
        drop(permit);
        result
    }
}

impl Deref for Lease {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        &self.conn
    }
}

impl DerefMut for Lease {
    fn deref_mut(&mut self) -> &mut PgConnection {
        &mut self.conn
    }
}
