//! The accounts whose tokens are refused because the account is gone.
//!
//! An access token is a signed claim, valid until it expires, and no statement
//! checks that its account still exists. Rather than look the account up on every
//! request (a second statement for every read with a token), each server keeps the
//! ids of deleted accounts in memory, and the authentication path refuses their
//! tokens as revoked, alike on every endpoint (`extract::authenticate`).
//!
//! The database tells every server: deleting a user records the id in
//! `deleted_accounts` and sends a `NOTIFY` when the deletion commits (see the
//! migration). A server subscribes first and reads the table second, so that a
//! deletion between the two is not missed; after a lost connection it subscribes
//! and reads again. Only deletions younger than the tokens' lifetime are read: an
//! older one's tokens have all expired.
//!
//! Between a deletion's commit and its notification's arrival (a few
//! milliseconds), a token of the deleted account still passes. A write that
//! would insert a row naming the account then fails on a foreign key, which the
//! database layer reports as `db::Error::CallerGone`, answered as the same `401`;
//! one that only removes rows (unfollow, unfavorite, delete) finds none of the
//! account's left, as they went with it, and is answered as for anyone else.

use std::{
    collections::HashSet,
    sync::{Arc, PoisonError, RwLock, Weak},
    time::Duration,
};

use sqlx::{
    PgPool,
    postgres::{PgConnectOptions, PgListener, PgPoolOptions},
};
use tokio::sync::Notify;

/// The channel the migration's trigger notifies, with the account's id as payload.
const CHANNEL: &str = "deleted_accounts";

/// How long to wait before subscribing again after a failure.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// The set, and what tells its task that the last handle is gone.
#[derive(Debug, Default)]
struct Ids {
    ids: RwLock<HashSet<i64>>,
    dropped: Arc<Notify>,
}

impl Drop for Ids {
    fn drop(&mut self) {
        // A permit is kept if the task is not waiting at this moment.
        self.dropped.notify_one();
    }
}

/// The ids of deleted accounts; cheap to clone, shared by every request.
#[derive(Debug, Clone, Default)]
pub struct DeletedAccounts(Arc<Ids>);

impl DeletedAccounts {
    /// Whether the account `user_id` has been deleted.
    pub fn contains(&self, user_id: i64) -> bool {
        self.0.ids.read().unwrap_or_else(PoisonError::into_inner).contains(&user_id)
    }

    /// The set as the database at `options` has it now, kept current by a task
    /// until the last clone of the set is dropped, which also closes its
    /// connection. The task has a connection of
    /// its own, outside the server's pools, so that it takes no slot from them.
    /// `token_lifetime` bounds which deletions matter.
    pub async fn follow(options: &PgConnectOptions, token_lifetime: Duration) -> Result<Self, sqlx::Error> {
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(5))
            .connect_lazy_with(options.clone().application_name("conduit-listener"));
        let accounts = Self::default();
        let listener = subscribe(&accounts.0, &pool, token_lifetime).await?;
        let (ids, dropped) = (Arc::downgrade(&accounts.0), accounts.0.dropped.clone());
        tokio::spawn(async move {
            tokio::select! {
                () = keep_current(ids, listener, &pool, token_lifetime) => {}
                () = dropped.notified() => {}
            }
            pool.close().await;
        });
        Ok(accounts)
    }
}

/// Listens to the channel, then reads the recent deletions on the same
/// connection, so that one committed in between is both read and notified.
async fn subscribe(ids: &Ids, pool: &PgPool, token_lifetime: Duration) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(CHANNEL).await?;
    reload(ids, &mut listener, token_lifetime).await?;
    Ok(listener)
}

async fn reload(ids: &Ids, listener: &mut PgListener, token_lifetime: Duration) -> Result<(), sqlx::Error> {
    let seconds = token_lifetime.as_secs_f64();
    let deleted = sqlx::query_scalar!(
        "SELECT user_id FROM deleted_accounts WHERE deleted_at > now() - make_interval(secs => $1)",
        seconds
    )
    .fetch_all(listener)
    .await?;
    ids.ids.write().unwrap_or_else(PoisonError::into_inner).extend(deleted);
    Ok(())
}

/// Adds each notified id; after a lost connection (the listener reconnects and
/// listens again by itself) or a failure, reads the table again.
async fn keep_current(ids: Weak<Ids>, mut listener: PgListener, pool: &PgPool, token_lifetime: Duration) {
    loop {
        let received = listener.try_recv().await;
        let Some(current) = ids.upgrade() else { return };
        let outcome = match received {
            Ok(Some(notification)) => {
                match notification.payload().parse() {
                    Ok(id) => {
                        current.ids.write().unwrap_or_else(PoisonError::into_inner).insert(id);
                    }
                    Err(_) => tracing::warn!(payload = notification.payload(), "not an account id on {CHANNEL}"),
                }
                Ok(())
            }
            Ok(None) => reload(&current, &mut listener, token_lifetime).await,
            Err(err) => Err(err),
        };
        drop(current);
        if let Err(err) = outcome {
            tracing::warn!(error = %err, "the {CHANNEL} subscription failed; subscribing again");
            // It holds the pool's one connection, which the new one needs.
            drop(listener);
            let Some(renewed) = resubscribe(&ids, pool, token_lifetime).await else { return };
            listener = renewed;
        }
    }
}

/// A new subscription, retried every [`RETRY_AFTER`] until it succeeds; `None`
/// once the set is no longer used.
async fn resubscribe(ids: &Weak<Ids>, pool: &PgPool, token_lifetime: Duration) -> Option<PgListener> {
    loop {
        tokio::time::sleep(RETRY_AFTER).await;
        let current = ids.upgrade()?;
        match subscribe(&current, pool, token_lifetime).await {
            Ok(listener) => return Some(listener),
            Err(err) => tracing::warn!(error = %err, "subscribing to {CHANNEL} failed; retrying"),
        }
    }
}
