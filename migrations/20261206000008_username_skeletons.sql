-- Usernames that look alike are taken alike: each username's confusable
-- skeleton (Unicode TR 39, lower-cased: `domain::username_skeleton`) is unique,
-- so a Cyrillic `аlice` cannot sit beside a Latin `alice`.
--
-- PostgreSQL cannot compute a skeleton (it needs the Unicode confusables
-- table), so the column is nullable: the server fills the rows of earlier
-- releases at start-up, in batches (`db::users::backfill_username_skeletons`).
-- A legacy row whose skeleton another row already holds stays NULL (logged):
-- both accounts keep their names, and the rule applies to every new name.
-- A unique index allows any number of NULLs.
ALTER TABLE users ADD COLUMN username_skeleton text;
CREATE UNIQUE INDEX users_username_skeleton_key ON users (username_skeleton);
-- The start-up backfill finds the rows left to fill without reading the table.
CREATE INDEX users_without_skeleton ON users (id) WHERE username_skeleton IS NULL;
