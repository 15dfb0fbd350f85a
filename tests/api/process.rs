//! The `conduit` binary as a user runs it: configuration errors, and the
//! zero-configuration mode with its own PostgreSQL, across a restart.

use crate::support::free_addr;
use std::{
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::json;

use crate::{server::http, support::PASSWORD};

const BIN: &str = env!("CARGO_BIN_EXE_conduit");

/// The binary with a clean environment: only PATH and the given variables, with
/// no drain period on SIGTERM and no rate limits unless they set them (the loads
/// here come from one address; tests/api/rate_limit.rs tests the limits).
fn conduit(vars: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("SHUTDOWN_DRAIN_SECONDS", "0")
        .env("RATE_LIMIT", "off")
        .envs(vars.iter().copied());
    cmd.current_dir(std::env::temp_dir()).stdin(Stdio::null());
    cmd
}

#[test]
fn a_bad_setting_stops_start_up_with_one_line_naming_the_variable() {
    for (vars, var) in [
        (vec![("BIND_ADDR", "localhost")], "BIND_ADDR"),
        (vec![("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none")], "JWT_SECRET"),
        (vec![("DATABASE_URL", "postgres://x@127.0.0.1:1/x"), ("JWT_SECRET", "too short")], "JWT_SECRET"),
        (vec![("RUST_LOG", "conduit=shouting")], "RUST_LOG"),
        (vec![("DATABASE_READ_URL", "mysql://replica/db")], "DATABASE_READ_URL"),
        (vec![("MAX_REPLICA_LAG_MS", "soon")], "MAX_REPLICA_LAG_MS"),
        (vec![("MIGRATE_ON_START", "no")], "MIGRATE_ON_START"),
    ] {
        let output = conduit(&vars).output().expect("run conduit");
        assert_eq!(output.status.code(), Some(2), "{vars:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        assert!(stderr.contains(var), "{stderr}");
    }
}

async fn wait_ready(child: &mut Child, addr: std::net::SocketAddr) {
    let started = Instant::now();
    loop {
        assert!(child.try_wait().expect("poll child").is_none(), "conduit exited during start-up");
        if tokio::net::TcpStream::connect(addr).await.is_ok() && http(addr, "GET", "/health/ready", "").await.0 == 200 {
            return;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "not ready after 60 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn terminate(mut child: Child) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id().try_into().expect("pid")), nix::sys::signal::SIGTERM)
        .expect("send SIGTERM");
    let started = Instant::now();
    while child.try_wait().expect("poll child").is_none() {
        assert!(started.elapsed() < Duration::from_secs(30), "conduit did not stop after SIGTERM");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(child.wait().expect("status").success(), "clean exit after SIGTERM");
}

/// The server in embedded mode with its data under `dir`, on a free port, with
/// `SHUTDOWN_DRAIN_SECONDS=drain`, once it is ready; its address.
async fn start_embedded(dir: &Path, drain: &str, stdout: Stdio) -> (Child, std::net::SocketAddr) {
    let data_dir = dir.join("data");
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], free_addr().port()).into();
    let bind = addr.to_string();
    let vars = [
        ("CONDUIT_DATA_DIR", data_dir.to_str().expect("utf-8 path")),
        ("BIND_ADDR", bind.as_str()),
        ("SHUTDOWN_DRAIN_SECONDS", drain),
    ];
    let mut child = conduit(&vars).stdout(stdout).stderr(Stdio::null()).spawn().expect("start conduit");
    wait_ready(&mut child, addr).await;
    (child, addr)
}

/// A temporary directory for an embedded cluster, reachable by the `postgres`
/// user the cluster runs as under root; `None` (the test skips) without binaries.
fn embedded_temp_dir() -> Option<tempfile::TempDir> {
    if conduit::embedded_pg::find_bin_dir().is_none() {
        eprintln!("skipped: no PostgreSQL server binaries on this machine");
        return None;
    }
    let dir = tempfile::Builder::new().prefix("conduit-embedded-").tempdir().expect("temp dir");
    std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
    Some(dir)
}

fn cluster_running(data_dir: &Path) -> bool {
    data_dir.join("pgdata/postmaster.pid").exists()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_database_url_the_server_runs_its_own_postgres_and_keeps_data_and_tokens_across_restarts() {
    let Some(dir) = embedded_temp_dir() else { return };
    let data_dir = dir.path().join("data");
    let port = free_addr().port();
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let vars =
        [("CONDUIT_DATA_DIR", data_dir.to_str().expect("utf-8 path")), ("BIND_ADDR", &format!("127.0.0.1:{port}"))];
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, *v)).collect();

    let mut first = conduit(&vars).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("start conduit");
    wait_ready(&mut first, addr).await;
    let register = json!({"user": {"username": "jake", "email": "jake@example.com", "password": PASSWORD}});
    let (status, body) = http(addr, "POST", "/api/users", &register.to_string()).await;
    assert_eq!(status, 201, "{body}");
    let token = serde_json::from_str::<serde_json::Value>(&body).expect("json")["user"]["token"]
        .as_str()
        .expect("token")
        .to_owned();
    assert!(cluster_running(&data_dir));
    terminate(first);
    assert!(!cluster_running(&data_dir), "the embedded PostgreSQL is stopped with the server");

    let mut second = conduit(&vars).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("restart conduit");
    wait_ready(&mut second, addr).await;
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request =
        format!("GET /api/user HTTP/1.1\r\nHost: x\r\nAuthorization: Token {token}\r\nConnection: close\r\n\r\n");
    tokio::io::AsyncWriteExt::write_all(&mut stream, request.as_bytes()).await.expect("write");
    let mut response = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut stream, &mut response).await.expect("read");
    assert!(response.starts_with("HTTP/1.1 200"), "the old token still works: {response}");
    assert!(response.contains("\"username\":\"jake\""), "the user survived the restart: {response}");
    terminate(second);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_server_on_the_same_data_directory_refuses_to_start() {
    let Some(dir) = embedded_temp_dir() else { return };
    let data_dir = dir.path().join("data");
    let data = data_dir.to_str().expect("utf-8 path");
    let port = free_addr().port();
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let bind = format!("127.0.0.1:{port}");
    let mut first = conduit(&[("CONDUIT_DATA_DIR", data), ("BIND_ADDR", &bind)])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start conduit");
    wait_ready(&mut first, addr).await;

    let second_bind = format!("127.0.0.1:{}", free_addr().port());
    let second = conduit(&[("CONDUIT_DATA_DIR", data), ("BIND_ADDR", &second_bind)]).output().expect("run second");
    assert!(!second.status.success());
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(stderr.contains("another Conduit server is using"), "{stderr}");
    assert_eq!(http(addr, "GET", "/health/ready", "").await.0, 200, "the first server is unharmed");
    terminate(first);
}

#[test]
fn a_data_directory_the_postgres_user_cannot_reach_is_a_clear_error() {
    if !nix::unistd::geteuid().is_root() || conduit::embedded_pg::find_bin_dir().is_none() {
        eprintln!("skipped: only root runs the cluster as another user");
        return;
    }
    let dir = tempfile::Builder::new().prefix("conduit-private-").tempdir().expect("temp dir");
    std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o700)).expect("chmod");
    let data_dir = dir.path().join("data");
    let bind = format!("127.0.0.1:{}", free_addr().port());
    let output = conduit(&[("CONDUIT_DATA_DIR", data_dir.to_str().expect("utf-8")), ("BIND_ADDR", &bind)])
        .output()
        .expect("run conduit");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cannot reach") && stderr.contains("CONDUIT_DATA_DIR"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeding_at_scale_s_fills_every_table_and_the_api_serves_it() {
    use tower::ServiceExt as _;

    let Some(dir) = embedded_temp_dir() else { return };
    let data_dir = dir.path().join("data");
    let vars = [("CONDUIT_DATA_DIR", data_dir.to_str().expect("utf-8 path"))];

    let output = conduit(&vars).args(["seed", "--scale", "s"]).output().expect("run conduit seed");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("articles: 10000 rows in"), "{stdout}");
    assert!(!cluster_running(&data_dir), "the embedded PostgreSQL is stopped after seeding");
    let again = conduit(&vars).args(["seed", "--scale", "s"]).output().expect("run conduit seed again");
    assert!(!again.status.success(), "a seeded database is refused");

    let pg = conduit::embedded_pg::EmbeddedPostgres::start(&data_dir).await.expect("start the seeded cluster");
    let (db, reads) =
        conduit::db::open(pg.connect_options(), 2, Duration::from_secs(30)).await.expect("open the seeded database");
    for (table, expected) in
        [("users", 1_000), ("articles", 10_000), ("favorites", 50_000), ("follows", 20_000), ("comments", 20_000)]
    {
        let count: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
            .fetch_one(&db)
            .await
            .expect("count");
        assert_eq!(count, expected, "{table}");
    }
    let tags: i64 = sqlx::query_scalar("SELECT count(*) FROM tags").fetch_one(&db).await.expect("count tags");
    assert!((1..=50).contains(&tags), "{tags} tags");
    // The seed writes each article's tag list itself; it must match its rows.
    let (mismatched, tagged): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE a.tag_list <> ARRAY(
                    SELECT t.name FROM article_tags at JOIN tags t ON t.id = at.tag_id
                    WHERE at.article_id = a.id ORDER BY t.name)),
                count(*) FILTER (WHERE cardinality(a.tag_list) > 0)
         FROM articles a",
    )
    .fetch_one(&db)
    .await
    .expect("compare tag lists");
    assert_eq!(mismatched, 0);
    assert!(tagged > 5_000, "{tagged} articles with tags");
    // The counters' triggers rewrote these rows while copying; the seed compacts
    // them: the rows fill the table's pages (a third to a half before compacting).
    for table in ["users", "articles"] {
        let density: f64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT sum(pg_column_size(t.*))::float8 / pg_relation_size('{table}') FROM {table} t"
        )))
        .fetch_one(&db)
        .await
        .expect("measure the table");
        assert!(density > 0.8, "{table}: rows fill {density:.2} of its pages");
    }

    let jwt = std::sync::Arc::new(conduit::auth::JwtKeys::new(
        &secrecy::SecretString::from(crate::support::JWT_SECRET),
        Duration::from_secs(3600),
    ));
    let revocations = conduit::auth::Revocations::follow(&pg.connect_options(), Duration::from_secs(3600))
        .await
        .expect("follow revocations");
    let state = conduit::app::AppState {
        writes: db.clone(),
        reads,
        jwt,
        revocations,
        hasher: conduit::auth::PasswordHasher::new(2).expect("hasher"),
        common_passwords: Default::default(),
        readiness: Default::default(),
        oidc: Default::default(),
        session_policy: Default::default(),
    };
    let options = conduit::app::HttpOptions { request_timeout: Duration::from_secs(30), ..Default::default() };
    let router = conduit::app::router(state, &options);
    let login = json!({"user": {"email": "user17@example.com", "password": conduit::seed::PASSWORD}});
    let request = axum::http::Request::post("/api/users/login")
        .header("content-type", "application/json")
        .body(axum::body::Body::from(login.to_string()))
        .expect("request");
    let response = router.clone().oneshot(request).await.expect("infallible");
    assert_eq!(response.status(), 200, "a seeded user logs in");
    let newest = axum::http::Request::get("/api/articles?limit=1").body(axum::body::Body::empty()).expect("request");
    let response = router.oneshot(newest).await.expect("infallible");
    let body = http_body_util::BodyExt::collect(response.into_body()).await.expect("body").to_bytes();
    let body: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(body["articlesCount"], 10_000);
    assert_eq!(body["articles"][0]["slug"], "article-10000", "newest first");

    // New rows get ids after the seeded ones.
    let created: i64 = sqlx::query_scalar("INSERT INTO tags (name) VALUES ('brand-new') RETURNING id")
        .fetch_one(&db)
        .await
        .expect("insert after seeding");
    assert_eq!(created, 51);
    db.close().await;
    pg.stop().await.expect("stop the cluster");
}

/// What a client saw of one request during a stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// No connection: the server no longer accepts.
    Refused,
    /// Connected, but no whole response came back.
    Failed,
    Answered(u16),
}

/// One request on a new connection, told apart as [`Outcome`]s.
async fn attempt(addr: std::net::SocketAddr, method: &str, path: &str, body: &str) -> Outcome {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await else { return Outcome::Refused };
    let request = crate::server::request(method, path, body, addr);
    let exchange = async {
        stream.write_all(request.as_bytes()).await.map_err(|e| ("write", e))?;
        let mut response = String::new();
        stream.read_to_string(&mut response).await.map_err(|e| ("read", e))?;
        Ok::<_, (&str, std::io::Error)>(response)
    };
    match tokio::time::timeout(Duration::from_secs(60), exchange).await {
        Ok(Ok(response)) => match response.split(' ').nth(1).and_then(|s| s.parse().ok()) {
            Some(status) if response.contains("\r\n\r\n") => Outcome::Answered(status),
            _ => {
                eprintln!("failed: {} bytes {:?} from {:?}", response.len(), response, stream.local_addr());
                Outcome::Failed
            }
        },
        Ok(Err((step, err))) => {
            eprintln!("failed: {step} {err} from {:?}", stream.local_addr());
            Outcome::Failed
        }
        Err(_) => Outcome::Failed,
    }
}

fn pid_of(child: &Child) -> nix::unistd::Pid {
    nix::unistd::Pid::from_raw(child.id().try_into().expect("pid"))
}

/// Waits, up to `within`, for `child` to exit; how long that took, and whether it exited cleanly.
async fn exit_of(child: &mut Child, within: Duration) -> (Duration, bool) {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("poll child") {
            return (started.elapsed(), status.success());
        }
        assert!(started.elapsed() < within, "conduit still running {within:?} after SIGTERM");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_under_load_turns_readiness_off_at_once_drains_then_finishes_every_accepted_request() {
    let Some(dir) = embedded_temp_dir() else { return };
    let drain = Duration::from_secs(2);
    let (mut child, addr) = start_embedded(dir.path(), "2", Stdio::null()).await;
    let register = json!({"user": {"username": "jake", "email": "jake@example.com", "password": PASSWORD}});
    assert_eq!(http(addr, "POST", "/api/users", &register.to_string()).await.0, 201);

    // Six clients, one request after another until the server refuses them: four
    // read, two log in (a full Argon2 verification each).
    let login = json!({"user": {"email": "jake@example.com", "password": PASSWORD}}).to_string();
    let mut clients = tokio::task::JoinSet::new();
    for client in 0..6 {
        let login = login.clone();
        clients.spawn(async move {
            let mut seen = Vec::new();
            loop {
                let started = Instant::now();
                let outcome = match client {
                    0 | 1 => attempt(addr, "POST", "/api/users/login", &login).await,
                    2 | 3 => attempt(addr, "GET", "/api/articles?limit=5", "").await,
                    _ => attempt(addr, "GET", "/api/tags", "").await,
                };
                seen.push((started, outcome));
                if outcome == Outcome::Refused {
                    return seen;
                }
            }
        });
    }
    // A steady load first.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let signalled = Instant::now();
    nix::sys::signal::kill(pid_of(&child), nix::sys::signal::SIGTERM).expect("send SIGTERM");
    let unready_after = loop {
        match attempt(addr, "GET", "/health/ready", "").await {
            Outcome::Answered(503) => break signalled.elapsed(),
            Outcome::Answered(200) => {}
            other => panic!("readiness answered {other:?} during the drain"),
        }
        assert!(signalled.elapsed() < Duration::from_secs(1), "still ready 1 s after SIGTERM");
    };
    let (exited_after, clean) = exit_of(&mut child, drain + Duration::from_secs(30)).await;
    assert!(clean, "a clean exit after SIGTERM");

    let mut outcomes = Vec::new();
    while let Some(seen) = clients.join_next().await {
        outcomes.extend(seen.expect("client"));
    }
    let answered = outcomes.iter().filter(|(_, o)| matches!(o, Outcome::Answered(_))).count();
    let failed = outcomes.iter().filter(|(_, o)| *o == Outcome::Failed).count();
    let refused = outcomes.iter().filter(|(_, o)| *o == Outcome::Refused).count();
    let not_ok: Vec<_> =
        outcomes.iter().filter(|(_, o)| matches!(o, Outcome::Answered(status) if *status != 200)).collect();
    let in_drain = outcomes
        .iter()
        .filter(|(started, o)| {
            *started >= signalled + Duration::from_millis(500) && matches!(o, Outcome::Answered(200))
        })
        .count();
    let last_answered = outcomes
        .iter()
        .filter(|(_, o)| matches!(o, Outcome::Answered(_)))
        .map(|(started, _)| started.saturating_duration_since(signalled))
        .max()
        .unwrap_or_default();
    eprintln!(
        "stop under load (drain {drain:?}): {answered} requests answered, {failed} failed, {refused} refused \
         (one per client, after the listener closed); {in_drain} answered 200 after readiness turned off; \
         last request answered was sent {last_answered:?} after SIGTERM; /health/ready 503 {unready_after:?} \
         after SIGTERM; exit {exited_after:?} after it"
    );
    let failures: Vec<_> = outcomes
        .iter()
        .filter(|(_, o)| *o == Outcome::Failed)
        .map(|(started, _)| started.saturating_duration_since(signalled))
        .collect();
    assert_eq!(
        failed, 0,
        "every request the server accepted was answered; failed ones sent at {failures:?} after SIGTERM"
    );
    assert!(not_ok.is_empty(), "{not_ok:?}");
    assert!(in_drain > 0, "the server kept serving during the drain");
    assert!(last_answered >= drain - Duration::from_millis(500), "served until the drain's end: {last_answered:?}");
    assert!(exited_after >= drain, "exited before the drain's end: {exited_after:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_requests_and_idle_connections_do_not_hold_a_stop() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let Some(dir) = embedded_temp_dir() else { return };
    let (mut child, addr) = start_embedded(dir.path(), "1", Stdio::null()).await;

    let mut held = Vec::new();
    for _ in 0..50 {
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        stream.write_all(b"GET /api/tags HTTP/1.1\r\nHost: slow\r\n").await.expect("write");
        held.push(stream);
    }
    // Idle keep-alive connections, after a whole request each.
    for _ in 0..10 {
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        stream.write_all(b"GET /api/tags HTTP/1.1\r\nHost: idle\r\n\r\n").await.expect("write");
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).await.expect("a response");
        assert_eq!(&head, b"HTTP/1.1 200");
        held.push(stream);
    }

    // Logins whose head came whole and whose body, announced as 1,000 bytes, stops after 10.
    for _ in 0..20 {
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let head = "POST /api/users/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n";
        stream.write_all(format!("{head}{{\"user\": {{").as_bytes()).await.expect("write");
        held.push(stream);
    }
    crate::server::wait_until_read(addr.port()).await;

    nix::sys::signal::kill(pid_of(&child), nix::sys::signal::SIGTERM).expect("send SIGTERM");
    // The drain, the moment a connection is given to finish a request in its
    // buffer, stopping the cluster, and a margin for a busy machine.
    let (exited_after, clean) = exit_of(&mut child, Duration::from_secs(1) + Duration::from_secs(4)).await;
    assert!(clean, "a clean exit after SIGTERM");
    eprintln!(
        "50 half-sent heads, 20 half-sent login bodies and 10 idle connections open: exit {exited_after:?} after \
         SIGTERM (drain 1 s)"
    );
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sigterm_cuts_the_drain_short() {
    let Some(dir) = embedded_temp_dir() else { return };
    let (mut child, addr) = start_embedded(dir.path(), "60", Stdio::piped()).await;

    nix::sys::signal::kill(pid_of(&child), nix::sys::signal::SIGTERM).expect("send SIGTERM");
    // The first signal is taken (readiness off) before the second is sent.
    let started = Instant::now();
    while http(addr, "GET", "/health/ready", "").await.0 != 503 {
        assert!(started.elapsed() < Duration::from_secs(10), "still ready 10 s after SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    nix::sys::signal::kill(pid_of(&child), nix::sys::signal::SIGTERM).expect("send SIGTERM again");
    // Closing the pools, stopping the cluster, and a margin: not the 60 s drain.
    let (exited_after, clean) = exit_of(&mut child, Duration::from_secs(10)).await;
    assert!(clean, "a clean exit after the second SIGTERM");
    let mut log = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().expect("stdout"), &mut log).expect("read the log");
    assert!(log.contains("second stop signal"), "{log}");
    eprintln!("drain 60 s: exit {exited_after:?} after a second SIGTERM, {:?} after the first", started.elapsed());
}
