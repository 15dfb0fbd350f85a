//! What makes a well-signed access token refused before it expires: its account
//! was deleted, or its session was revoked (logout, reuse of a refresh token, a
//! changed password...).
//!
//! An access token is a signed claim, valid until it expires, and no statement
//! checks that its account or session is still there. Rather than look them up
//! on every request (a second statement for every read with a token), each server
//! keeps the ids of deleted accounts and of recently revoked sessions in memory,
//! and the authentication path refuses their tokens as revoked, alike on every
//! endpoint (`extract::authenticate`).
//!
//! The database tells every server: deleting a user records the id in
//! `deleted_accounts`, and revoking a session sets its `revoked_at`; each sends a
//! `NOTIFY` when its transaction commits (see the migrations). A server
//! subscribes to both channels on one connection of its own first and reads the
//! tables second, so that a change between the two is not missed; after a lost
//! connection it subscribes and reads again. Only changes younger than the
//! tokens' lifetime are read: older ones' tokens have all expired. For the same
//! reason a revoked session is forgotten once the lifetime has passed, so that
//! the set stays as small as the tokens that could still name it.
//!
//! Between a commit and its notification's arrival (a few milliseconds), a token
//! of the deleted account or revoked session still passes. For a deleted
//! account, a write that would insert a row naming it then fails on a foreign
//! key, which the database layer reports as `db::Error::CallerGone`, answered as
//! the same `401`; one that only removes rows (unfollow, unfavorite, delete)
//! finds none of the account's left, as they went with it, and is answered as
//! for anyone else.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, PoisonError, RwLock, Weak},
    time::{Duration, Instant},
};

use sqlx::{
    PgPool,
    postgres::{PgConnectOptions, PgListener, PgPoolOptions},
};
use tokio::sync::Notify;
use uuid::Uuid;

/// The channel of deleted accounts, with the account's id as payload.
const ACCOUNTS: &str = "deleted_accounts";
/// The channel of revoked sessions, with the session's id as payload.
const SESSIONS: &str = "revoked_sessions";

/// How long to wait before subscribing again after a failure.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Tokens are accepted up to this long after their `exp` (`jwt`'s leeway), so a
/// revocation is remembered this much longer than the tokens' lifetime.
pub(crate) const LEEWAY: Duration = Duration::from_secs(60);

/// The sets, and what tells their task that the last handle is gone.
#[derive(Debug, Default)]
struct Sets {
    accounts: RwLock<HashSet<i64>>,
    /// Revoked sessions, with when this server heard of each.
    sessions: RwLock<HashMap<Uuid, Instant>>,
    dropped: Arc<Notify>,
}

impl Drop for Sets {
    fn drop(&mut self) {
        // A permit is kept if the task is not waiting at this moment.
        self.dropped.notify_one();
    }
}

impl Sets {
    fn add_session(&self, id: Uuid, token_lifetime: Duration) {
        let mut sessions = self.sessions.write().unwrap_or_else(PoisonError::into_inner);
        sessions.insert(id, Instant::now());
        // Now and then, forget revocations older than any token that named them.
        if sessions.len().is_power_of_two() && sessions.len() >= 1024 {
            let keep = token_lifetime + LEEWAY;
            sessions.retain(|_, heard| heard.elapsed() < keep);
        }
    }
}

/// The ids of deleted accounts and revoked sessions; cheap to clone, shared by
/// every request.
#[derive(Debug, Clone, Default)]
pub struct Revocations(Arc<Sets>);

impl Revocations {
    /// Whether the account `user_id` has been deleted.
    pub fn account_deleted(&self, user_id: i64) -> bool {
        self.0.accounts.read().unwrap_or_else(PoisonError::into_inner).contains(&user_id)
    }

    /// Whether the session `id` has been revoked.
    pub fn session_revoked(&self, id: Uuid) -> bool {
        self.0.sessions.read().unwrap_or_else(PoisonError::into_inner).contains_key(&id)
    }

    /// Records a revocation this server made itself, before its notification
    /// comes back, so that its own next request sees it at once.
    pub fn revoke_session(&self, id: Uuid) {
        self.0.sessions.write().unwrap_or_else(PoisonError::into_inner).insert(id, Instant::now());
    }

    /// The sets as the database at `options` has them now, kept current by a
    /// task until the last clone is dropped, which also closes its connection.
    /// The task has a connection of its own, outside the server's pools, so that
    /// it takes no slot from them. `token_lifetime` bounds which changes matter.
    pub async fn follow(options: &PgConnectOptions, token_lifetime: Duration) -> Result<Self, sqlx::Error> {
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(5))
            .connect_lazy_with(options.clone().application_name("conduit-listener"));
        let revocations = Self::default();
        let listener = subscribe(&revocations.0, &pool, token_lifetime).await?;
        let (sets, dropped) = (Arc::downgrade(&revocations.0), revocations.0.dropped.clone());
        tokio::spawn(async move {
            tokio::select! {
                () = keep_current(sets, listener, &pool, token_lifetime) => {}
                () = dropped.notified() => {}
            }
            pool.close().await;
        });
        Ok(revocations)
    }
}

/// Listens to the channels, then reads the recent changes on the same
/// connection, so that one committed in between is both read and notified.
async fn subscribe(sets: &Sets, pool: &PgPool, token_lifetime: Duration) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen_all([ACCOUNTS, SESSIONS]).await?;
    reload(sets, &mut listener, token_lifetime).await?;
    Ok(listener)
}

async fn reload(sets: &Sets, listener: &mut PgListener, token_lifetime: Duration) -> Result<(), sqlx::Error> {
    let seconds = (token_lifetime + LEEWAY).as_secs_f64();
    let deleted = sqlx::query_scalar!(
        "SELECT user_id FROM deleted_accounts WHERE deleted_at > now() - make_interval(secs => $1)",
        seconds
    )
    .fetch_all(&mut *listener)
    .await?;
    sets.accounts.write().unwrap_or_else(PoisonError::into_inner).extend(deleted);
    let revoked =
        sqlx::query_scalar!("SELECT id FROM sessions WHERE revoked_at > now() - make_interval(secs => $1)", seconds)
            .fetch_all(listener)
            .await?;
    let now = Instant::now();
    sets.sessions.write().unwrap_or_else(PoisonError::into_inner).extend(revoked.into_iter().map(|id| (id, now)));
    Ok(())
}

/// Adds each notified id; after a lost connection (the listener reconnects and
/// listens again by itself) or a failure, reads the tables again.
async fn keep_current(sets: Weak<Sets>, mut listener: PgListener, pool: &PgPool, token_lifetime: Duration) {
    loop {
        let received = listener.try_recv().await;
        let Some(current) = sets.upgrade() else { return };
        let outcome = match received {
            Ok(Some(notification)) => {
                let payload = notification.payload();
                match notification.channel() {
                    ACCOUNTS => match payload.parse() {
                        Ok(id) => {
                            current.accounts.write().unwrap_or_else(PoisonError::into_inner).insert(id);
                        }
                        Err(_) => tracing::warn!(payload, "not an account id on {ACCOUNTS}"),
                    },
                    _ => match payload.parse() {
                        Ok(id) => current.add_session(id, token_lifetime),
                        Err(_) => tracing::warn!(payload, "not a session id on {SESSIONS}"),
                    },
                }
                Ok(())
            }
            Ok(None) => reload(&current, &mut listener, token_lifetime).await,
            Err(err) => Err(err),
        };
        drop(current);
        if let Err(err) = outcome {
            tracing::warn!(error = %err, "the revocations subscription failed; subscribing again");
            // It holds the pool's one connection, which the new one needs.
            drop(listener);
            let Some(renewed) = resubscribe(&sets, pool, token_lifetime).await else { return };
            listener = renewed;
        }
    }
}

/// A new subscription, retried every [`RETRY_AFTER`] until it succeeds; `None`
/// once the sets are no longer used.
async fn resubscribe(sets: &Weak<Sets>, pool: &PgPool, token_lifetime: Duration) -> Option<PgListener> {
    loop {
        tokio::time::sleep(RETRY_AFTER).await;
        let current = sets.upgrade()?;
        match subscribe(&current, pool, token_lifetime).await {
            Ok(listener) => return Some(listener),
            Err(err) => tracing::warn!(error = %err, "subscribing to revocations failed; retrying"),
        }
    }
}
