//! Accounts.
//!
//! Every write of `users.username` writes its `username_skeleton` too
//! ([`crate::domain::username_skeleton`]), so that look-alike names collide on
//! `users_username_skeleton_key` as equal ones do on `users_username_key`.

use sqlx::{PgExecutor, PgPool};

use crate::domain::username_skeleton;

use super::Error;

#[derive(Debug, Clone)]
pub struct UserRow {
    pub id: i64,
    pub username: String,
    pub email: String,
    pub bio: String,
    pub image: String,
}

/// A user with the stored password hash, for login.
#[derive(Debug)]
pub struct Credentials {
    pub user: UserRow,
    pub password_hash: String,
}

/// Fields of `PUT /api/user`; `None` leaves a field as it is.
#[derive(Debug, Default)]
pub struct Changes<'a> {
    pub username: Option<&'a str>,
    pub email: Option<&'a str>,
    pub password_hash: Option<&'a str>,
    pub bio: Option<&'a str>,
    pub image: Option<&'a str>,
}

#[tracing::instrument(skip_all)]
pub async fn insert(
    db: impl PgExecutor<'_>,
    username: &str,
    email: &str,
    password_hash: &str,
) -> Result<UserRow, Error> {
    Ok(sqlx::query_as!(
        UserRow,
        r#"INSERT INTO users (username, username_skeleton, email, password_hash) VALUES ($1, $2, $3, $4)
           RETURNING id, username, email, bio, image"#,
        username,
        username_skeleton(username),
        email,
        password_hash
    )
    .fetch_one(db)
    .await?)
}

#[tracing::instrument(skip(db))]
pub async fn find_by_id(db: impl PgExecutor<'_>, id: i64) -> Result<Option<UserRow>, Error> {
    Ok(sqlx::query_as!(UserRow, "SELECT id, username, email, bio, image FROM users WHERE id = $1", id)
        .fetch_optional(db)
        .await?)
}

#[tracing::instrument(skip_all)]
pub async fn credentials_by_email(db: impl PgExecutor<'_>, email: &str) -> Result<Option<Credentials>, Error> {
    let row = sqlx::query!(
        "SELECT id, username, email, bio, image, password_hash FROM users WHERE lower(email) = lower($1)",
        email
    )
    .fetch_optional(db)
    .await?;
    Ok(row.map(|r| Credentials {
        user: UserRow { id: r.id, username: r.username, email: r.email, bio: r.bio, image: r.image },
        password_hash: r.password_hash,
    }))
}

#[tracing::instrument(skip(db, changes))]
pub async fn update(db: impl PgExecutor<'_>, id: i64, changes: &Changes<'_>) -> Result<Option<UserRow>, Error> {
    Ok(sqlx::query_as!(
        UserRow,
        r#"UPDATE users SET
               username = COALESCE($2, username),
               username_skeleton = COALESCE($7, username_skeleton),
               email = COALESCE($3, email),
               password_hash = COALESCE($4, password_hash),
               bio = COALESCE($5, bio),
               image = COALESCE($6, image),
               updated_at = now()
           WHERE id = $1
           RETURNING id, username, email, bio, image"#,
        id,
        changes.username,
        changes.email,
        changes.password_hash,
        changes.bio,
        changes.image,
        changes.username.map(username_skeleton)
    )
    .fetch_optional(db)
    .await?)
}

/// How many rows [`backfill_username_skeletons`] fills per statement.
const BACKFILL_BATCH: i64 = 1000;

/// Fills the skeletons of rows written before the column existed (migration
/// `20261206000008`), in batches of [`BACKFILL_BATCH`]: one read and one
/// write each, so no long lock is held. A row whose skeleton another row
/// holds already (or an earlier row of its batch) is left NULL and its id is
/// logged: both accounts keep their names. Returns how many rows were filled.
///
/// An error ends it (the caller logs it and serves anyway): the rows it did
/// not reach are tried again at the next start.
pub async fn backfill_username_skeletons(db: &PgPool) -> Result<u64, Error> {
    let mut after = 0_i64;
    let mut filled = 0;
    loop {
        let rows = sqlx::query!(
            "SELECT id, username FROM users WHERE username_skeleton IS NULL AND id > $1 ORDER BY id LIMIT $2",
            after,
            BACKFILL_BATCH
        )
        .fetch_all(db)
        .await?;
        let Some(last) = rows.last() else { return Ok(filled) };
        after = last.id;
        let (ids, skeletons): (Vec<i64>, Vec<String>) =
            rows.iter().map(|row| (row.id, username_skeleton(&row.username))).unzip();
        let updated = sqlx::query_scalar!(
            r#"UPDATE users SET username_skeleton = batch.skeleton
               FROM (SELECT DISTINCT ON (skeleton) id, skeleton
                     FROM unnest($1::bigint[], $2::text[]) AS given (id, skeleton)
                     ORDER BY skeleton, id) AS batch
               WHERE users.id = batch.id
                 AND NOT EXISTS (SELECT 1 FROM users AS other WHERE other.username_skeleton = batch.skeleton)
               RETURNING users.id"#,
            &ids,
            &skeletons
        )
        .fetch_all(db)
        .await?;
        filled += updated.len() as u64;
        let left: Vec<i64> = ids.into_iter().filter(|id| !updated.contains(id)).collect();
        if !left.is_empty() {
            tracing::warn!(
                user_ids = ?left,
                "usernames that look like another user's: their skeletons are left unset (both names are kept)"
            );
        }
    }
}
