//! Tags.

use sqlx::PgExecutor;

use super::Error;

/// Tags in use by at least one article, most used first, then alphabetically.
///
/// Reads the counters the write triggers keep, through a partial index of the
/// tags in use: no article or article_tags row is read. The names come back as
/// one array in one row: a row per tag cost more in the driver than the query.
#[tracing::instrument(skip(db))]
pub async fn in_use(db: impl PgExecutor<'_>) -> Result<Vec<String>, Error> {
    Ok(sqlx::query_scalar!(
        r#"SELECT COALESCE(array_agg(name ORDER BY articles_count DESC, name), '{}') AS "names!"
           FROM tags WHERE articles_count > 0"#
    )
    .fetch_one(db)
    .await?)
}

/// Removes every tag from `article_id` (before [`attach`] sets new ones).
#[tracing::instrument(skip(db))]
pub async fn detach_all(db: impl PgExecutor<'_>, article_id: i64) -> Result<(), Error> {
    sqlx::query!("DELETE FROM article_tags WHERE article_id = $1", article_id).execute(db).await?;
    Ok(())
}

/// Adds the tags `names` to `article_id`, creating the missing ones.
///
/// Two statements, not one upsert: `ON CONFLICT DO UPDATE` would lock every
/// existing tag until commit and make concurrent writers of popular tags queue
/// or deadlock. New tags are inserted in name order, so that concurrent inserts
/// of the same new tags wait for each other instead of deadlocking, and the second
/// statement (a new snapshot) also sees tags committed by others meanwhile.
#[tracing::instrument(skip(db, names))]
pub async fn attach(db: &mut sqlx::PgConnection, article_id: i64, names: &[String]) -> Result<(), Error> {
    if names.is_empty() {
        return Ok(());
    }
    sqlx::query!(
        "INSERT INTO tags (name) SELECT n FROM unnest($1::text[]) AS n ORDER BY n ON CONFLICT (name) DO NOTHING",
        names
    )
    .execute(&mut *db)
    .await?;
    sqlx::query!(
        r#"INSERT INTO article_tags (article_id, tag_id, created_at)
           SELECT a.id, t.id, a.created_at FROM articles a JOIN tags t ON t.name = ANY($2) WHERE a.id = $1
           ON CONFLICT DO NOTHING"#,
        article_id,
        names
    )
    .execute(&mut *db)
    .await?;
    Ok(())
}
