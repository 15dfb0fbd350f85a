//! Prometheus metrics: served on their own listener and not on the API's port,
//! labelled by route template (a scan of random paths adds no series), and the
//! password hashes' queue shed when full, with the shedding counted.
//!
//! The recorder is process-wide and the tests of this binary run in parallel:
//! each test installs it (once for all), builds its router after that, and
//! asserts on series it alone creates or on how a value grew.

use crate::support::free_addr;
use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{
    body::Body,
    http::{Method, Request, StatusCode, header},
};
use conduit::{
    app::{self, AppState, HttpOptions},
    auth::{JwtKeys, PasswordHasher},
    telemetry::metrics::{self, Exporter, Pools},
};
use secrecy::SecretString;
use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tower::ServiceExt as _;

use crate::support::{JWT_SECRET, PASSWORD, TOKEN_LIFETIME, TestApp};

/// The recorder, installed before the test's router is built.
fn recorder() -> metrics_exporter_prometheus::PrometheusHandle {
    metrics::install().expect("the recorder installs")
}

/// `GET path` on `addr` over a plain socket: the status and the response (head and body).
async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    let (head, body) = response.split_once("\r\n\r\n").expect("a head and a body");
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("a status line");
    (status, head.to_owned(), body.to_owned())
}

/// The value of the series `name` whose labels include all of `labels`, if the
/// exposition has one.
fn value(exposition: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    exposition.lines().find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let (series_name, rest) = series.split_once('{').unwrap_or((series, ""));
        let matches = series_name == name && labels.iter().all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")));
        matches.then(|| value.parse().ok()).flatten()
    })
}

fn login(email: &str, password: &str) -> Request<Body> {
    Request::builder()
        .method(Method::POST)
        .uri("/api/users/login")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(json!({"user": {"email": email, "password": password}}).to_string()))
        .expect("request")
}

#[tokio::test]
async fn the_api_port_does_not_serve_metrics() {
    recorder();
    let app = TestApp::new().await;
    let response = app.get("/metrics", None).await;
    response.assert_error(StatusCode::NOT_FOUND, "route");
}

#[tokio::test]
async fn the_metrics_listener_serves_every_series_in_the_prometheus_text_format() {
    let handle = recorder();
    let app = TestApp::new().await;
    let token = app.register("metrics-jake").await;
    assert_eq!(app.get("/api/tags", None).await.status, StatusCode::OK);
    assert_eq!(app.get("/api/articles/no-such-article", Some(&token)).await.status, StatusCode::NOT_FOUND);
    // A unique violation: PostgreSQL refuses the insert with SQLSTATE 23505.
    let again = json!({"user": {"username": "metrics-jake", "email": "other@example.com", "password": PASSWORD}});
    assert_eq!(app.post("/api/users", None, again).await.status, StatusCode::CONFLICT);

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let pools = Pools { writes: app.db.clone(), reads: app.reads.clone() };
    let exporter = Exporter::serve(listener, handle, pools, &Default::default()).expect("serve");
    let (status, head, body) = get(exporter.local_addr(), "/metrics").await;
    assert_eq!(status, 200, "{head}");
    assert!(head.to_ascii_lowercase().contains("content-type: text/plain; version=0.0.4"), "{head}");

    let tags = [("method", "GET"), ("route", "/api/tags"), ("status", "2xx")];
    assert!(value(&body, "conduit_http_requests_total", &tags).is_some_and(|n| n >= 1.0), "{body}");
    let article = [("method", "GET"), ("route", "/api/articles/{slug}"), ("status", "4xx")];
    assert!(value(&body, "conduit_http_requests_total", &article).is_some(), "{body}");
    let bucket = [tags.as_slice(), &[("le", "0.001")]].concat();
    assert!(value(&body, "conduit_http_request_duration_seconds_bucket", &bucket).is_some(), "{body}");
    assert!(value(&body, "conduit_http_request_duration_seconds_count", &tags).is_some(), "{body}");
    assert!(value(&body, "conduit_http_requests_in_flight", &[]).is_some(), "{body}");
    for pool in ["writes", "reads"] {
        for name in
            ["conduit_db_pool_connections", "conduit_db_pool_idle_connections", "conduit_db_pool_max_connections"]
        {
            assert!(value(&body, name, &[("pool", pool)]).is_some(), "{name} {pool}: {body}");
        }
    }
    assert_eq!(value(&body, "conduit_db_pool_max_connections", &[("pool", "reads")]), Some(5.0));
    assert!(value(&body, "conduit_db_pool_waiting", &[("pool", "reads")]).is_some(), "{body}");
    assert!(value(&body, "conduit_db_statement_errors_total", &[("sqlstate_class", "23")]).is_some(), "{body}");
    assert!(value(&body, "conduit_password_hash_duration_seconds_count", &[]).is_some(), "{body}");
    let build = [("version", env!("CARGO_PKG_VERSION"))];
    assert_eq!(value(&body, "conduit_build_info", &build), Some(1.0), "{body}");
    assert!(body.contains("# TYPE conduit_http_request_duration_seconds histogram"), "{body}");

    assert_eq!(get(exporter.local_addr(), "/api/tags").await.0, 404, "the metrics listener serves metrics only");
    let addr = exporter.local_addr();
    drop(exporter);
    let refused = async {
        while tokio::net::TcpStream::connect(addr).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), refused).await.expect("a dropped exporter stops listening");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_listener_closes_half_sent_requests_and_holds_at_most_16_connections() {
    let handle = recorder();
    let app = TestApp::new().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let pools = Pools { writes: app.db.clone(), reads: app.reads.clone() };
    let header_read_timeout = Duration::from_secs(1);
    let server = conduit::edge::server::Settings { header_read_timeout, ..Default::default() };
    let exporter = Exporter::serve(listener, handle, pools, &server).expect("serve");
    let addr = exporter.local_addr();

    let mut held = Vec::new();
    for _ in 0..metrics::MAX_SCRAPERS {
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: slow\r\n").await.expect("write");
        held.push(stream);
    }
    // Past the cap, a scrape waits in the listen backlog...
    let opened = Instant::now();
    let scrape = tokio::spawn(get(addr, "/metrics"));
    tokio::time::sleep(header_read_timeout / 2).await;
    assert!(!scrape.is_finished(), "a 17th connection was served while 16 were held");
    // ...until the half-sent requests are closed at the header-read timeout.
    let (status, head, _) = tokio::time::timeout(Duration::from_secs(5), scrape)
        .await
        .expect("served once the held connections closed")
        .expect("scrape task");
    assert_eq!(status, 200, "{head}");
    let waited = opened.elapsed();
    assert!(waited >= header_read_timeout - Duration::from_millis(200), "{waited:?}");
    for mut stream in held {
        let mut buf = [0u8; 64];
        let read = tokio::time::timeout(Duration::from_secs(1), stream.read(&mut buf)).await;
        assert!(matches!(read, Ok(Ok(0) | Err(_))), "a half-sent request still open: {read:?}");
    }
    eprintln!("metrics: 16 half-sent connections held; a 17th scrape was answered {waited:?} after it connected");
}

#[tokio::test]
async fn a_thousand_requests_to_random_unknown_paths_add_no_series() {
    let handle = recorder();
    let app = TestApp::new().await;
    let unmatched = [("method", "GET"), ("route", "<unmatched>"), ("status", "4xx")];
    let series_of = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|line| line.contains("route=\"<unmatched>\"") && line.contains("method=\"GET\""))
            .map(|line| line.rsplit_once(' ').map_or(line, |(series, _)| series).to_owned())
            .collect()
    };
    assert_eq!(app.get("/warm-up/unknown", None).await.status, StatusCode::NOT_FOUND);
    let before = handle.render();
    let counted_before = value(&before, "conduit_http_requests_total", &unmatched).expect("the unmatched series");

    let mut paths = Vec::new();
    for _ in 0..1000 {
        let path =
            format!("/scan-{:016x}/{:08x}", getrandom::u64().expect("random"), getrandom::u32().expect("random"));
        assert_eq!(app.get(&path, None).await.status, StatusCode::NOT_FOUND, "{path}");
        paths.push(path);
    }

    let after = handle.render();
    assert_eq!(series_of(&before), series_of(&after), "the unknown paths made new series");
    let counted_after = value(&after, "conduit_http_requests_total", &unmatched).expect("the unmatched series");
    assert!(counted_after - counted_before >= 1000.0, "{counted_before} then {counted_after}");
    let leaked: Vec<_> = paths.iter().filter(|path| after.contains(path.as_str())).collect();
    assert!(leaked.is_empty(), "raw paths in the labels: {leaked:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_correct_login_is_answered_quickly_while_a_flood_of_bad_logins_is_shed() {
    const QUEUE: usize = 4;
    const FLOOD: usize = 48;
    let handle = recorder();
    let app = TestApp::new().await;
    app.register("flooded").await;
    let email = "flooded@example.com";
    // One hash at a time and a short queue, so that the flood fills it at once.
    let hasher = PasswordHasher::with_queue(1, QUEUE).expect("hasher");
    let state = AppState {
        writes: app.db.clone(),
        reads: app.reads.clone(),
        jwt: Arc::new(JwtKeys::new(&SecretString::from(JWT_SECRET), TOKEN_LIFETIME)),
        revocations: app.revocations.clone(),
        hasher: hasher.clone(),
        common_passwords: Default::default(),
        readiness: Default::default(),
        oidc: Default::default(),
        session_policy: Default::default(),
    };
    let options = HttpOptions { request_timeout: Duration::from_secs(120), ..HttpOptions::default() };
    let router = app::router(state, &options);

    // What one login costs here, alone (a debug build hashes slowly).
    let started = Instant::now();
    let alone = router.clone().oneshot(login(email, PASSWORD)).await.expect("infallible");
    assert_eq!(alone.status(), StatusCode::OK);
    let one_login = started.elapsed();

    let shed = |text: &str| value(text, "conduit_password_hashes_shed_total", &[]).unwrap_or(0.0);
    let shed_before = shed(&handle.render());
    let mut flood = tokio::task::JoinSet::new();
    for _ in 0..FLOOD {
        let router = router.clone();
        flood.spawn(async move { router.oneshot(login(email, "a wrong password")).await.expect("infallible") });
    }
    let full = async {
        while hasher.queued() < QUEUE {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(60), full).await.expect("the flood fills the queue");

    let started = Instant::now();
    let answer = router.clone().oneshot(login(email, PASSWORD)).await.expect("infallible");
    let waited = started.elapsed();
    // Behind a full queue of QUEUE, or shed at once; without a bound, behind the whole flood.
    let bound = one_login * (QUEUE as u32 + 4) + Duration::from_millis(500);
    assert!(waited < bound, "a correct login waited {waited:?} (one login alone: {one_login:?}; bound {bound:?})");
    match answer.status() {
        StatusCode::OK => {}
        StatusCode::SERVICE_UNAVAILABLE => {
            assert_eq!(answer.headers().get(header::RETRY_AFTER).map(|v| v.as_bytes()), Some(&b"1"[..]));
        }
        other => panic!("a correct login was answered {other}"),
    }

    let mut answered_503 = 0.0;
    while let Some(response) = flood.join_next().await {
        let response = response.expect("joins");
        match response.status() {
            StatusCode::UNAUTHORIZED => {}
            StatusCode::SERVICE_UNAVAILABLE => {
                assert!(response.headers().contains_key(header::RETRY_AFTER));
                answered_503 += 1.0;
            }
            other => panic!("a bad login was answered {other}"),
        }
    }
    assert!(answered_503 >= 1.0, "nothing was shed");
    eprintln!(
        "a correct login answered {} in {waited:?} (one login alone: {one_login:?}); {answered_503} of {FLOOD} bad logins shed",
        answer.status()
    );
    let shed_after = shed(&handle.render());
    assert!(shed_after - shed_before >= answered_503, "{answered_503} shed, counted {shed_before} then {shed_after}");
}

/// The binary, as an operator runs it, on this test's database.
fn conduit(app: &TestApp, vars: &[(&str, &str)]) -> std::process::Command {
    let options = &app.options;
    let host = options.get_host();
    let url = if host.starts_with('/') {
        format!("postgres://{}@/{}?host={host}&port={}", options.get_username(), app_database(app), options.get_port())
    } else {
        format!("postgres://{}@{host}:{}/{}", options.get_username(), options.get_port(), app_database(app))
    };
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_conduit"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", url)
        .env("JWT_SECRET", JWT_SECRET)
        .envs(vars.iter().copied())
        .current_dir(std::env::temp_dir())
        .stdin(std::process::Stdio::null());
    cmd
}

fn app_database(app: &TestApp) -> String {
    app.options.get_database().expect("the test's database").to_owned()
}

/// Polls `condition` every 100 ms until it holds, for at most `within`.
async fn wait_for(within: Duration, what: &str, mut condition: impl AsyncFnMut() -> bool) {
    let started = Instant::now();
    while !condition().await {
        assert!(started.elapsed() < within, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_serves_metrics_on_metrics_addr_only_and_stops_them_with_itself() {
    use crate::server::http;
    let app = TestApp::new().await;
    let (api, metrics) = (free_addr(), free_addr());
    let (api_var, metrics_var) = (api.to_string(), metrics.to_string());
    let mut server = conduit(&app, &[("BIND_ADDR", &api_var), ("METRICS_ADDR", &metrics_var)])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start conduit");
    wait_for(Duration::from_secs(60), "ready", async || {
        assert!(server.try_wait().expect("poll").is_none(), "conduit exited during start-up");
        tokio::net::TcpStream::connect(api).await.is_ok() && http(api, "GET", "/health/ready", "").await.0 == 200
    })
    .await;

    assert_eq!(http(api, "GET", "/api/tags", "").await.0, 200);
    let (status, body) = http(metrics, "GET", "/metrics", "").await;
    assert_eq!(status, 200);
    assert!(body.contains("conduit_build_info{"), "{body}");
    assert!(body.contains(r#"route="/api/tags""#), "{body}");
    assert_eq!(http(api, "GET", "/metrics", "").await.0, 404, "the API port does not serve metrics");

    nix::sys::signal::kill(nix::unistd::Pid::from_raw(server.id().try_into().expect("pid")), nix::sys::signal::SIGTERM)
        .expect("SIGTERM");
    wait_for(Duration::from_secs(30), "exit after SIGTERM", async || server.try_wait().expect("poll").is_some()).await;
    assert!(tokio::net::TcpStream::connect(metrics).await.is_err(), "the metrics listener stopped with the server");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_metrics_addr_that_cannot_be_had_stops_start_up_naming_it() {
    let app = TestApp::new().await;
    let bad = conduit(&app, &[("METRICS_ADDR", "localhost:metrics")]).output().expect("run conduit");
    assert_eq!(bad.status.code(), Some(2), "{}", String::from_utf8_lossy(&bad.stderr));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("METRICS_ADDR"));

    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let (api, metrics) = (free_addr().to_string(), taken.local_addr().expect("addr").to_string());
    let refused = conduit(&app, &[("BIND_ADDR", &api), ("METRICS_ADDR", &metrics)]).output().expect("run conduit");
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("METRICS_ADDR") && stderr.contains(&metrics), "{stderr}");
}
