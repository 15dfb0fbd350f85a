//! Tags.

use sqlx::PgExecutor;

/// Tags in use by at least one article, most used first, then alphabetically.
#[tracing::instrument(skip(db))]
pub async fn in_use(db: impl PgExecutor<'_>) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT t.name FROM tags t JOIN article_tags at ON at.tag_id = t.id
           GROUP BY t.id, t.name ORDER BY count(*) DESC, t.name"#
    )
    .fetch_all(db)
    .await
}

/// Removes every tag from `article_id` (before [`attach`] sets new ones).
#[tracing::instrument(skip(db))]
pub async fn detach_all(db: impl PgExecutor<'_>, article_id: i64) -> Result<(), sqlx::Error> {
    sqlx::query!("DELETE FROM article_tags WHERE article_id = $1", article_id).execute(db).await?;
    Ok(())
}

/// Adds the tags `names` to `article_id`, creating the missing ones.
#[tracing::instrument(skip(db))]
pub async fn attach(db: impl PgExecutor<'_>, article_id: i64, names: &[String]) -> Result<(), sqlx::Error> {
    // `DO UPDATE` (not `DO NOTHING`) so that existing tags are returned too, even
    // ones committed by a concurrent transaction after this statement began.
    sqlx::query!(
        r#"WITH t AS (
                    INSERT INTO tags (name) SELECT DISTINCT unnest($2::text[])
                    ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name
                    RETURNING id
                )
           INSERT INTO article_tags (article_id, tag_id) SELECT $1, id FROM t
           ON CONFLICT DO NOTHING"#,
        article_id,
        names
    )
    .execute(db)
    .await?;
    Ok(())
}
