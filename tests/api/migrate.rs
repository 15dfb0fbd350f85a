//! Migrations as a deployment runs them, on real `conduit` processes: servers
//! started together on an empty database, `conduit migrate` before servers with
//! `MIGRATE_ON_START=false`, and `conduit healthcheck` (the image's health check).

use crate::support::free_addr;
use std::{
    net::SocketAddr,
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use serde_json::json;
use sqlx::{PgPool, postgres::PgConnectOptions};

use crate::{
    server::http,
    support::{JWT_SECRET, PASSWORD, TestApp},
};

const BIN: &str = env!("CARGO_BIN_EXE_conduit");

/// A database with nothing in it, on the tests' server: a test's database
/// (named, and dropped, as the harness does) with its schema emptied.
struct EmptyDatabase {
    /// Holds the database; dropping it drops the database.
    app: TestApp,
}

impl EmptyDatabase {
    async fn new() -> Self {
        let app = TestApp::new().await;
        sqlx::raw_sql("DROP SCHEMA public CASCADE; CREATE SCHEMA public;")
            .execute(&app.db)
            .await
            .expect("empty the database");
        assert!(!has_migrations_table(&app.db).await, "an empty database");
        Self { app }
    }

    fn pool(&self) -> &PgPool {
        &self.app.db
    }

    fn options(&self) -> &PgConnectOptions {
        &self.app.options
    }

    /// `DATABASE_URL` for a server in a child process.
    fn url(&self) -> String {
        let options = self.options();
        let (host, port, user) = (options.get_host(), options.get_port(), options.get_username());
        let db = options.get_database().expect("the test's database");
        if host.starts_with('/') {
            format!("postgres://{user}@/{db}?host={host}&port={port}")
        } else {
            format!("postgres://{user}@{host}:{port}/{db}")
        }
    }

    /// `conduit args...` on this database, with nothing else configured but
    /// `vars`: no metrics listener, no rate limits, no drain unless set.
    fn conduit(&self, args: &[&str], vars: &[(&str, &str)]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DATABASE_URL", self.url())
            .env("JWT_SECRET", JWT_SECRET)
            .env("METRICS_ADDR", "")
            .env("RATE_LIMIT", "off")
            .env("SHUTDOWN_DRAIN_SECONDS", "0")
            .env("LOG_FORMAT", "json")
            .envs(vars.iter().copied())
            .current_dir(std::env::temp_dir())
            .stdin(Stdio::null());
        cmd
    }
}

async fn has_migrations_table(db: &PgPool) -> bool {
    sqlx::query_scalar::<_, bool>("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
        .fetch_one(db)
        .await
        .expect("look for the migrations table")
}

/// The versions of this binary's migrations, in order.
fn known_versions() -> Vec<i64> {
    conduit::db::MIGRATOR.iter().filter(|m| !m.migration_type.is_down_migration()).map(|m| m.version).collect()
}

/// Each version recorded in `_sqlx_migrations`, how many times, and whether
/// every record of it succeeded.
async fn recorded(db: &PgPool) -> Vec<(i64, i64, bool)> {
    sqlx::query_as(
        "SELECT version, count(*), bool_and(success) FROM _sqlx_migrations GROUP BY version ORDER BY version",
    )
    .fetch_all(db)
    .await
    .expect("read the migrations' record")
}

/// A server process, killed if the test ends without stopping it; its output
/// goes to files, read after it stopped.
struct Server {
    child: Child,
    addr: SocketAddr,
    stdout: tempfile::NamedTempFile,
    stderr: tempfile::NamedTempFile,
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            self.child.kill().ok();
            self.child.wait().ok();
        }
    }
}

impl Server {
    /// `conduit serve` on a free loopback port.
    fn spawn(db: &EmptyDatabase, vars: &[(&str, &str)]) -> Self {
        let addr = free_addr();
        Self::spawn_at(db, &addr.to_string(), addr, vars)
    }

    /// `conduit serve` with `BIND_ADDR=bind`, reached at `addr`.
    fn spawn_at(db: &EmptyDatabase, bind: &str, addr: SocketAddr, vars: &[(&str, &str)]) -> Self {
        let mut vars = vars.to_vec();
        vars.push(("BIND_ADDR", bind));
        let (stdout, stderr) =
            (tempfile::NamedTempFile::new().expect("log"), tempfile::NamedTempFile::new().expect("log"));
        let child = db
            .conduit(&["serve"], &vars)
            .stdout(stdout.reopen().expect("log file"))
            .stderr(stderr.reopen().expect("log file"))
            .spawn()
            .expect("start conduit");
        Self { child, addr, stdout, stderr }
    }

    fn logs(&self) -> (String, String) {
        let read = |file: &tempfile::NamedTempFile| std::fs::read_to_string(file.path()).expect("read log");
        (read(&self.stdout), read(&self.stderr))
    }

    /// Polls `/health/ready` until it answers 200; fails if the process exits.
    async fn wait_ready(&mut self) {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("poll child") {
                panic!("conduit exited during start-up ({status}): {:?}", self.logs());
            }
            if tokio::net::TcpStream::connect(self.addr).await.is_ok()
                && http(self.addr, "GET", "/health/ready", "").await.0 == 200
            {
                return;
            }
            assert!(started.elapsed() < Duration::from_secs(60), "not ready after 60 s: {:?}", self.logs());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn signal(&self, signal: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(self.child.id().try_into().expect("pid"));
        nix::sys::signal::kill(pid, signal).expect("signal conduit");
    }

    /// Waits, up to `within`, for the process to exit; its exit code.
    async fn exit_code(&mut self, within: Duration) -> Option<i32> {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("poll child") {
                return status.code();
            }
            assert!(started.elapsed() < within, "conduit still running after {within:?}: {:?}", self.logs());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM, then a clean exit.
    async fn stop(mut self) {
        self.signal(nix::sys::signal::SIGTERM);
        assert_eq!(self.exit_code(Duration::from_secs(30)).await, Some(0), "clean exit: {:?}", self.logs());
    }
}

/// The lines of a JSON log at WARN or ERROR level.
fn warnings_and_errors(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|line| {
            let level = serde_json::from_str::<serde_json::Value>(line).map(|v| v["level"].as_str().map(str::to_owned));
            !matches!(level, Ok(Some(level)) if level == "INFO" || level == "DEBUG" || level == "TRACE")
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_servers_started_together_on_an_empty_database_migrate_it_once() {
    let db = EmptyDatabase::new().await;
    // Spawned one after another with nothing in between: all three reach the
    // migrations within milliseconds, and applying them takes far longer.
    let mut servers: Vec<Server> = (0..3).map(|_| Server::spawn(&db, &[])).collect();
    for server in &mut servers {
        server.wait_ready().await;
    }
    let expected: Vec<(i64, i64, bool)> = known_versions().into_iter().map(|v| (v, 1, true)).collect();
    assert_eq!(recorded(db.pool()).await, expected, "each migration recorded once, successful");
    // Every server serves the same schema.
    for (n, server) in servers.iter().enumerate() {
        let user = json!({"user": {"username": format!("user{n}"), "email": format!("user{n}@example.com"), "password": PASSWORD}});
        let (status, body) = http(server.addr, "POST", "/api/users", &user.to_string()).await;
        assert_eq!(status, 201, "server {n}: {body}");
    }
    for server in servers {
        let (stdout, stderr) = server.logs();
        assert!(stdout.contains("listening"), "{stdout}");
        assert_eq!(warnings_and_errors(&stdout), Vec::<&str>::new(), "no warning nor error in the log");
        assert!(stderr.is_empty(), "{stderr}");
        server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conduit_migrate_applies_what_is_missing_once_then_a_server_with_migrate_on_start_false_serves() {
    let db = EmptyDatabase::new().await;
    let output = db.conduit(&["migrate"], &[]).output().expect("run conduit migrate");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let known = known_versions();
    for migration in conduit::db::MIGRATOR.iter().filter(|m| !m.migration_type.is_down_migration()) {
        assert!(stdout.contains(&format!("applied {} {}\n", migration.version, migration.description)), "{stdout}");
    }
    assert!(stdout.contains(&format!("{0} of {0} migrations applied now", known.len())), "{stdout}");
    let expected: Vec<(i64, i64, bool)> = known.iter().map(|v| (*v, 1, true)).collect();
    assert_eq!(recorded(db.pool()).await, expected);

    let again = db.conduit(&["migrate"], &[]).output().expect("run conduit migrate again");
    let stdout = String::from_utf8_lossy(&again.stdout);
    assert_eq!(again.status.code(), Some(0), "{again:?}");
    assert!(!stdout.contains("applied 2"), "nothing is applied twice: {stdout}");
    assert!(stdout.contains(&format!("0 of {} migrations applied now", known.len())), "{stdout}");

    let mut server = Server::spawn(&db, &[("MIGRATE_ON_START", "false")]);
    server.wait_ready().await;
    let user = json!({"user": {"username": "jake", "email": "jake@example.com", "password": PASSWORD}});
    assert_eq!(http(server.addr, "POST", "/api/users", &user.to_string()).await.0, 201);
    assert_eq!(http(server.addr, "GET", "/api/tags", "").await.0, 200);
    let (stdout, _) = server.logs();
    assert!(stdout.contains("MIGRATE_ON_START=false: the database has every migration, none applied"), "{stdout}");
    assert_eq!(recorded(db.pool()).await, expected, "the server applied nothing");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_with_migrate_on_start_false_refuses_a_database_that_lacks_a_migration_naming_conduit_migrate() {
    let db = EmptyDatabase::new().await;
    let mut server = Server::spawn(&db, &[("MIGRATE_ON_START", "false")]);
    assert_eq!(server.exit_code(Duration::from_secs(30)).await, Some(1));
    let (_, stderr) = server.logs();
    assert!(stderr.contains("no migrations applied") && stderr.contains("`conduit migrate`"), "{stderr}");
    assert!(!has_migrations_table(db.pool()).await, "it applied nothing, not even sqlx's table");

    // All but the newest migration: the server names the one missing.
    let known = known_versions();
    let (newest, before) = (known[known.len() - 1], known[known.len() - 2]);
    conduit::db::MIGRATOR.run_to(before, db.pool()).await.expect("migrate all but the newest");
    let mut server = Server::spawn(&db, &[("MIGRATE_ON_START", "false")]);
    assert_eq!(server.exit_code(Duration::from_secs(30)).await, Some(1));
    let (_, stderr) = server.logs();
    assert!(stderr.contains(&format!("lacks migrations {newest} (")), "{stderr}");
    assert!(stderr.contains("`conduit migrate`"), "{stderr}");
    assert_eq!(recorded(db.pool()).await.len(), known.len() - 1, "it applied nothing");

    // An edited migration is refused as well.
    db.conduit(&["migrate"], &[]).output().expect("run conduit migrate");
    sqlx::query("UPDATE _sqlx_migrations SET checksum = '\\x00' WHERE version = $1")
        .bind(known[0])
        .execute(db.pool())
        .await
        .expect("alter a checksum");
    let mut server = Server::spawn(&db, &[("MIGRATE_ON_START", "false")]);
    assert_eq!(server.exit_code(Duration::from_secs(30)).await, Some(1));
    let (_, stderr) = server.logs();
    assert!(stderr.contains(&format!("migrations {} (", known[0])) && stderr.contains("differ"), "{stderr}");
}

/// A rollback: the database has a migration of a newer version that this one
/// does not know. `conduit migrate`, and a server, go on with what they know.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conduit_migrate_and_the_server_accept_a_newer_versions_migration_beside_theirs() {
    let db = EmptyDatabase::new().await;
    let output = db.conduit(&["migrate"], &[]).output().expect("run conduit migrate");
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let newer = known_versions().last().copied().expect("a migration") + 1;
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES ($1, 'from a newer version', true, '\\x00', 1)",
    )
    .bind(newer)
    .execute(db.pool())
    .await
    .expect("record a newer migration");

    let again = db.conduit(&["migrate"], &[]).output().expect("run conduit migrate");
    assert_eq!(again.status.code(), Some(0), "{again:?}");
    assert!(String::from_utf8_lossy(&again.stdout).contains("0 of"), "{again:?}");
    for vars in [&[("MIGRATE_ON_START", "true")], &[("MIGRATE_ON_START", "false")]] {
        let mut server = Server::spawn(&db, vars);
        server.wait_ready().await;
        assert_eq!(http(server.addr, "GET", "/api/tags", "").await.0, 200, "{vars:?}");
        server.stop().await;
    }
}

/// `conduit healthcheck` with `BIND_ADDR=bind` and nothing else; its output,
/// and how long it took.
fn healthcheck(bind: &str) -> (Output, Duration) {
    let started = Instant::now();
    let output = Command::new(BIN)
        .arg("healthcheck")
        .env_clear()
        .env("BIND_ADDR", bind)
        .current_dir(std::env::temp_dir())
        .stdin(Stdio::null())
        .output()
        .expect("run conduit healthcheck");
    (output, started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthcheck_exits_0_against_a_ready_server_and_1_against_a_draining_a_stopped_or_a_mute_one() {
    let db = EmptyDatabase::new().await;
    let port = free_addr().port();
    let bind = format!("0.0.0.0:{port}");
    // Listening on every interface, as in the image: the check probes loopback.
    let mut server = Server::spawn_at(&db, &bind, ([127, 0, 0, 1], port).into(), &[("SHUTDOWN_DRAIN_SECONDS", "60")]);
    server.wait_ready().await;

    let (ready, took) = healthcheck(&bind);
    assert_eq!(ready.status.code(), Some(0), "{ready:?}");
    assert!(String::from_utf8_lossy(&ready.stdout).contains(&format!("127.0.0.1:{port}")), "{ready:?}");
    eprintln!("healthcheck against a ready server: exit 0 in {took:?}");

    // Draining: readiness is off while the server still serves.
    server.signal(nix::sys::signal::SIGTERM);
    let started = Instant::now();
    while http(server.addr, "GET", "/health/ready", "").await.0 != 503 {
        assert!(started.elapsed() < Duration::from_secs(10), "still ready 10 s after SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (draining, _) = healthcheck(&bind);
    assert_eq!(draining.status.code(), Some(1), "{draining:?}");
    assert!(String::from_utf8_lossy(&draining.stderr).contains("answered 503"), "{draining:?}");

    // Stopped: nothing listens.
    server.signal(nix::sys::signal::SIGTERM);
    assert_eq!(server.exit_code(Duration::from_secs(20)).await, Some(0));
    let (stopped, took) = healthcheck(&bind);
    assert_eq!(stopped.status.code(), Some(1), "{stopped:?}");
    // Refused at once, not given up on after the time limit (a time bound
    // would fail on a busy machine; the message says which it was).
    assert!(!String::from_utf8_lossy(&stopped.stderr).contains("no answer within"), "{stopped:?} in {took:?}");

    // A listener that accepts and never answers: given up after 2 s.
    let mute = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let (mute_out, took) = healthcheck(&mute.local_addr().expect("addr").to_string());
    assert_eq!(mute_out.status.code(), Some(1), "{mute_out:?}");
    assert!(String::from_utf8_lossy(&mute_out.stderr).contains("no answer within 2s"), "{mute_out:?}");
    // It waited its limit, and then stopped waiting (no hang).
    assert!((Duration::from_secs(2)..Duration::from_secs(30)).contains(&took), "{took:?}");

    // A bad BIND_ADDR is a failed check (1), not Docker's reserved 2.
    let (bad, _) = healthcheck("localhost");
    assert_eq!(bad.status.code(), Some(1), "{bad:?}");
    assert!(String::from_utf8_lossy(&bad.stderr).contains("BIND_ADDR"), "{bad:?}");
}

#[test]
fn conduit_migrate_without_a_reachable_database_fails_with_a_clear_message() {
    let migrate = |url: &str| {
        Command::new(BIN)
            .arg("migrate")
            .env_clear()
            .env("DATABASE_URL", url)
            .current_dir(std::env::temp_dir())
            .stdin(Stdio::null())
            .output()
            .expect("run conduit migrate")
    };
    let bad = migrate("mysql://x");
    assert_eq!(bad.status.code(), Some(2), "{bad:?}");
    assert!(String::from_utf8_lossy(&bad.stderr).contains("DATABASE_URL"), "{bad:?}");
    // Nothing listens on port 1: refused, retried for the few seconds a starting database gets.
    let unreachable = migrate("postgres://nobody@127.0.0.1:1/none");
    assert_eq!(unreachable.status.code(), Some(1), "{unreachable:?}");
    let stderr = String::from_utf8_lossy(&unreachable.stderr);
    assert!(stderr.starts_with("conduit migrate: connecting to PostgreSQL"), "{stderr}");
    assert!(unreachable.stdout.is_empty(), "{unreachable:?}");
}
