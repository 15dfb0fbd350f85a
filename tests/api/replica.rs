//! The read replica (`DATABASE_READ_URL`) against a real streaming replica.
//!
//! One primary and one replica (`pg_basebackup -R`) are started for the test
//! process on free loopback ports, from PostgreSQL 15's binaries (as the
//! `postgres` user when run as root), and stopped and removed by a watchdog once
//! the process is gone. Each test has a database of its own on the pair
//! (created on the primary, it is replicated) and routers built as the server
//! builds them. The tests pause the replica's replay, stop and start it: they
//! take turns ([`PAIR_IN_USE`]), and each starts by putting the replica back to
//! work, whatever the test before it left.

use crate::support::free_addr;
use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{Router, body::Body, http::Request, http::StatusCode};
use conduit::{
    app::{self, AppState, HttpOptions},
    auth::{JwtKeys, PasswordHasher, Revocations},
    db::{Reads, Replica, ReplicaConfig, ReplicaStatus},
    edge::rate_limit::RateLimits,
};
use http_body_util::BodyExt as _;
use secrecy::SecretString;
use serde_json::{Value, json};
use sqlx::{Connection as _, PgConnection, PgPool, postgres::PgConnectOptions};
use tokio::sync::{Mutex, MutexGuard, OnceCell};
use tower::ServiceExt as _;

use crate::support::{JWT_SECRET, PASSWORD, TOKEN_LIFETIME};

const BIN_DIR: &str = "/usr/lib/postgresql/15/bin";

/// How long a condition is waited for before a test fails.
const PATIENCE: Duration = Duration::from_secs(20);

/// The primary and its replica, for the whole test process.
struct Pair {
    dir: PathBuf,
    primary_port: u16,
    replica_port: u16,
}

static PAIR: OnceCell<Pair> = OnceCell::const_new();
/// One test at a time pauses, stops or uses the pair.
static PAIR_IN_USE: Mutex<()> = Mutex::const_new(());
static DATABASES: AtomicU64 = AtomicU64::new(0);

/// `program` of PostgreSQL's binaries with `args`, as the `postgres` user when
/// we are root (PostgreSQL refuses to run as root); panics unless it succeeds.
fn pg(program: &str, args: &[&str]) {
    let binary = format!("{BIN_DIR}/{program}");
    let mut command = if is_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--", &binary]);
        command
    } else {
        Command::new(&binary)
    };
    let output = command.args(args).output().unwrap_or_else(|err| panic!("run {program}: {err}"));
    assert!(output.status.success(), "{program} {args:?}: {}", String::from_utf8_lossy(&output.stderr));
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self").map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0).unwrap_or(false)
}

/// A port nothing listens on now.
impl Pair {
    fn data(&self, which: &str) -> String {
        self.dir.join(which).display().to_string()
    }

    fn options(&self, port: u16) -> PgConnectOptions {
        PgConnectOptions::new().host("127.0.0.1").port(port).username("postgres").database("postgres")
    }

    fn primary(&self) -> PgConnectOptions {
        self.options(self.primary_port)
    }

    fn replica(&self) -> PgConnectOptions {
        self.options(self.replica_port)
    }

    fn control(&self, which: &str, action: &str) {
        let (data, log) = (self.data(which), self.dir.join(format!("{which}.log")).display().to_string());
        match action {
            "start" => pg("pg_ctl", &["-D", &data, "-l", &log, "-w", "-t", "60", "start"]),
            _ => pg("pg_ctl", &["-D", &data, "-m", "fast", "-w", "stop"]),
        }
    }

    fn replica_running(&self) -> bool {
        Path::new(&self.data("replica")).join("postmaster.pid").exists()
    }
}

async fn pair() -> &'static Pair {
    PAIR.get_or_init(|| async {
        let dir = tempfile::Builder::new().prefix("conduit-replica-test-").tempdir().expect("temp dir").keep();
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o777)).expect("chmod");
        let pair = Pair { dir, primary_port: free_addr().port(), replica_port: free_addr().port() };
        let primary = pair.data("primary");
        pg("initdb", &["-D", &primary, "-U", "postgres", "--auth=trust", "-N"]);
        let settings = format!(
            "port = {}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\nwal_level = replica\n\
             max_wal_senders = 4\nfsync = off\nmax_connections = 200\n",
            pair.primary_port,
            pair.dir.display()
        );
        append(&Path::new(&primary).join("postgresql.conf"), &settings);
        append(&Path::new(&primary).join("pg_hba.conf"), "host replication all 127.0.0.1/32 trust\n");
        pair.control("primary", "start");
        let port = pair.primary_port.to_string();
        let replica = pair.data("replica");
        pg(
            "pg_basebackup",
            &["-h", "127.0.0.1", "-p", &port, "-U", "postgres", "-D", &replica, "-R", "-X", "stream", "-c", "fast"],
        );
        append(&Path::new(&replica).join("postgresql.conf"), &format!("port = {}\n", pair.replica_port));
        pair.control("replica", "start");
        // Both clusters go once this process is gone, however it ends.
        let stop = |which: &str| {
            let data = pair.data(which);
            if is_root() {
                format!("runuser -u postgres -- {BIN_DIR}/pg_ctl -D '{data}' -m immediate stop")
            } else {
                format!("{BIN_DIR}/pg_ctl -D '{data}' -m immediate stop")
            }
        };
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done; {replica}; {primary}; rm -rf '{dir}'",
            pid = std::process::id(),
            replica = stop("replica"),
            primary = stop("primary"),
            dir = pair.dir.display()
        );
        #[allow(clippy::zombie_processes, reason = "the watchdog must outlive this process")]
        let _watchdog = Command::new("sh")
            .args(["-c", &script])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn the watchdog");
        pair
    })
    .await
}

fn append(path: &Path, text: &str) {
    use std::io::Write as _;
    let mut file = std::fs::OpenOptions::new().append(true).open(path).expect("open a configuration file");
    file.write_all(text.as_bytes()).expect("append to a configuration file");
}

/// Waits until `condition` holds, polling; panics after [`PATIENCE`].
async fn wait_for(what: &str, mut condition: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    while !condition().await {
        assert!(start.elapsed() < PATIENCE, "waited {PATIENCE:?} for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A test's database on the pair, and the pair to itself.
struct Fixture {
    pair: &'static Pair,
    primary: PgConnectOptions,
    replica: PgConnectOptions,
    /// The primary, for the test's own statements.
    db: PgPool,
    _turn: MutexGuard<'static, ()>,
}

impl Fixture {
    /// Waits for the pair, puts the replica back to work, and makes a database.
    async fn new() -> Self {
        let pair = pair().await;
        let turn = PAIR_IN_USE.lock().await;
        if !pair.replica_running() {
            pair.control("replica", "start");
        }
        let mut admin = PgConnection::connect_with(&pair.replica()).await.expect("connect to the replica");
        sqlx::query("SELECT pg_wal_replay_resume()").execute(&mut admin).await.expect("resume the replay");
        for statement in ["ALTER SYSTEM RESET recovery_min_apply_delay", "SELECT pg_reload_conf()"] {
            sqlx::query(statement).execute(&mut admin).await.expect(statement);
        }
        let name = format!("conduit_replica_{}_{}", std::process::id(), DATABASES.fetch_add(1, Ordering::Relaxed));
        let mut conn = PgConnection::connect_with(&pair.primary()).await.expect("connect to the primary");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .expect("create the database");
        let (primary, replica) = (pair.primary().database(&name), pair.replica().database(&name));
        wait_for("the database on the replica", async || PgConnection::connect_with(&replica).await.is_ok()).await;
        let db = PgPool::connect_with(primary.clone()).await.expect("connect to the test database");
        Self { pair, primary, replica, db, _turn: turn }
    }

    /// A server's router over the pair, with a replica lagging at most `max_lag`.
    async fn server(&self, max_lag: Duration) -> Server {
        let timeout = Duration::from_secs(30);
        let config = ReplicaConfig { options: self.replica.clone(), max_lag };
        let replica = Replica::start(&config, &self.primary, 5, timeout);
        let server = Server { router: self.router(Some(replica.clone())).await, replica };
        wait_for("the replica to be polled and the announcements heard", async || {
            server.replica.status() == ReplicaStatus::Ready && server.replica.is_listening()
        })
        .await;
        server
    }

    /// A router over the primary, with `replica` if given.
    async fn router(&self, replica: Option<Arc<Replica>>) -> Router {
        let timeout = Duration::from_secs(30);
        let (writes, reads) = conduit::db::open(self.primary.clone(), 5, timeout).await.expect("open the database");
        let reads: Reads = match replica {
            Some(replica) => reads.with_replica(replica),
            None => reads,
        };
        let state = AppState {
            writes,
            reads,
            jwt: Arc::new(JwtKeys::new(&SecretString::from(JWT_SECRET), TOKEN_LIFETIME)),
            revocations: Revocations::follow(&self.primary, TOKEN_LIFETIME).await.expect("follow revocations"),
            hasher: PasswordHasher::new(2).expect("hasher"),
            common_passwords: Default::default(),
            readiness: Default::default(),
            oidc: Default::default(),
            session_policy: Default::default(),
        };
        let options = HttpOptions { request_timeout: timeout, ..Default::default() };
        app::router_with_limits(state, &options, &RateLimits::off())
    }

    async fn on_replica(&self, statement: &'static str) {
        let mut conn = PgConnection::connect_with(&self.replica).await.expect("connect to the replica");
        sqlx::query(statement).execute(&mut conn).await.expect(statement);
    }
}

/// One server: its router, and its view of the replica.
struct Server {
    router: Router,
    replica: Arc<Replica>,
}

impl Server {
    async fn request(&self, method: &str, uri: &str, token: Option<&str>, body: Option<Value>) -> (StatusCode, Value) {
        let mut builder = Request::builder().method(method).uri(uri);
        if let Some(token) = token {
            builder = builder.header("authorization", format!("Token {token}"));
        }
        let body = match body {
            Some(json) => {
                builder = builder.header("content-type", "application/json");
                Body::from(json.to_string())
            }
            None => Body::empty(),
        };
        let response = self.router.clone().oneshot(builder.body(body).expect("request")).await.expect("infallible");
        let status = response.status();
        let bytes = response.into_body().collect().await.expect("body").to_bytes();
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    async fn get(&self, uri: &str, token: Option<&str>) -> (StatusCode, Value) {
        self.request("GET", uri, token, None).await
    }

    async fn register(&self, username: &str) -> String {
        let user =
            json!({"user": {"username": username, "email": format!("{username}@example.com"), "password": PASSWORD}});
        let (status, body) = self.request("POST", "/api/users", None, Some(user)).await;
        assert_eq!(status, StatusCode::CREATED, "register {username}: {body}");
        body["user"]["token"].as_str().expect("token").to_owned()
    }

    async fn create_article(&self, token: &str, title: &str) -> String {
        let article = json!({"article": {"title": title, "description": "d", "body": "b", "tagList": []}});
        let (status, body) = self.request("POST", "/api/articles", Some(token), Some(article)).await;
        assert_eq!(status, StatusCode::CREATED, "create {title}: {body}");
        body["article"]["slug"].as_str().expect("slug").to_owned()
    }

    /// The titles `GET /api/articles` lists for the owner of `token`.
    async fn titles(&self, token: Option<&str>) -> Vec<String> {
        let (status, body) = self.get("/api/articles", token).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["articles"]
            .as_array()
            .expect("articles")
            .iter()
            .map(|a| a["title"].as_str().expect("title").to_owned())
            .collect()
    }
}

/// The value of `conduit_db_reads_total` with all of `labels`, summed.
fn counted(exposition: &str, labels: &[&str]) -> f64 {
    exposition
        .lines()
        .filter(|line| line.starts_with("conduit_db_reads_total{") && labels.iter().all(|l| line.contains(l)))
        .filter_map(|line| line.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// The user id in a token (its `sub`).
fn user_id(token: &str) -> i64 {
    JwtKeys::new(&SecretString::from(JWT_SECRET), TOKEN_LIFETIME).verify(token).expect("a valid token").0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_reads_are_served_by_the_replica() {
    let fixture = Fixture::new().await;
    let server = fixture.server(Duration::from_secs(60)).await;
    let jake = server.register("jake").await;
    server.create_article(&jake, "Before the pause").await;
    wait_for("the article on the replica", async || server.titles(None).await.len() == 1).await;

    fixture.on_replica("SELECT pg_wal_replay_pause()").await;
    server.create_article(&jake, "During the pause").await;
    let before = server.replica.reads_served();
    // The replica, paused, has not the second article: the list comes from it.
    assert_eq!(server.titles(None).await, ["Before the pause"]);
    assert_eq!(server.replica.reads_served(), before + 1);
    // Its sessions on the replica are the server's reads.
    let reading: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'conduit' AND datname = current_database()",
    )
    .fetch_one(&mut PgConnection::connect_with(&fixture.replica).await.expect("connect to the replica"))
    .await
    .expect("count the sessions");
    assert!(reading >= 1, "a session of the server on the replica");

    fixture.on_replica("SELECT pg_wal_replay_resume()").await;
    wait_for("the replica to catch up", async || server.titles(None).await.len() == 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_reads_their_own_write_on_the_same_server_and_on_another_while_the_replica_is_paused() {
    let fixture = Fixture::new().await;
    let (first, second) =
        (fixture.server(Duration::from_secs(60)).await, fixture.server(Duration::from_secs(60)).await);
    let jake = first.register("jake").await;
    wait_for("jake on the replica", async || first.replica.pending_write(user_id(&jake)).is_none()).await;
    fixture.on_replica("SELECT pg_wal_replay_pause()").await;

    first.create_article(&jake, "Mine").await;
    // The server that took the write knows it before answering.
    assert!(first.replica.pending_write(user_id(&jake)).is_some());
    assert_eq!(first.titles(Some(&jake)).await, ["Mine"], "on the same server");
    // The other hears of it through the primary's notification.
    let written = Instant::now();
    wait_for("the announcement on the second server", async || second.replica.pending_write(user_id(&jake)).is_some())
        .await;
    let heard = written.elapsed();
    assert_eq!(second.titles(Some(&jake)).await, ["Mine"], "on the second server");
    let (status, body) = second.get("/api/user", Some(&jake)).await;
    assert_eq!((status, body["user"]["username"].as_str()), (StatusCode::OK, Some("jake")));
    eprintln!("the second server heard of the write {heard:?} after the first answered it");

    // Anonymous, the list is still the replica's.
    assert_eq!(first.titles(None).await, Vec::<String>::new());
    fixture.on_replica("SELECT pg_wal_replay_resume()").await;
    wait_for("the write forgotten once replayed", async || second.replica.pending_write(user_id(&jake)).is_none())
        .await;
    let before = second.replica.reads_served();
    assert_eq!(second.titles(Some(&jake)).await, ["Mine"]);
    assert_eq!(second.replica.reads_served(), before + 1, "jake reads on the replica again");
}

/// A write's answer waits for the replica to replay it: anyone reading on the
/// replica afterwards, through any server, anonymous or not, sees it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_a_write_is_answered_every_read_on_the_replica_through_any_server_sees_it() {
    let fixture = Fixture::new().await;
    let (writer, reader) =
        (fixture.server(Duration::from_secs(60)).await, fixture.server(Duration::from_secs(60)).await);
    let jake = writer.register("jake").await;
    let celeb = writer.register("celeb").await;
    // A replica 30 ms behind (its replay of each commit held back that long): a
    // read sent as soon as the answer is in would otherwise miss the write.
    fixture.on_replica("ALTER SYSTEM SET recovery_min_apply_delay = '30ms'").await;
    fixture.on_replica("SELECT pg_reload_conf()").await;
    wait_for("the delay in force", async || {
        let mut conn = PgConnection::connect_with(&fixture.replica).await.expect("connect to the replica");
        sqlx::query_scalar::<_, String>("SHOW recovery_min_apply_delay").fetch_one(&mut conn).await.expect("show")
            == "30ms"
    })
    .await;
    for n in 1..=10 {
        writer.create_article(&jake, &format!("Article {n}")).await;
        let before = reader.replica.reads_served();
        // At once, with no wait for an announcement: by the answer, the replica has it.
        assert_eq!(reader.titles(None).await.len(), n, "anonymous, on the other server, after write {n}");
        assert_eq!(reader.titles(Some(&celeb)).await.len(), n, "another user, on the other server, after write {n}");
        assert_eq!(reader.replica.reads_served(), before + 2, "both read on the replica");
    }
    fixture.on_replica("ALTER SYSTEM RESET recovery_min_apply_delay").await;
    fixture.on_replica("SELECT pg_reload_conf()").await;
}

/// A user who just signed up reads their account on another server at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_who_just_registered_is_found_on_another_server_while_the_replica_is_paused() {
    let fixture = Fixture::new().await;
    let (first, second) =
        (fixture.server(Duration::from_secs(60)).await, fixture.server(Duration::from_secs(60)).await);
    fixture.on_replica("SELECT pg_wal_replay_pause()").await;
    let jake = first.register("jake").await;
    wait_for("the announcement on the second server", async || second.replica.pending_write(user_id(&jake)).is_some())
        .await;
    let (status, body) = second.get("/api/user", Some(&jake)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// The announcement's way from one server to another, measured: the window
/// in which another server does not yet know of a user's write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_server_hears_of_a_write_within_milliseconds() {
    let fixture = Fixture::new().await;
    let (first, second) =
        (fixture.server(Duration::from_secs(60)).await, fixture.server(Duration::from_secs(60)).await);
    let jake = first.register("jake").await;
    let id = user_id(&jake);
    fixture.on_replica("SELECT pg_wal_replay_pause()").await;
    let (mut delays, mut at_once, mut writes) = (Vec::new(), 0, Vec::new());
    for n in 0..100 {
        let bio = json!({"user": {"bio": format!("bio {n}")}});
        let sent = Instant::now();
        let (status, body) = first.request("PUT", "/api/user", Some(&jake), Some(bio)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let answered = Instant::now();
        writes.push(answered - sent);
        let written = first.replica.pending_write(id).expect("known at once where written");
        if second.replica.pending_write(id).is_some_and(|heard| heard >= written) {
            at_once += 1;
        }
        let start = Instant::now();
        while second.replica.pending_write(id).is_none_or(|heard| heard < written) {
            assert!(start.elapsed() < PATIENCE, "the announcement never came");
            // A sleep, not a spin: a spinning task delays the runtime's polling of
            // the sockets, the listener's among them (tokio's timer ticks by 1 ms).
            tokio::time::sleep(Duration::from_micros(100)).await;
        }
        delays.push(answered.elapsed());
    }
    delays.sort();
    let (median, p99, max) = (delays[50], delays[98], delays[99]);
    // The same writes on a server without a replica: what the announcement costs.
    // (Its `replica` is only there to fill the field: the router has none.)
    let plain = Server { router: fixture.router(None).await, replica: first.replica.clone() };
    let mut plain_writes = Vec::new();
    for n in 0..100 {
        let bio = json!({"user": {"bio": format!("plain {n}")}});
        let sent = Instant::now();
        let (status, body) = plain.request("PUT", "/api/user", Some(&jake), Some(bio)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        plain_writes.push(sent.elapsed());
    }
    writes.sort();
    plain_writes.sort();
    eprintln!(
        "announcements heard by the second server before the first's answer was read: {at_once} of 100; \
         all within: median {median:?}, p99 {p99:?}, max {max:?} of the answer. A write's answer took \
         {:?} (median) with the announcement, {:?} without a replica",
        writes[50], plain_writes[50]
    );
    assert!(max < Duration::from_secs(1), "max {max:?}");
    fixture.on_replica("SELECT pg_wal_replay_resume()").await;
}

/// Another user's read may be stale by up to MAX_REPLICA_LAG_MS: during a pause
/// it is served by the replica until the lag passes the maximum, then by the
/// primary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_users_read_during_a_pause_is_stale_within_the_lag_allowed_then_goes_to_the_primary() {
    let fixture = Fixture::new().await;
    let max_lag = Duration::from_millis(1500);
    let server = fixture.server(max_lag).await;
    let jake = server.register("jake").await;
    let bob = server.register("bob").await;
    wait_for("both users on the replica", async || {
        server.replica.pending_write(user_id(&jake)).is_none() && server.replica.pending_write(user_id(&bob)).is_none()
    })
    .await;
    fixture.on_replica("SELECT pg_wal_replay_pause()").await;
    let paused = Instant::now();
    server.create_article(&jake, "Fresh").await;
    let bob_sees = server.titles(Some(&bob)).await;
    if paused.elapsed() < max_lag {
        assert_eq!(bob_sees, Vec::<String>::new(), "bob's read, on the replica, does not have it yet");
    }
    wait_for("the lag past the maximum", async || server.replica.status() == ReplicaStatus::Lagging).await;
    // Not before the maximum, give or take a position written just before the
    // pause (the registration's announcement) and a poll period.
    assert!(paused.elapsed() + Duration::from_millis(100) >= max_lag, "lagging after {:?}", paused.elapsed());
    assert_eq!(server.titles(Some(&bob)).await, ["Fresh"], "on the primary");
    assert_eq!(server.titles(None).await, ["Fresh"], "anonymous too");
    fixture.on_replica("SELECT pg_wal_replay_resume()").await;
    wait_for("the replica back within the lag", async || server.replica.status() == ReplicaStatus::Ready).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_go_to_the_primary_when_the_replica_lags_past_the_maximum() {
    // Process-wide, installed before the router is built (see tests/api/metrics.rs).
    let metrics = conduit::telemetry::metrics::install().expect("the recorder installs");
    let fixture = Fixture::new().await;
    let server = fixture.server(Duration::from_millis(200)).await;
    let jake = server.register("jake").await;
    fixture.on_replica("SELECT pg_wal_replay_pause()").await;
    // A write the server does not announce (made outside it): only the lag tells.
    sqlx::query("UPDATE users SET bio = 'written elsewhere'").execute(&fixture.db).await.expect("update");
    wait_for("the lag past 200 ms", async || server.replica.status() == ReplicaStatus::Lagging).await;
    let before = server.replica.reads_served();
    let lagging = |exposition: &str| counted(exposition, &["target=\"primary\"", "reason=\"replica_lagging\""]);
    let lagging_before = lagging(&metrics.render());
    let (status, body) = server.get("/api/profiles/jake", None).await;
    assert_eq!((status, body["profile"]["bio"].as_str()), (StatusCode::OK, Some("written elsewhere")));
    assert_eq!(server.replica.reads_served(), before, "not read on the replica");
    let exposition = metrics.render();
    assert_eq!(lagging(&exposition), lagging_before + 1.0, "{exposition}");
    let lag_gauge = exposition
        .lines()
        .find_map(|line| line.strip_prefix("conduit_db_replica_lag_seconds "))
        .and_then(|v| v.parse::<f64>().ok())
        .expect("the lag gauge");
    assert!(lag_gauge >= 0.2, "{exposition}");
    fixture.on_replica("SELECT pg_wal_replay_resume()").await;
    wait_for("the replica back", async || server.replica.status() == ReplicaStatus::Ready).await;
    let (_, body) = server.get("/api/profiles/jake", Some(&jake)).await;
    assert_eq!(body["profile"]["bio"].as_str(), Some("written elsewhere"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_succeed_while_the_replica_is_stopped_and_return_to_it_when_it_is_back() {
    let fixture = Fixture::new().await;
    let server = Arc::new(fixture.server(Duration::from_secs(5)).await);
    let jake = server.register("jake").await;
    let slug = server.create_article(&jake, "Read me").await;
    wait_for("the article on the replica", async || server.titles(None).await.len() == 1).await;

    // Readers, anonymous and not, before, during and after the stop.
    let stop = Arc::new(tokio::sync::Notify::new());
    let readers: Vec<_> = (0..4)
        .map(|n| {
            let (server, stop, token, slug) = (server.clone(), stop.clone(), jake.clone(), slug.clone());
            tokio::spawn(async move {
                let stopped = stop.notified();
                tokio::pin!(stopped);
                let (mut ok, mut failed) = (0, Vec::new());
                loop {
                    let token = (n % 2 == 0).then_some(token.as_str());
                    let (status, body) = server.get(&format!("/api/articles/{slug}"), token).await;
                    if status == StatusCode::OK {
                        ok += 1;
                    } else {
                        failed.push((status, body));
                    }
                    tokio::select! {
                        () = &mut stopped => return (ok, failed),
                        () = tokio::task::yield_now() => {}
                    }
                }
            })
        })
        .collect();
    wait_for("reads on the replica", async || server.replica.reads_served() > 20).await;
    fixture.pair.control("replica", "stop");
    wait_for("the replica seen down", async || server.replica.status() == ReplicaStatus::Down).await;
    let down_since = server.replica.reads_served();
    let (status, _) = server.get("/api/articles", None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = server.get("/health/ready", None).await;
    assert_eq!(status, StatusCode::OK, "readiness does not depend on the replica: {body}");
    fixture.pair.control("replica", "start");
    wait_for("the replica back", async || server.replica.status() == ReplicaStatus::Ready).await;
    wait_for("reads on the replica again", async || server.replica.reads_served() > down_since + 20).await;
    stop.notify_waiters();
    let (mut ok, mut failed) = (0, Vec::new());
    for reader in readers {
        let (n, f) = reader.await.expect("reader");
        ok += n;
        failed.extend(f);
    }
    assert!(
        failed.is_empty(),
        "{} of {} reads failed: {:?}",
        failed.len(),
        ok + failed.len(),
        &failed[..failed.len().min(3)]
    );
    eprintln!("{ok} reads while the replica stopped and started, none failed");
}
