//! `conduit seed`: fills an empty database with a large, deterministic data set for
//! load benchmarks.
//!
//! `conduit seed --scale s|l [--seed N]` (see [`Options`]) opens the server's database as the server
//! does (`DATABASE_URL`, else the embedded PostgreSQL in `CONDUIT_DATA_DIR`; see
//! [`crate::open_database`]), which applies the migrations; it reads no other
//! setting. It refuses a database that already has users or tags, then streams every
//! table through `COPY ... FROM STDIN` (text format, a few MB per message), then
//! compacts the tables and runs `VACUUM (ANALYZE)`: statistics for the planner, and a
//! visibility map so that index-only scans need no heap fetches, as on a table
//! autovacuum has visited.
//! - Compacting (`VACUUM (FULL)`): the counters' triggers update an author's or an
//!   article's row once per article, favorite or follow copied, and within one
//!   `COPY` none of those versions can be pruned. That left the tables and their
//!   indexes about half empty (at scale L, articles 61,699 pages against 31,404
//!   compacted), which no restored or steadily vacuumed database looks like: a
//!   feed at L touched 494 buffers where 389 do.
//!
//! - Scale `s`: 1,000 users, 10,000 articles (0–5 tags each from a pool of 50,
//!   Zipf-like), 50,000 favorites, 20,000 follows, 20,000 comments. Scale `l`: ×100
//!   everything but the tag pool.
//! - Every user is `user{n}` / `user{n}@example.com` with the password
//!   [`PASSWORD`] (one Argon2id hash, shared). Articles have the slug `article-{n}`
//!   and `created_at` increasing with the id over the past year.
//! - The same `--seed` (default 42) gives the same rows, but for the password
//!   hash's random salt; timestamps are anchored at the current UTC midnight, so
//!   they only shift from one day to the next.
//! - Ids are written explicitly (`COPY` stores given values even in `GENERATED
//!   ALWAYS` identity columns), then every identity sequence is moved past them so
//!   the API inserts new rows normally.
//! - Each table is committed on its own; a failed run leaves a partial data set:
//!   drop the database and run again.

use std::{collections::HashSet, fmt::Write as _, time::Instant};

use anyhow::Context as _;
use chrono::{DateTime, Duration, Utc};
use sqlx::{Connection as _, PgConnection, PgPool};

use crate::{auth::PasswordHasher, config::DatabaseConfig, domain::Password};

/// The password of every seeded user.
pub const PASSWORD: &str = "password123";

/// `COPY` data is sent in messages of about this size.
const BUFFER_BYTES: usize = 4 << 20;

const YEAR_SECONDS: i64 = 365 * 24 * 3600;

const TAGS: [&str; 50] = [
    "rust",
    "programming",
    "javascript",
    "webdev",
    "python",
    "tutorial",
    "devops",
    "database",
    "postgres",
    "performance",
    "security",
    "testing",
    "career",
    "opensource",
    "linux",
    "docker",
    "kubernetes",
    "cloud",
    "frontend",
    "backend",
    "react",
    "typescript",
    "golang",
    "java",
    "design",
    "architecture",
    "api",
    "async",
    "networking",
    "productivity",
    "beginners",
    "algorithms",
    "datascience",
    "machinelearning",
    "ai",
    "mobile",
    "android",
    "ios",
    "css",
    "html",
    "git",
    "cli",
    "vim",
    "emacs",
    "functional",
    "compilers",
    "wasm",
    "embedded",
    "gamedev",
    "news",
];

const WORDS: [&str; 64] = [
    "the", "a", "system", "data", "request", "server", "client", "query", "index", "cache", "latency", "memory",
    "thread", "async", "runtime", "error", "handler", "router", "table", "row", "column", "page", "token", "user",
    "article", "comment", "feed", "build", "test", "deploy", "release", "version", "module", "function", "type",
    "value", "stream", "buffer", "socket", "network", "fast", "slow", "simple", "complex", "better", "small", "large",
    "new", "old", "with", "without", "for", "in", "on", "and", "or", "why", "how", "when", "we", "you", "our", "every",
    "first",
];

/// How much data to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scale {
    pub users: u64,
    pub articles: u64,
    pub favorites: u64,
    pub follows: u64,
    pub comments: u64,
}

impl Scale {
    pub const S: Self = Self { users: 1_000, articles: 10_000, favorites: 50_000, follows: 20_000, comments: 20_000 };
    pub const L: Self =
        Self { users: 100_000, articles: 1_000_000, favorites: 5_000_000, follows: 2_000_000, comments: 2_000_000 };
}

/// The command line of `conduit seed` (parsed by [`crate::cli`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::Args)]
pub struct Options {
    /// How much to generate: `s` (1,000 users, 10,000 articles, ...) or `l` (100 times as many)
    #[arg(long, value_name = "SCALE", ignore_case = true, value_parser = scale_parser())]
    pub scale: Scale,
    /// Seed of the generator: the same seed gives the same rows
    #[arg(long, value_name = "N", default_value_t = 42)]
    pub seed: u64,
}

/// `s` or `l`, in either case; clap lists them in the help and in its errors.
fn scale_parser() -> impl clap::builder::TypedValueParser<Value = Scale> {
    use clap::builder::TypedValueParser as _;
    clap::builder::PossibleValuesParser::new(["s", "l"])
        .map(|name: String| if name.eq_ignore_ascii_case("l") { Scale::L } else { Scale::S })
}

/// The longest any one statement may run: at scale L, copying a table or compacting
/// them all takes minutes; this only stops one that hangs.
const STATEMENT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3600);

/// Seeds the configured database, starting and stopping the embedded cluster
/// when there is no `DATABASE_URL`.
pub async fn run(config: &DatabaseConfig, options: Options) -> anyhow::Result<()> {
    let database = crate::open_database(config, 1, STATEMENT_TIMEOUT).await?;
    let seeded = seed(&database.writes, options).await;
    let closed = database.close().await;
    seeded.and(closed)
}

async fn seed(db: &PgPool, options: Options) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut conn = db.acquire().await.context("connecting to PostgreSQL")?;
    ensure_empty(&mut conn).await?;
    let hash = password_hash().await?;
    let generator = Generator::new(options, Utc::now());
    generator.copy_all(&mut conn, &hash).await?;
    timed("sequences", fix_sequences(&mut conn)).await?;
    timed("compact", sqlx::query("VACUUM (FULL)").execute(&mut *conn)).await?;
    timed("vacuum", sqlx::query("VACUUM (ANALYZE)").execute(&mut *conn)).await?;
    println!("seeded in {:.1} s; every user's password is {PASSWORD:?}", started.elapsed().as_secs_f64());
    Ok(())
}

async fn ensure_empty(conn: &mut PgConnection) -> anyhow::Result<()> {
    let used: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM users) OR EXISTS (SELECT 1 FROM tags)")
        .fetch_one(&mut *conn)
        .await?;
    anyhow::ensure!(!used, "the database already has users or tags: seed an empty database only");
    Ok(())
}

async fn password_hash() -> anyhow::Result<String> {
    let password = Password::parse(PASSWORD).map_err(|err| anyhow::anyhow!("seed password {err}"))?;
    Ok(PasswordHasher::new(1)?.hash(&password).await?)
}

/// Moves every identity sequence past the ids the seeder wrote.
async fn fix_sequences(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    for statement in [
        "SELECT setval(pg_get_serial_sequence('users', 'id'), max(id)) FROM users",
        "SELECT setval(pg_get_serial_sequence('articles', 'id'), max(id)) FROM articles",
        "SELECT setval(pg_get_serial_sequence('tags', 'id'), max(id)) FROM tags",
        "SELECT setval(pg_get_serial_sequence('comments', 'id'), max(id)) FROM comments",
    ] {
        sqlx::query(statement).execute(&mut *conn).await?;
    }
    Ok(())
}

async fn timed<T, E>(what: &str, step: impl Future<Output = Result<T, E>>) -> Result<T, E> {
    let started = Instant::now();
    let result = step.await?;
    println!("{what}: done in {:.2} s", started.elapsed().as_secs_f64());
    Ok(result)
}

/// Streams one table (the generated text never holds a tab, newline or
/// backslash, so no field needs COPY escaping): `emit(i, buf)` appends the rows of unit `i` (zero or more
/// lines of COPY text) for `i` in `0..units`, in one transaction, with
/// `paused_trigger` (on `table`) disabled meanwhile.
async fn copy_table(
    conn: &mut PgConnection,
    table: &str,
    statement: &'static str,
    units: u64,
    paused_trigger: Option<&str>,
    mut emit: impl FnMut(u64, &mut String),
) -> anyhow::Result<()> {
    let started = Instant::now();
    println!("{table}: copying...");
    let mut tx = conn.begin().await?;
    // Inside the transaction, so that a failed seed leaves the trigger enabled.
    let pause =
        |verb: &str, trigger: &str| sqlx::AssertSqlSafe(format!("ALTER TABLE {table} {verb} TRIGGER {trigger}"));
    if let Some(trigger) = paused_trigger {
        sqlx::query(pause("DISABLE", trigger)).execute(&mut *tx).await?;
    }
    let mut copy = tx.copy_in_raw(statement).await.with_context(|| format!("starting COPY into {table}"))?;
    let mut buf = String::with_capacity(BUFFER_BYTES + 64 * 1024);
    for i in 0..units {
        emit(i, &mut buf);
        if buf.len() >= BUFFER_BYTES {
            copy.send(buf.as_bytes()).await?;
            buf.clear();
        }
    }
    if !buf.is_empty() {
        copy.send(buf.as_bytes()).await?;
    }
    let rows = copy.finish().await.with_context(|| format!("COPY into {table}"))?;
    if let Some(trigger) = paused_trigger {
        sqlx::query(pause("ENABLE", trigger)).execute(&mut *tx).await?;
    }
    tx.commit().await?;
    println!("{table}: {rows} rows in {:.2} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// SplitMix64: small, fast and good enough for synthetic data.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// In `0..n`, skewed towards 0: `P(< k) = sqrt(k / n)`.
    pub fn skewed(&mut self, n: u64) -> u64 {
        let u = self.unit();
        ((u * u * n as f64) as u64).min(n - 1)
    }
}

/// The row generators, sharing the seed and the time anchor.
#[derive(Debug)]
struct Generator {
    options: Options,
    /// The newest article's `created_at`: today's UTC midnight.
    anchor: DateTime<Utc>,
    /// Cumulative Zipf weights of the tag pool.
    tag_cdf: Vec<f64>,
}

impl Generator {
    fn new(options: Options, now: DateTime<Utc>) -> Self {
        let anchor = now.date_naive().and_hms_opt(0, 0, 0).map_or(now, |midnight| midnight.and_utc());
        let mut total = 0.0;
        let tag_cdf = (1..=TAGS.len())
            .map(|rank| {
                total += 1.0 / rank as f64;
                total
            })
            .collect::<Vec<_>>();
        let tag_cdf = tag_cdf.iter().map(|w| w / total).collect();
        Self { options, anchor, tag_cdf }
    }

    /// A separate stream per table, so that tables do not depend on each other.
    fn rng(&self, table: u64) -> Rng {
        Rng::new(self.options.seed ^ table.wrapping_mul(0xA076_1D64_78BD_642F))
    }

    async fn copy_all(&self, conn: &mut PgConnection, hash: &str) -> anyhow::Result<()> {
        let scale = self.options.scale;
        copy_table(
            conn,
            "users",
            "COPY users (id, username, username_skeleton, email, password_hash, bio, created_at, updated_at) FROM STDIN",
            scale.users,
            None,
            self.users(hash),
        )
        .await?;
        copy_table(conn, "tags", "COPY tags (id, name) FROM STDIN", TAGS.len() as u64, None, |i, buf| {
            let _ = writeln!(buf, "{}\t{}", i + 1, TAGS[i as usize]);
        })
        .await?;
        copy_table(
            conn,
            "articles",
            "COPY articles (id, author_id, slug, title, description, created_at, updated_at, tag_list) FROM STDIN",
            scale.articles,
            None,
            self.articles(),
        )
        .await?;
        copy_table(
            conn,
            "article_bodies",
            "COPY article_bodies (article_id, body) FROM STDIN",
            scale.articles,
            None,
            self.article_bodies(),
        )
        .await?;
        copy_table(
            conn,
            "article_tags",
            "COPY article_tags (article_id, tag_id, created_at) FROM STDIN",
            scale.articles,
            // The articles COPY wrote each article's tag list (see `articles`): the
            // trigger that copies them from article_tags would rewrite every article.
            Some("article_tags_copy_inserted"),
            self.article_tags(),
        )
        .await?;
        copy_table(
            conn,
            "favorites",
            "COPY favorites (user_id, article_id, created_at) FROM STDIN",
            scale.users,
            None,
            self.favorites(),
        )
        .await?;
        copy_table(
            conn,
            "follows",
            "COPY follows (follower_id, followee_id, created_at) FROM STDIN",
            scale.users,
            None,
            self.follows(),
        )
        .await?;
        copy_table(
            conn,
            "comments",
            "COPY comments (id, article_id, author_id, body, created_at, updated_at) FROM STDIN",
            scale.comments,
            None,
            self.comments(),
        )
        .await?;
        Ok(())
    }

    /// Article `id`'s creation time: spread over the past year, increasing with the id.
    fn article_created(&self, id: u64) -> DateTime<Utc> {
        let articles = self.options.scale.articles as i64;
        let before = (articles - id as i64) * YEAR_SECONDS / articles;
        self.anchor - Duration::seconds(before)
    }

    fn users(&self, hash: &str) -> impl FnMut(u64, &mut String) {
        let mut rng = self.rng(1);
        let users = self.options.scale.users as i64;
        let first = self.anchor - Duration::seconds(YEAR_SECONDS);
        move |i, buf| {
            let id = i + 1;
            let created = ts(first - Duration::minutes(users - i as i64));
            let bio = if rng.below(3) == 0 { sentence(&mut rng, 6, 14) } else { String::new() };
            // `user{id}`'s skeleton: `1` becomes `l` and `0` `o`, no backslash or tab.
            let skeleton = crate::domain::username_skeleton(&format!("user{id}"));
            let _ =
                writeln!(buf, "{id}\tuser{id}\t{skeleton}\tuser{id}@example.com\t{hash}\t{bio}\t{created}\t{created}");
        }
    }

    fn articles(&self) -> impl FnMut(u64, &mut String) {
        let mut rng = self.rng(2);
        // The same stream as `article_tags`, so each article's list matches its rows.
        let mut tag_rng = self.rng(3);
        let mut picked = Vec::new();
        let users = self.options.scale.users;
        move |i, buf| {
            self.pick_tags(&mut tag_rng, &mut picked);
            let mut names: Vec<&str> = picked.iter().map(|&tag| TAGS[tag - 1]).collect();
            names.sort_unstable();
            let tag_list = format!("{{{}}}", names.join(","));
            let id = i + 1;
            let author = rng.skewed(users) + 1;
            let title = title(&mut rng);
            let description = sentence(&mut rng, 8, 16);
            let created = ts(self.article_created(id));
            let _ =
                writeln!(buf, "{id}\t{author}\tarticle-{id}\t{title}\t{description}\t{created}\t{created}\t{tag_list}");
        }
    }

    fn article_bodies(&self) -> impl FnMut(u64, &mut String) {
        let mut rng = self.rng(7);
        move |i, buf| {
            let sentences = 3 + rng.below(6);
            let body = (0..sentences).map(|_| sentence(&mut rng, 6, 18)).collect::<Vec<_>>().join(" ");
            let _ = writeln!(buf, "{}\t{body}", i + 1);
        }
    }

    fn article_tags(&self) -> impl FnMut(u64, &mut String) {
        let mut rng = self.rng(3);
        let mut picked = Vec::new();
        move |i, buf| {
            let created = ts(self.article_created(i + 1));
            self.pick_tags(&mut rng, &mut picked);
            for tag in &picked {
                let _ = writeln!(buf, "{}\t{tag}\t{created}", i + 1);
            }
        }
    }

    /// One article's tags: 0–5 distinct tag ids (1-based), popular ones more often.
    fn pick_tags(&self, rng: &mut Rng, picked: &mut Vec<usize>) {
        picked.clear();
        let count = rng.below(6) as usize;
        while picked.len() < count {
            let u = rng.unit();
            let tag = self.tag_cdf.partition_point(|&c| c < u).min(TAGS.len() - 1) + 1;
            if !picked.contains(&tag) {
                picked.push(tag);
            }
        }
    }

    /// Each user favorites distinct articles, newer ones more often.
    fn favorites(&self) -> impl FnMut(u64, &mut String) {
        let scale = self.options.scale;
        let mut rng = self.rng(4);
        let counts = per_user_counts(&mut rng, scale.favorites, scale.users, scale.articles);
        let mut picked = HashSet::new();
        move |i, buf| {
            picked.clear();
            while picked.len() < counts[i as usize] as usize {
                let article = scale.articles - rng.skewed(scale.articles);
                if picked.insert(article) {
                    let created = ts(self.after(&mut rng, self.article_created(article)));
                    let _ = writeln!(buf, "{}\t{article}\t{created}", i + 1);
                }
            }
        }
    }

    /// Each user follows distinct other users, low ids (early adopters) more often.
    fn follows(&self) -> impl FnMut(u64, &mut String) {
        let scale = self.options.scale;
        let mut rng = self.rng(5);
        let counts = per_user_counts(&mut rng, scale.follows, scale.users, scale.users - 1);
        let mut picked = HashSet::new();
        let first = self.anchor - Duration::seconds(YEAR_SECONDS);
        move |i, buf| {
            picked.clear();
            let follower = i + 1;
            while picked.len() < counts[i as usize] as usize {
                let followee = rng.skewed(scale.users) + 1;
                if followee != follower && picked.insert(followee) {
                    let created = ts(self.after(&mut rng, first));
                    let _ = writeln!(buf, "{follower}\t{followee}\t{created}");
                }
            }
        }
    }

    fn comments(&self) -> impl FnMut(u64, &mut String) {
        let scale = self.options.scale;
        let mut rng = self.rng(6);
        move |i, buf| {
            let article = scale.articles - rng.skewed(scale.articles);
            let author = rng.below(scale.users) + 1;
            let body = sentence(&mut rng, 4, 30);
            let created = ts(self.after(&mut rng, self.article_created(article)));
            let _ = writeln!(buf, "{}\t{article}\t{author}\t{body}\t{created}\t{created}", i + 1);
        }
    }

    /// A random time between `start` and 30 days later, never after the anchor.
    fn after(&self, rng: &mut Rng, start: DateTime<Utc>) -> DateTime<Utc> {
        let room = (self.anchor - start).num_seconds().clamp(0, 30 * 24 * 3600);
        start + Duration::seconds(rng.below(room as u64 + 1) as i64)
    }
}

/// Splits `total` rows among `users` at random, at most `cap` each.
fn per_user_counts(rng: &mut Rng, total: u64, users: u64, cap: u64) -> Vec<u32> {
    let mut counts = vec![0u32; users as usize];
    let mut left = total.min(users * cap);
    while left > 0 {
        let user = rng.below(users) as usize;
        if u64::from(counts[user]) < cap {
            counts[user] += 1;
            left -= 1;
        }
    }
    counts
}

/// A COPY text timestamp.
fn ts(at: DateTime<Utc>) -> impl std::fmt::Display {
    at.format("%Y-%m-%d %H:%M:%S+00")
}

fn words(rng: &mut Rng, min: u64, max: u64) -> Vec<&'static str> {
    let count = min + rng.below(max - min + 1);
    (0..count).map(|_| WORDS[rng.below(WORDS.len() as u64) as usize]).collect()
}

/// A title of 3 to 8 words, capitalised.
fn title(rng: &mut Rng) -> String {
    capitalise(&words(rng, 3, 8).join(" "))
}

/// A capitalised sentence ending with a full stop.
fn sentence(rng: &mut Rng, min: u64, max: u64) -> String {
    let mut sentence = capitalise(&words(rng, min, max).join(" "));
    sentence.push('.');
    sentence
}

fn capitalise(text: &str) -> String {
    let mut chars = text.chars();
    chars.next().map(|first| first.to_uppercase().chain(chars).collect()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_stream() {
        let (mut a, mut b, mut c) = (Rng::new(42), Rng::new(42), Rng::new(43));
        let xs: Vec<u64> = (0..8).map(|_| a.next_u64()).collect();
        assert_eq!(xs, (0..8).map(|_| b.next_u64()).collect::<Vec<_>>());
        assert_ne!(xs, (0..8).map(|_| c.next_u64()).collect::<Vec<_>>());
    }

    #[test]
    fn draws_stay_in_range() {
        let mut rng = Rng::new(7);
        for n in [1, 2, 10, 1_000_000] {
            for _ in 0..1000 {
                assert!(rng.below(n) < n);
                assert!(rng.skewed(n) < n);
            }
        }
    }

    #[test]
    fn per_user_counts_add_up_and_respect_the_cap() {
        let counts = per_user_counts(&mut Rng::new(1), 500, 10, 60);
        assert_eq!(counts.iter().map(|&c| u64::from(c)).sum::<u64>(), 500);
        assert!(counts.iter().all(|&c| c <= 60));
    }

    #[test]
    fn articles_get_newer_with_their_id() {
        let generator = Generator::new(Options { scale: Scale::S, seed: 1 }, Utc::now());
        assert!(generator.article_created(1) < generator.article_created(2));
        assert_eq!(generator.article_created(Scale::S.articles), generator.anchor);
        assert!(generator.anchor - generator.article_created(1) < Duration::days(366));
    }
}
