-- Counters, so that no read counts rows: the number of articles (in all, per
-- author, per tag), favorites per article and per user. Triggers keep them in the
-- transaction of the write that changes them, whoever writes (the API, COPY, psql).
--
-- The triggers are statement-level with transition tables: a bulk write (COPY of a
-- million articles) updates each counter once, not once per row.
--
-- Lock order, to keep concurrent writers free of deadlocks: an article row, then
-- the `article_totals` row, then users and tags rows. Every write that changes
-- the set of articles or their tags takes the totals row first (creating: its
-- insert trigger; deleting: a row trigger, after the article row is locked;
-- retagging: a statement trigger on article_tags), so writers of tag and author
-- counters are serialised by it and never wait on each other in a cycle.
-- Favorites lock only their article and their user row.

CREATE TABLE article_totals (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    articles bigint  NOT NULL CHECK (articles >= 0)
);
INSERT INTO article_totals (articles) SELECT count(*) FROM articles;

ALTER TABLE users
    ADD COLUMN articles_count  bigint NOT NULL DEFAULT 0 CHECK (articles_count >= 0),
    ADD COLUMN favorites_count bigint NOT NULL DEFAULT 0 CHECK (favorites_count >= 0);
ALTER TABLE articles ADD COLUMN favorites_count bigint NOT NULL DEFAULT 0 CHECK (favorites_count >= 0);
ALTER TABLE tags ADD COLUMN articles_count bigint NOT NULL DEFAULT 0 CHECK (articles_count >= 0);

UPDATE users u SET articles_count = c.n FROM (SELECT author_id, count(*) AS n FROM articles GROUP BY author_id) c
WHERE u.id = c.author_id;
UPDATE users u SET favorites_count = c.n FROM (SELECT user_id, count(*) AS n FROM favorites GROUP BY user_id) c
WHERE u.id = c.user_id;
UPDATE articles a SET favorites_count = c.n FROM (SELECT article_id, count(*) AS n FROM favorites GROUP BY article_id) c
WHERE a.id = c.article_id;
UPDATE tags t SET articles_count = c.n FROM (SELECT tag_id, count(*) AS n FROM article_tags GROUP BY tag_id) c
WHERE t.id = c.tag_id;

-- The popular-tags list reads only tags in use, most used first.
CREATE INDEX tags_popular_idx ON tags (articles_count DESC, name) WHERE articles_count > 0;

-- A tag's articles newest first, read through an index like the unfiltered list:
-- article_tags carries its article's (immutable) creation time.
ALTER TABLE article_tags ADD COLUMN created_at timestamptz;
UPDATE article_tags at SET created_at = a.created_at FROM articles a WHERE a.id = at.article_id;
ALTER TABLE article_tags ALTER COLUMN created_at SET NOT NULL;
DROP INDEX article_tags_tag_idx;
CREATE INDEX article_tags_tag_created_idx ON article_tags (tag_id, created_at DESC, article_id DESC);

CREATE FUNCTION lock_article_totals() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM article_totals FOR UPDATE;
    IF TG_LEVEL = 'ROW' THEN
        RETURN OLD;
    END IF;
    RETURN NULL;
END $$;

-- Each counting function reads the trigger's transition table, named `changed`
-- (the inserted rows, or the deleted ones).
CREATE FUNCTION count_articles() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    sign bigint := CASE TG_OP WHEN 'INSERT' THEN 1 ELSE -1 END;
BEGIN
    UPDATE article_totals SET articles = articles + sign * (SELECT count(*) FROM changed);
    UPDATE users u SET articles_count = u.articles_count + sign * c.n
    FROM (SELECT author_id, count(*) AS n FROM changed GROUP BY author_id) c
    WHERE u.id = c.author_id;
    RETURN NULL;
END $$;

CREATE FUNCTION count_article_tags() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    sign bigint := CASE TG_OP WHEN 'INSERT' THEN 1 ELSE -1 END;
BEGIN
    UPDATE tags t SET articles_count = t.articles_count + sign * c.n
    FROM (SELECT tag_id, count(*) AS n FROM changed GROUP BY tag_id) c
    WHERE t.id = c.tag_id;
    RETURN NULL;
END $$;

CREATE FUNCTION count_favorites() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    sign bigint := CASE TG_OP WHEN 'INSERT' THEN 1 ELSE -1 END;
BEGIN
    UPDATE articles a SET favorites_count = a.favorites_count + sign * c.n
    FROM (SELECT article_id, count(*) AS n FROM changed GROUP BY article_id) c
    WHERE a.id = c.article_id;
    UPDATE users u SET favorites_count = u.favorites_count + sign * c.n
    FROM (SELECT user_id, count(*) AS n FROM changed GROUP BY user_id) c
    WHERE u.id = c.user_id;
    RETURN NULL;
END $$;

CREATE TRIGGER articles_lock_totals BEFORE DELETE ON articles
    FOR EACH ROW EXECUTE FUNCTION lock_article_totals();
CREATE TRIGGER articles_count_inserted AFTER INSERT ON articles
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION count_articles();
CREATE TRIGGER articles_count_deleted AFTER DELETE ON articles
    REFERENCING OLD TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION count_articles();

CREATE TRIGGER article_tags_lock_totals BEFORE INSERT OR DELETE ON article_tags
    FOR EACH STATEMENT EXECUTE FUNCTION lock_article_totals();
CREATE TRIGGER article_tags_count_inserted AFTER INSERT ON article_tags
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION count_article_tags();
CREATE TRIGGER article_tags_count_deleted AFTER DELETE ON article_tags
    REFERENCING OLD TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION count_article_tags();

CREATE TRIGGER favorites_count_inserted AFTER INSERT ON favorites
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION count_favorites();
CREATE TRIGGER favorites_count_deleted AFTER DELETE ON favorites
    REFERENCING OLD TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION count_favorites();
