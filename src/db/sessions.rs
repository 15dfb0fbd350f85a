//! Sessions and their refresh tokens (`auth::session`, docs/auth.md).

use std::{net::IpAddr, time::Duration};

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use super::Error;

/// What opening a session records.
#[derive(Debug)]
pub struct NewSession<'a> {
    pub user_id: i64,
    pub max_age: Duration,
    pub refresh_idle: Duration,
    pub user_agent: &'a str,
    pub client_addr: Option<IpAddr>,
    pub method: &'a str,
    /// SHA-256 of the first refresh token.
    pub refresh_hash: &'a [u8],
    /// How long a revoked session must be kept: until no token naming it can
    /// still be accepted (the revocation sets are read from these rows).
    pub keep_revoked: Duration,
}

/// A live session, as a token is issued for it.
#[derive(Debug, Clone)]
pub struct Live {
    pub id: Uuid,
    pub user_id: i64,
    pub expires_at: DateTime<Utc>,
}

/// A session as its owner's list shows it.
#[derive(Debug, Clone)]
pub struct SessionRow {
    pub id: Uuid,
    pub created_at: DateTime<Utc>,
    pub last_used_at: DateTime<Utc>,
    pub user_agent: String,
    pub client_addr: Option<String>,
    pub method: String,
}

/// A revoked session and its owner.
#[derive(Debug, Clone)]
pub struct Revoked {
    pub id: Uuid,
    pub user_id: i64,
}

/// Opens a session with its first refresh token, in one statement. The token
/// lives no longer than its session. The same statement deletes the user's
/// ended sessions (with their refresh tokens): those past their end, and those
/// revoked longer ago than any token naming them can live, so that neither
/// table grows with every sign-in.
#[tracing::instrument(skip_all, fields(user_id = new.user_id))]
pub async fn open(conn: &mut PgConnection, new: &NewSession<'_>) -> Result<Live, Error> {
    Ok(sqlx::query_as!(
        Live,
        r#"WITH pruned AS (
               DELETE FROM sessions
               WHERE user_id = $1 AND (expires_at < now() OR revoked_at < now() - make_interval(secs => $8))
           ), session AS (
               INSERT INTO sessions (user_id, expires_at, user_agent, client_addr, method)
               VALUES ($1, now() + make_interval(secs => $2), $3, $4::text::inet, $5)
               RETURNING id, user_id, expires_at
           ), token AS (
               INSERT INTO refresh_tokens (hash, session_id, expires_at)
               SELECT $6, id, least(now() + make_interval(secs => $7), expires_at) FROM session
           )
           SELECT id AS "id!", user_id AS "user_id!", expires_at AS "expires_at!" FROM session"#,
        new.user_id,
        new.max_age.as_secs_f64(),
        new.user_agent,
        new.client_addr.map(|ip| ip.to_string()),
        new.method,
        new.refresh_hash,
        new.refresh_idle.as_secs_f64(),
        new.keep_revoked.as_secs_f64(),
    )
    .fetch_one(conn)
    .await?)
}

/// Retires the live refresh token `old` and gives its live session the child
/// `new`, marking the session used; `None` when `old` is not live (unknown,
/// expired, retired, or its session over). The row lock on `old` makes a
/// concurrent exchange of the same token wait, then find it retired.
#[tracing::instrument(skip_all)]
pub async fn rotate(conn: &mut PgConnection, old: &[u8], new: &[u8], idle: Duration) -> Result<Option<Live>, Error> {
    Ok(sqlx::query_as!(
        Live,
        r#"WITH retired AS (
               UPDATE refresh_tokens t SET retired_at = now()
               FROM sessions s
               WHERE t.hash = $1 AND t.retired_at IS NULL AND t.expires_at > now()
                 AND s.id = t.session_id AND s.revoked_at IS NULL AND s.expires_at > now()
               RETURNING s.id, s.user_id, s.expires_at
           ), child AS (
               INSERT INTO refresh_tokens (hash, session_id, expires_at)
               SELECT $2, id, least(now() + make_interval(secs => $3), expires_at) FROM retired
           ), used AS (
               UPDATE sessions SET last_used_at = now() WHERE id = (SELECT id FROM retired)
           )
           SELECT id AS "id!", user_id AS "user_id!", expires_at AS "expires_at!" FROM retired"#,
        old,
        new,
        idle.as_secs_f64(),
    )
    .fetch_optional(conn)
    .await?)
}

/// Revokes the session of `hash` when that refresh token was retired already
/// (it is being reused); `None` when no retired token has that hash.
#[tracing::instrument(skip_all)]
pub async fn revoke_if_retired(conn: &mut PgConnection, hash: &[u8]) -> Result<Option<Revoked>, Error> {
    Ok(sqlx::query_as!(
        Revoked,
        r#"UPDATE sessions s SET revoked_at = coalesce(s.revoked_at, now())
           FROM refresh_tokens t
           WHERE t.hash = $1 AND t.retired_at IS NOT NULL AND s.id = t.session_id
           RETURNING s.id, s.user_id"#,
        hash,
    )
    .fetch_optional(conn)
    .await?)
}

/// Revokes `user_id`'s live session `id`; `false` when there is no such
/// session of theirs (another user's, unknown, or over already).
#[tracing::instrument(skip(db))]
pub async fn revoke(db: impl PgExecutor<'_>, user_id: i64, id: Uuid) -> Result<bool, Error> {
    let revoked = sqlx::query_scalar!(
        r#"UPDATE sessions SET revoked_at = now()
           WHERE id = $1 AND user_id = $2 AND revoked_at IS NULL AND expires_at > now()
           RETURNING id"#,
        id,
        user_id,
    )
    .fetch_optional(db)
    .await?;
    Ok(revoked.is_some())
}

/// Revokes every live session of `user_id` but `keep` (all of them without
/// one); the ids revoked.
#[tracing::instrument(skip(db))]
pub async fn revoke_all(db: impl PgExecutor<'_>, user_id: i64, keep: Option<Uuid>) -> Result<Vec<Uuid>, Error> {
    Ok(sqlx::query_scalar!(
        r#"UPDATE sessions SET revoked_at = now()
           WHERE user_id = $1 AND revoked_at IS NULL AND id IS DISTINCT FROM $2
           RETURNING id"#,
        user_id,
        keep,
    )
    .fetch_all(db)
    .await?)
}

/// The live sessions of `user_id`, newest first.
#[tracing::instrument(skip(db))]
pub async fn list(db: impl PgExecutor<'_>, user_id: i64) -> Result<Vec<SessionRow>, Error> {
    Ok(sqlx::query_as!(
        SessionRow,
        r#"SELECT id, created_at, last_used_at, user_agent, host(client_addr) AS client_addr, method
           FROM sessions
           WHERE user_id = $1 AND revoked_at IS NULL AND expires_at > now()
           ORDER BY created_at DESC, id"#,
        user_id,
    )
    .fetch_all(db)
    .await?)
}

/// When `password_changed`, or when `new_email` differs from the stored one,
/// revokes every live session of `user_id` but `keep`; the ids revoked. Runs
/// before the change, in its transaction.
#[tracing::instrument(skip(db, new_email))]
pub async fn revoke_others_on_credentials_change(
    db: impl PgExecutor<'_>,
    user_id: i64,
    keep: Uuid,
    password_changed: bool,
    new_email: Option<&str>,
) -> Result<Vec<Uuid>, Error> {
    Ok(sqlx::query_scalar!(
        r#"UPDATE sessions SET revoked_at = now()
           WHERE user_id = $1 AND revoked_at IS NULL AND id <> $2
             AND ($3 OR ($4::text IS NOT NULL AND (SELECT email FROM users WHERE id = $1) IS DISTINCT FROM $4))
           RETURNING id"#,
        user_id,
        keep,
        password_changed,
        new_email,
    )
    .fetch_all(db)
    .await?)
}
