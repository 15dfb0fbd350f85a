//! Accounts.

use sqlx::PgExecutor;

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
        r#"INSERT INTO users (username, email, password_hash) VALUES ($1, $2, $3)
           RETURNING id, username, email, bio, image"#,
        username,
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
        changes.image
    )
    .fetch_optional(db)
    .await?)
}
