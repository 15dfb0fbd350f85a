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
//! milliseconds), a token of the deleted account still passes; a write it makes
//! then fails on a foreign key, which the database layer reports as
//! `db::Error::CallerGone`, answered as the same `401`.

use std::{
    collections::HashSet,
    sync::{Arc, PoisonError, RwLock},
    time::Duration,
};

use sqlx::{PgPool, postgres::PgListener};

/// The channel the migration's trigger notifies, with the account's id as payload.
const CHANNEL: &str = "deleted_accounts";

/// How long to wait before subscribing again after a failure.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// The ids of deleted accounts; cheap to clone, shared by every request.
#[derive(Debug, Clone, Default)]
pub struct DeletedAccounts(Arc<RwLock<HashSet<i64>>>);

impl DeletedAccounts {
    /// Whether the account `user_id` has been deleted.
    pub fn contains(&self, user_id: i64) -> bool {
        self.0.read().unwrap_or_else(PoisonError::into_inner).contains(&user_id)
    }

    /// The set as the database has it now, kept current by a task until `pool`
    /// closes. `token_lifetime` bounds which deletions matter.
    pub async fn follow(pool: &PgPool, token_lifetime: Duration) -> Result<Self, sqlx::Error> {
        let accounts = Self::default();
        let listener = accounts.subscribe(pool, token_lifetime).await?;
        tokio::spawn(accounts.clone().keep_current(listener, pool.clone(), token_lifetime));
        Ok(accounts)
    }

    /// Listens to the channel, then reads the recent deletions on the same
    /// connection.
    async fn subscribe(&self, pool: &PgPool, token_lifetime: Duration) -> Result<PgListener, sqlx::Error> {
        let mut listener = PgListener::connect_with(pool).await?;
        listener.listen(CHANNEL).await?;
        self.reload(&mut listener, token_lifetime).await?;
        Ok(listener)
    }

    async fn reload(&self, listener: &mut PgListener, token_lifetime: Duration) -> Result<(), sqlx::Error> {
        let seconds = token_lifetime.as_secs_f64();
        let ids = sqlx::query_scalar!(
            "SELECT user_id FROM deleted_accounts WHERE deleted_at > now() - make_interval(secs => $1)",
            seconds
        )
        .fetch_all(listener)
        .await?;
        self.0.write().unwrap_or_else(PoisonError::into_inner).extend(ids);
        Ok(())
    }

    /// Adds each notified id; after a lost connection (the listener reconnects
    /// and subscribes again by itself) or a failure, reads the table again.
    async fn keep_current(self, mut listener: PgListener, pool: PgPool, token_lifetime: Duration) {
        loop {
            let reloaded = match listener.try_recv().await {
                Ok(Some(notification)) => {
                    match notification.payload().parse() {
                        Ok(id) => {
                            self.0.write().unwrap_or_else(PoisonError::into_inner).insert(id);
                        }
                        Err(_) => tracing::warn!(payload = notification.payload(), "not an account id on {CHANNEL}"),
                    }
                    continue;
                }
                Ok(None) => self.reload(&mut listener, token_lifetime).await,
                Err(sqlx::Error::PoolClosed) => return,
                Err(err) => Err(err),
            };
            if let Err(err) = reloaded {
                tracing::warn!(error = %err, "the {CHANNEL} subscription failed; subscribing again");
                let Some(renewed) = self.resubscribe(&pool, token_lifetime).await else { return };
                listener = renewed;
            }
        }
    }

    /// A new subscription, retried until it succeeds; `None` once `pool` is closed.
    async fn resubscribe(&self, pool: &PgPool, token_lifetime: Duration) -> Option<PgListener> {
        loop {
            if pool.is_closed() {
                return None;
            }
            tokio::time::sleep(RETRY_AFTER).await;
            match self.subscribe(pool, token_lifetime).await {
                Ok(listener) => return Some(listener),
                Err(err) => tracing::warn!(error = %err, "subscribing to {CHANNEL} failed; retrying"),
            }
        }
    }
}
