-- Each article carries its tag names, sorted, so that reading a page of articles
-- reads no article_tags or tags rows: the tag list was two index probes per tag
-- per article, and half the cost of a list. article_tags stays the source of
-- truth (and the index for listing by tag); a statement trigger copies it into
-- `articles.tag_list` in the transaction of the write, whoever writes.
--
-- Tag names never change, so the copy only follows article_tags. The article row
-- is updated after its article_tags rows: creating, the transaction's own new
-- row; retagging, the row the update has already locked (lock order as in the
-- counters migration).

ALTER TABLE articles ADD COLUMN tag_list text[] NOT NULL DEFAULT '{}';

-- Set-based (a join and one aggregate, not a subquery per article): a COPY of
-- millions of article_tags rows runs it once, over every article at once.
CREATE FUNCTION copy_tag_lists() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    WITH touched AS (SELECT DISTINCT article_id FROM changed),
    lists AS (
        SELECT c.article_id,
               COALESCE(array_agg(t.name ORDER BY t.name) FILTER (WHERE t.name IS NOT NULL), '{}') AS names
        FROM touched c
        LEFT JOIN article_tags at ON at.article_id = c.article_id
        LEFT JOIN tags t ON t.id = at.tag_id
        GROUP BY c.article_id
    )
    UPDATE articles a SET tag_list = l.names FROM lists l WHERE a.id = l.article_id;
    RETURN NULL;
END $$;

CREATE TRIGGER article_tags_copy_inserted AFTER INSERT ON article_tags
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION copy_tag_lists();
CREATE TRIGGER article_tags_copy_deleted AFTER DELETE ON article_tags
    REFERENCING OLD TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION copy_tag_lists();

UPDATE articles a SET tag_list = l.names
FROM (SELECT at.article_id, array_agg(t.name ORDER BY t.name) AS names
      FROM article_tags at JOIN tags t ON t.id = at.tag_id GROUP BY at.article_id) l
WHERE a.id = l.article_id;
