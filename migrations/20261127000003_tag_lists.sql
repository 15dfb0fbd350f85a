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

CREATE FUNCTION copy_tag_lists() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE articles a
    SET tag_list = ARRAY(SELECT t.name FROM article_tags at JOIN tags t ON t.id = at.tag_id
                         WHERE at.article_id = a.id ORDER BY t.name)
    WHERE a.id IN (SELECT article_id FROM changed);
    RETURN NULL;
END $$;

CREATE TRIGGER article_tags_copy_inserted AFTER INSERT ON article_tags
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION copy_tag_lists();
CREATE TRIGGER article_tags_copy_deleted AFTER DELETE ON article_tags
    REFERENCING OLD TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION copy_tag_lists();

UPDATE articles a
SET tag_list = ARRAY(SELECT t.name FROM article_tags at JOIN tags t ON t.id = at.tag_id
                     WHERE at.article_id = a.id ORDER BY t.name)
WHERE a.id IN (SELECT article_id FROM article_tags);
