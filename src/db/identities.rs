//! OpenID Connect sign-in: started sign-ins, one-time handoff codes, and the
//! provider identities linked to accounts. Random values are stored only as
//! hashes, and both one-time rows are consumed by `DELETE ... RETURNING`, so
//! two instances racing for one can never both get it.

use std::time::Duration;

use sqlx::{PgConnection, PgExecutor};

use super::{Error, users::UserRow};

/// A started sign-in, as the callback needs it.
#[derive(Debug)]
pub struct Login {
    pub nonce: String,
    pub pkce_verifier: String,
}

fn seconds(duration: Duration) -> f64 {
    duration.as_secs_f64()
}

/// Records a started sign-in, and drops the ones that expired (they are never
/// needed again; the index on `expires_at` keeps this cheap).
#[tracing::instrument(skip_all)]
pub async fn start_login(
    db: impl PgExecutor<'_>,
    state_hash: &[u8],
    binding_hash: &[u8],
    provider: &str,
    nonce: &str,
    pkce_verifier: &str,
    ttl: Duration,
) -> Result<(), Error> {
    sqlx::query!(
        r#"WITH expired AS (DELETE FROM oidc_logins WHERE expires_at < now())
           INSERT INTO oidc_logins (state_hash, binding_hash, provider, nonce, pkce_verifier, expires_at)
           VALUES ($1, $2, $3, $4, $5, now() + make_interval(secs => $6))"#,
        state_hash,
        binding_hash,
        provider,
        nonce,
        pkce_verifier,
        seconds(ttl)
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Consumes the sign-in of `state_hash`, if it was started for `provider` by
/// the browser holding the binding cookie and has not expired: once only. A
/// wrong cookie consumes nothing, so no one who learns a `state` can spoil the
/// sign-in of the browser that holds it.
#[tracing::instrument(skip_all)]
pub async fn take_login(
    db: impl PgExecutor<'_>,
    state_hash: &[u8],
    binding_hash: &[u8],
    provider: &str,
) -> Result<Option<Login>, Error> {
    Ok(sqlx::query_as!(
        Login,
        r#"DELETE FROM oidc_logins
           WHERE state_hash = $1 AND binding_hash = $2 AND provider = $3 AND expires_at > now()
           RETURNING nonce, pkce_verifier"#,
        state_hash,
        binding_hash,
        provider
    )
    .fetch_optional(db)
    .await?)
}

/// Consumes the sign-in of `state_hash` whatever the browser (the provider
/// answered with an error: the sign-in is over).
#[tracing::instrument(skip_all)]
pub async fn drop_login(db: impl PgExecutor<'_>, state_hash: &[u8], binding_hash: &[u8]) -> Result<(), Error> {
    sqlx::query!("DELETE FROM oidc_logins WHERE state_hash = $1 AND binding_hash = $2", state_hash, binding_hash)
        .execute(db)
        .await?;
    Ok(())
}

/// The account linked to the provider identity (`issuer`, `subject`).
#[tracing::instrument(skip_all)]
pub async fn find_identity(db: impl PgExecutor<'_>, issuer: &str, subject: &str) -> Result<Option<i64>, Error> {
    Ok(sqlx::query_scalar!("SELECT user_id FROM user_identities WHERE issuer = $1 AND subject = $2", issuer, subject)
        .fetch_optional(db)
        .await?)
}

/// The account with this email (case-insensitive), locked until the
/// transaction ends so that it cannot change its email under the link.
#[tracing::instrument(skip_all)]
pub async fn account_by_email(conn: &mut PgConnection, email: &str) -> Result<Option<i64>, Error> {
    Ok(sqlx::query_scalar!("SELECT id FROM users WHERE lower(email) = lower($1) FOR UPDATE", email)
        .fetch_optional(conn)
        .await?)
}

/// Links the provider identity to `user_id`; the account it is linked to
/// (another one, if a concurrent sign-in linked it first).
#[tracing::instrument(skip_all)]
pub async fn link(
    conn: &mut PgConnection,
    issuer: &str,
    subject: &str,
    user_id: i64,
    email: &str,
) -> Result<i64, Error> {
    let inserted = sqlx::query_scalar!(
        r#"INSERT INTO user_identities (issuer, subject, user_id, email) VALUES ($1, $2, $3, $4)
           ON CONFLICT (issuer, subject) DO NOTHING
           RETURNING user_id"#,
        issuer,
        subject,
        user_id,
        email
    )
    .fetch_optional(&mut *conn)
    .await?;
    match inserted {
        Some(id) => Ok(id),
        None => find_identity(&mut *conn, issuer, subject).await?.ok_or(Error::Gone(super::Resource::Profile)),
    }
}

/// Creates an account for a provider identity, with `password_hash` (one no
/// password verifies). `None` when the username or the email is taken (any
/// unique index: the caller tells which and retries with another username).
#[tracing::instrument(skip_all)]
pub async fn create_user(
    conn: &mut PgConnection,
    username: &str,
    email: &str,
    password_hash: &str,
) -> Result<Option<UserRow>, Error> {
    // A look-alike of a taken name (the skeleton's unique index) is taken too.
    Ok(sqlx::query_as!(
        UserRow,
        r#"INSERT INTO users (username, username_skeleton, email, password_hash) VALUES ($1, $2, $3, $4)
           ON CONFLICT DO NOTHING
           RETURNING id, username, email, bio, image"#,
        username,
        crate::domain::username_skeleton(username),
        email,
        password_hash
    )
    .fetch_optional(conn)
    .await?)
}

/// Records a one-time handoff code for `user_id`, valid for `ttl`, and drops
/// the expired ones.
#[tracing::instrument(skip_all)]
pub async fn create_handoff(
    db: impl PgExecutor<'_>,
    code_hash: &[u8],
    user_id: i64,
    provider: &str,
    ttl: Duration,
) -> Result<(), Error> {
    sqlx::query!(
        r#"WITH expired AS (DELETE FROM oidc_handoffs WHERE expires_at < now())
           INSERT INTO oidc_handoffs (code_hash, user_id, provider, expires_at)
           VALUES ($1, $2, $3, now() + make_interval(secs => $4))"#,
        code_hash,
        user_id,
        provider,
        seconds(ttl)
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Consumes a handoff code: the account it signs in and the provider it signed
/// in with, once, before it expires.
#[tracing::instrument(skip_all)]
pub async fn take_handoff(db: impl PgExecutor<'_>, code_hash: &[u8]) -> Result<Option<(UserRow, String)>, Error> {
    let row = sqlx::query!(
        r#"WITH taken AS (
               DELETE FROM oidc_handoffs WHERE code_hash = $1 AND expires_at > now() RETURNING user_id, provider)
           SELECT u.id, u.username, u.email, u.bio, u.image, taken.provider
           FROM users u JOIN taken ON taken.user_id = u.id"#,
        code_hash
    )
    .fetch_optional(db)
    .await?;
    Ok(row
        .map(|r| (UserRow { id: r.id, username: r.username, email: r.email, bio: r.bio, image: r.image }, r.provider)))
}
