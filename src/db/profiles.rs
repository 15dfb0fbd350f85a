//! Public profiles and follows.

use sqlx::PgExecutor;

use super::Error;

#[derive(Debug, Clone)]
pub struct ProfileRow {
    pub id: i64,
    pub username: String,
    pub bio: String,
    pub image: String,
    pub following: bool,
}

/// The profile of `username` as `viewer` sees it.
#[tracing::instrument(skip(db))]
pub async fn get(db: impl PgExecutor<'_>, username: &str, viewer: Option<i64>) -> Result<Option<ProfileRow>, Error> {
    Ok(sqlx::query_as!(
        ProfileRow,
        r#"SELECT u.id, u.username, u.bio, u.image,
                  EXISTS (SELECT 1 FROM follows f WHERE f.follower_id = $2 AND f.followee_id = u.id) AS "following!"
           FROM users u WHERE lower(u.username) = lower($1)"#,
        username,
        viewer
    )
    .fetch_optional(db)
    .await?)
}

/// Makes `follower` follow `username`; following twice is a no-op, following
/// yourself is [`Error::SelfFollow`].
#[tracing::instrument(skip(db))]
pub async fn follow(db: impl PgExecutor<'_>, follower: i64, username: &str) -> Result<Option<ProfileRow>, Error> {
    Ok(sqlx::query_as!(
        ProfileRow,
        r#"WITH target AS (SELECT id, username, bio, image FROM users WHERE lower(username) = lower($2)),
                added AS (
                    INSERT INTO follows (follower_id, followee_id) SELECT $1, id FROM target
                    ON CONFLICT DO NOTHING
                )
           SELECT id, username, bio, image, true AS "following!" FROM target"#,
        follower,
        username
    )
    .fetch_optional(db)
    .await?)
}

/// Makes `follower` stop following `username`; unfollowing twice is a no-op.
#[tracing::instrument(skip(db))]
pub async fn unfollow(db: impl PgExecutor<'_>, follower: i64, username: &str) -> Result<Option<ProfileRow>, Error> {
    Ok(sqlx::query_as!(
        ProfileRow,
        r#"WITH target AS (SELECT id, username, bio, image FROM users WHERE lower(username) = lower($2)),
                removed AS (
                    DELETE FROM follows f USING target t WHERE f.follower_id = $1 AND f.followee_id = t.id
                )
           SELECT id, username, bio, image, false AS "following!" FROM target"#,
        follower,
        username
    )
    .fetch_optional(db)
    .await?)
}
