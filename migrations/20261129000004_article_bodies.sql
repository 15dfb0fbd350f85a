-- Bodies in a table of their own. Lists and feeds, the most frequent reads, never
-- show a body, and neither do the counters' updates of an article row (a favorite
-- rewrites the row); a body of 1 kB or so is below PostgreSQL's TOAST threshold
-- (2 kB), so it stayed inline and made the articles' heap five times wider. At a
-- million articles (bench/run's scale L) that heap was 1.2 GB, and a feed touched
-- about 500 buffers against 290 at 10,000; apart, the heap is 250 MB and the feed
-- 370 buffers (README, "Performance").
--
-- An existing database gets its space back only when `articles` is rewritten
-- (`VACUUM FULL articles`, which locks the table): a dropped column stays in old rows.

CREATE TABLE article_bodies (
    article_id bigint PRIMARY KEY REFERENCES articles (id) ON DELETE CASCADE,
    body       text   NOT NULL
);

INSERT INTO article_bodies (article_id, body) SELECT id, body FROM articles;

ALTER TABLE articles DROP COLUMN body;
