//! Behaviour under faults, over real sockets: PostgreSQL stopped, hung and
//! restarted under a steady load, and slow clients. Each test runs its own
//! PostgreSQL cluster (never the shared server), and the server in-process
//! ([`conduit::edge::server::serve_until`]); the stop of the real binary is in
//! `process.rs`. Every wait is for a condition, within a bound; the figures are
//! printed (`--nocapture`) for docs/operations/faults.md.

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use conduit::{
    app::{AppState, HttpOptions},
    auth::{JwtKeys, PasswordHasher, Revocations},
    edge::server::Settings,
    embedded_pg::EmbeddedPostgres,
};
use nix::{sys::signal::Signal, unistd::Pid};
use secrecy::SecretString;
use serde_json::{Value, json};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
};

use crate::support::{JWT_SECRET, PASSWORD, TOKEN_LIFETIME};

/// A PostgreSQL cluster of the test's own, stopped and removed when dropped.
struct Cluster {
    pg: Option<EmbeddedPostgres>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// `None` (the test skips) without PostgreSQL server binaries.
    async fn start() -> Option<Self> {
        if conduit::embedded_pg::find_bin_dir().is_none() {
            eprintln!("skipped: no PostgreSQL server binaries on this machine");
            return None;
        }
        let dir = tempfile::Builder::new().prefix("conduit-faults-").tempdir().expect("temp dir");
        // The cluster may run as the `postgres` user, which must reach the directory.
        std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
        let pg = EmbeddedPostgres::start(dir.path()).await.expect("start a PostgreSQL of the test's own");
        Some(Self { pg: Some(pg), _dir: dir })
    }

    fn pg(&self) -> &EmbeddedPostgres {
        self.pg.as_ref().expect("the cluster lives until dropped")
    }

    async fn pg_ctl(&self, args: &[&str]) {
        self.pg().control(args).await.unwrap_or_else(|err| panic!("pg_ctl {args:?}: {err:#}"));
    }

    /// The postmaster and every process it started.
    fn processes(&self) -> Vec<Pid> {
        let pid_file = self.pg().data_dir().join("postmaster.pid");
        let Some(postmaster) = std::fs::read_to_string(pid_file)
            .ok()
            .and_then(|text| text.lines().next().and_then(|line| line.trim().parse::<i32>().ok()))
        else {
            return Vec::new();
        };
        let mut pids = vec![Pid::from_raw(postmaster)];
        for entry in std::fs::read_dir("/proc").expect("read /proc").flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
            // `pid (comm) state ppid ...`: comm may hold spaces, so read after the last ')'.
            let ppid = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<i32>().ok());
            if ppid == Some(postmaster) {
                pids.push(Pid::from_raw(pid));
            }
        }
        pids
    }

    fn signal_all(&self, signal: Signal) {
        for pid in self.processes() {
            let _ = nix::sys::signal::kill(pid, signal);
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // A failed test must leave no hung or running cluster behind.
        self.signal_all(Signal::SIGCONT);
        if let Some(pg) = self.pg.take() {
            let _ = std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
                runtime.block_on(async move {
                    let _ = pg.control(&["stop", "-w", "-t", "30", "-m", "immediate"]).await;
                });
            })
            .join();
        }
    }
}

/// The application on `cluster`, served on a loopback port, with one user.
struct Served {
    addr: SocketAddr,
    token: String,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn serve(cluster: &Cluster, request_timeout: Duration, settings: Settings) -> Served {
    let options = cluster.pg().connect_options();
    let (writes, reads) = conduit::db::open(options.clone(), 5, request_timeout).await.expect("open the database");
    let revocations = Revocations::follow(&options, TOKEN_LIFETIME).await.expect("follow revocations");
    let state = AppState {
        writes,
        reads,
        jwt: Arc::new(JwtKeys::new(&SecretString::from(JWT_SECRET), TOKEN_LIFETIME)),
        revocations,
        hasher: PasswordHasher::new(2).expect("hasher"),
        common_passwords: Default::default(),
        readiness: Default::default(),
        oidc: Default::default(),
        session_policy: Default::default(),
    };
    let router = conduit::app::router(state, &HttpOptions { request_timeout, ..Default::default() });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let shutdown = async {
            let _ = stopped.await;
        };
        conduit::edge::server::serve_until(
            listener,
            router,
            shutdown,
            &Settings { grace: Duration::from_secs(5), ..settings },
        )
        .await
    });
    let register = json!({"user": {"username": "jake", "email": "jake@example.com", "password": PASSWORD}});
    let (status, body) = call(addr, "POST", "/api/users", &register.to_string(), None).await;
    assert_eq!(status, 201, "{body}");
    let token =
        serde_json::from_str::<Value>(&body).expect("json")["user"]["token"].as_str().expect("token").to_owned();
    Served { addr, token, _stop: stop }
}

/// One request on a new connection: the status (0 when the connection failed
/// or nothing came back within 20 s) and the body.
async fn call(addr: SocketAddr, method: &str, path: &str, body: &str, token: Option<&str>) -> (u16, String) {
    let auth = token.map(|t| format!("Authorization: Token {t}\r\n")).unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await?;
        stream.write_all(request.as_bytes()).await?;
        let mut response = String::new();
        stream.read_to_string(&mut response).await?;
        std::io::Result::Ok(response)
    };
    match tokio::time::timeout(Duration::from_secs(20), exchange).await {
        Ok(Ok(response)) => {
            let status = response.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
            let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
            (status, body)
        }
        _ => (0, String::new()),
    }
}

/// One request of the load, as the client saw it.
#[derive(Debug, Clone)]
struct Record {
    what: &'static str,
    started: Instant,
    took: Duration,
    status: u16,
    body: String,
}

/// Clients sending, each one request after another: reads of both kinds and a
/// write, until the load is dropped.
struct Load {
    records: Arc<Mutex<Vec<Record>>>,
    running: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(served: &Served, clients: usize) -> Self {
        let records = Arc::new(Mutex::new(Vec::new()));
        let running = Arc::new(AtomicBool::new(true));
        let tasks = (0..clients)
            .map(|client| {
                let (records, running, addr, token) =
                    (records.clone(), running.clone(), served.addr, served.token.clone());
                tokio::spawn(async move {
                    let mut n = client;
                    while running.load(Ordering::Relaxed) {
                        let (what, method, path, body, auth) = match n % 3 {
                            0 => ("tags", "GET", "/api/tags", String::new(), None),
                            1 => ("articles", "GET", "/api/articles?limit=5", String::new(), None),
                            _ => (
                                "update",
                                "PUT",
                                "/api/user",
                                json!({"user": {"bio": format!("bio {n}")}}).to_string(),
                                Some(token.as_str()),
                            ),
                        };
                        let started = Instant::now();
                        let (status, body) = call(addr, method, path, &body, auth).await;
                        let took = started.elapsed();
                        records.lock().expect("records").push(Record { what, started, took, status, body });
                        n += 1;
                    }
                })
            })
            .collect();
        Self { records, running, tasks }
    }

    fn records(&self) -> Vec<Record> {
        self.records.lock().expect("records").clone()
    }

    /// Waits, up to `within`, until `count` more requests have succeeded.
    async fn wait_for_successes(&self, count: usize, within: Duration) {
        let successes = |load: &Self| load.records().iter().filter(|r| r.status == 200).count();
        let target = successes(self) + count;
        let started = Instant::now();
        while successes(self) < target {
            assert!(started.elapsed() < within, "fewer than {count} successes in {within:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn stop(self) -> Vec<Record> {
        self.running.store(false, Ordering::Relaxed);
        for task in self.tasks {
            task.await.expect("load client");
        }
        self.records.lock().expect("records").clone()
    }
}

/// Asserts that every answer is a success or a 503 in the API's error format,
/// and no request failed or got a 500.
#[track_caller]
fn assert_only_successes_and_503s(records: &[Record]) {
    for record in records {
        match record.status {
            200 => {}
            503 => {
                let body: Value = serde_json::from_str(&record.body).unwrap_or(Value::Null);
                assert!(body["errors"]["server"][0].is_string(), "a 503 in the error format: {record:?}");
            }
            _ => panic!("only 200 and 503 are expected: {record:?}"),
        }
    }
}

/// Counts by status, for the report.
fn tally(records: &[Record]) -> String {
    let mut counts = std::collections::BTreeMap::<u16, usize>::new();
    for record in records {
        *counts.entry(record.status).or_default() += 1;
    }
    format!("{counts:?}")
}

/// Polls `/health/ready` until it answers `status`; how long that took.
async fn ready_becomes(addr: SocketAddr, status: u16, within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        if call(addr, "GET", "/health/ready", "", None).await.0 == status {
            return started.elapsed();
        }
        assert!(started.elapsed() < within, "/health/ready did not answer {status} within {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls until a read and a write succeed again; how long that took.
async fn serves_again(served: &Served, within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let read = call(served.addr, "GET", "/api/tags", "", None).await.0;
        let body = json!({"user": {"bio": "back"}}).to_string();
        let write = call(served.addr, "PUT", "/api/user", &body, Some(&served.token)).await.0;
        if read == 200 && write == 200 {
            return started.elapsed();
        }
        assert!(started.elapsed() < within, "not serving again within {within:?} (read {read}, write {write})");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_postgresql_stopped_requests_get_503_within_2_s_and_the_server_recovers_when_it_is_back() {
    let Some(cluster) = Cluster::start().await else { return };
    // A long time limit: the 503s must come from the database being gone, not from it.
    let served = serve(&cluster, Duration::from_secs(10), Settings::default()).await;
    let load = Load::start(&served, 4);
    load.wait_for_successes(30, Duration::from_secs(30)).await;

    let stopped_at = Instant::now();
    cluster.pg_ctl(&["stop", "-w", "-m", "fast"]).await;
    let stop_took = stopped_at.elapsed();
    let unready_after = ready_becomes(served.addr, 503, Duration::from_secs(2)).await;
    assert_eq!(call(served.addr, "GET", "/health/live", "", None).await.0, 200, "the process is alive");
    // The outage lasts until each kind of request has been answered a few times.
    let started = Instant::now();
    while load.records().iter().filter(|r| r.started > stopped_at && r.status == 503).count() < 30 {
        assert!(started.elapsed() < Duration::from_secs(30), "too few requests while PostgreSQL was stopped");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let restarted_at = Instant::now();
    cluster.pg_ctl(&["start", "-w"]).await;
    let start_took = restarted_at.elapsed();
    let serving_after = serves_again(&served, Duration::from_secs(5)).await;
    let ready_after = ready_becomes(served.addr, 200, Duration::from_secs(5)).await;
    load.wait_for_successes(10, Duration::from_secs(10)).await;
    let records = load.stop().await;

    assert_only_successes_and_503s(&records);
    let during: Vec<&Record> = records.iter().filter(|r| r.started >= stopped_at && r.started < restarted_at).collect();
    let slowest = records.iter().map(|r| r.took).max().unwrap_or_default();
    assert!(slowest < Duration::from_secs(2), "a request took {slowest:?}");
    for what in ["tags", "articles", "update"] {
        assert!(during.iter().any(|r| r.what == what && r.status == 503), "no 503 for {what} while stopped");
    }
    eprintln!(
        "postgresql stopped: {} requests, {}; while stopped: {} requests, slowest answer of all {slowest:?}; \
         pg_ctl stop -w took {stop_took:?}, /health/ready 503 {unready_after:?} after it returned; \
         pg_ctl start -w took {start_took:?}, serving again {serving_after:?} after it returned, \
         ready {ready_after:?} after that",
        records.len(),
        tally(&records),
        during.len(),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_postgresql_hung_requests_end_with_503_at_the_time_limit_and_the_server_recovers() {
    let Some(cluster) = Cluster::start().await else { return };
    let limit = Duration::from_secs(2);
    let served = serve(&cluster, limit, Settings::default()).await;
    let load = Load::start(&served, 4);
    load.wait_for_successes(30, Duration::from_secs(30)).await;

    let hung_at = Instant::now();
    cluster.signal_all(Signal::SIGSTOP);
    let unready_after = ready_becomes(served.addr, 503, Duration::from_secs(3)).await;
    assert_eq!(call(served.addr, "GET", "/health/live", "", None).await.0, 200, "the process is alive");
    let started = Instant::now();
    while load.records().iter().filter(|r| r.started > hung_at && r.status == 503).count() < 12 {
        assert!(started.elapsed() < Duration::from_secs(30), "too few requests while PostgreSQL was hung");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let resumed_at = Instant::now();
    cluster.signal_all(Signal::SIGCONT);
    let serving_after = serves_again(&served, Duration::from_secs(30)).await;
    let ready_after = ready_becomes(served.addr, 200, Duration::from_secs(10)).await;
    load.wait_for_successes(10, Duration::from_secs(10)).await;
    let records = load.stop().await;

    assert_only_successes_and_503s(&records);
    let slowest = records.iter().map(|r| r.took).max().unwrap_or_default();
    // The time limit, and a little for the answer to be written and read.
    assert!(slowest < limit + Duration::from_millis(750), "a request took {slowest:?}");
    let during: Vec<&Record> = records.iter().filter(|r| r.started >= hung_at && r.started < resumed_at).collect();
    eprintln!(
        "postgresql hung: {} requests, {}; while hung: {} requests, {}, slowest answer {slowest:?} (time limit \
         {limit:?}); /health/ready 503 after {unready_after:?}; serving again {serving_after:?} after SIGCONT, \
         ready {ready_after:?} after that",
        records.len(),
        tally(&records),
        during.len(),
        tally(&during.iter().map(|r| (*r).clone()).collect::<Vec<_>>()),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgresql_restart_under_load_gives_no_500() {
    let Some(cluster) = Cluster::start().await else { return };
    let served = serve(&cluster, Duration::from_secs(10), Settings::default()).await;
    let load = Load::start(&served, 4);
    // Every connection of both pools is opened and pooled before the restart.
    load.wait_for_successes(60, Duration::from_secs(30)).await;

    let restarted_at = Instant::now();
    cluster.pg_ctl(&["restart", "-w", "-m", "fast"]).await;
    let back_at = Instant::now();
    let serving_after = serves_again(&served, Duration::from_secs(5)).await;
    load.wait_for_successes(30, Duration::from_secs(10)).await;
    let records = load.stop().await;

    assert_only_successes_and_503s(&records);
    let while_down: Vec<Record> =
        records.iter().filter(|r| r.started >= restarted_at && r.started < back_at).cloned().collect();
    let after: Vec<Record> = records.iter().filter(|r| r.started >= back_at).cloned().collect();
    let reads_503 = after.iter().filter(|r| r.what != "update" && r.status == 503).count();
    let writes_503 = after.iter().filter(|r| r.what == "update" && r.status == 503).count();
    // Every pooled connection died with the restart: a read on one runs again on a new one.
    assert_eq!(reads_503, 0, "reads after the restart: {}", tally(&after));
    eprintln!(
        "postgresql restarted: {} requests, {}; during pg_ctl restart ({:?}): {}; after it: {} ({reads_503} reads \
         and {writes_503} writes answered 503); serving again {serving_after:?} after pg_ctl restart returned",
        records.len(),
        tally(&records),
        back_at - restarted_at,
        tally(&while_down),
        tally(&after),
    );
}

/// A connection that sends the start of a request head and nothing more.
async fn half_sent(addr: SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(b"GET /api/tags HTTP/1.1\r\nHost: slow\r\n").await.expect("write");
    stream
}

/// Waits, up to `within`, until the server closes `stream`; how long that took.
async fn closed_by_server(stream: &mut TcpStream, within: Duration) -> Duration {
    let started = Instant::now();
    let mut buf = [0u8; 256];
    loop {
        match tokio::time::timeout(within.saturating_sub(started.elapsed()), stream.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return started.elapsed(),
            Ok(Ok(_)) => {}
            Err(_) => panic!("the server kept the connection open for {within:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_dribbling_its_request_head_is_closed_at_the_header_read_timeout() {
    let Some(cluster) = Cluster::start().await else { return };
    let header_read_timeout = Duration::from_secs(1);
    let settings = Settings { header_read_timeout, keep_alive_timeout: Duration::from_secs(2), ..Settings::default() };
    let served = serve(&cluster, Duration::from_secs(10), settings).await;

    // One byte every 100 ms: always something, never a whole head.
    let mut dribbler = half_sent(served.addr).await;
    let dribbling = async {
        let started = Instant::now();
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if dribbler.write_all(b"X").await.is_err() {
                return started.elapsed();
            }
            let mut buf = [0u8; 64];
            if let Ok(Ok(0) | Err(_)) = tokio::time::timeout(Duration::from_millis(1), dribbler.read(&mut buf)).await {
                return started.elapsed();
            }
            assert!(started.elapsed() < Duration::from_secs(10), "still open after 10 s");
        }
    };
    let dribbled = dribbling.await;
    assert!(dribbled >= header_read_timeout - Duration::from_millis(150), "closed too early: {dribbled:?}");

    // An idle keep-alive connection lasts the keep-alive timeout, not the header one.
    let mut idle = TcpStream::connect(served.addr).await.expect("connect");
    idle.write_all(b"GET /api/tags HTTP/1.1\r\nHost: idle\r\n\r\n").await.expect("write");
    let mut head = [0u8; 12];
    idle.read_exact(&mut head).await.expect("a response");
    assert_eq!(&head, b"HTTP/1.1 200");
    let mut rest = vec![0u8; 4096];
    let _ = idle.read(&mut rest).await;
    let idled = closed_by_server(&mut idle, Duration::from_secs(10)).await;
    assert!(idled >= Duration::from_millis(1800), "an idle connection closed after {idled:?}");
    eprintln!(
        "header-read timeout {header_read_timeout:?}: dribbler closed after {dribbled:?}; keep-alive 2 s: idle connection closed after {idled:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_connection_cap_a_new_connection_waits_until_one_closes() {
    let Some(cluster) = Cluster::start().await else { return };
    let settings = Settings { max_connections: Some(20), ..Settings::default() };
    let served = serve(&cluster, Duration::from_secs(10), settings).await;

    let mut held = Vec::new();
    for _ in 0..20 {
        held.push(half_sent(served.addr).await);
    }
    // The 21st completes its handshake (the listen backlog) but is not served...
    let mut waiting = TcpStream::connect(served.addr).await.expect("connect");
    waiting.write_all(b"GET /api/tags HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.expect("write");
    let mut response = String::new();
    let early = tokio::time::timeout(Duration::from_millis(500), waiting.read_to_string(&mut response)).await;
    assert!(early.is_err(), "answered past the cap: {response}");
    // ...until a slot frees.
    held.pop();
    let freed = Instant::now();
    tokio::time::timeout(Duration::from_secs(5), waiting.read_to_string(&mut response))
        .await
        .expect("answered once a slot freed")
        .expect("read");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    eprintln!("connection cap 20: the 21st connection was answered {:?} after one closed", freed.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_1000_slowloris_connections_open_a_normal_client_gets_tags_in_under_50_ms_at_p99() {
    let Some(cluster) = Cluster::start().await else { return };
    // Two sockets per connection (client and server side) in this process.
    let files = conduit::edge::server::raise_file_limit();
    if files < 2_500 {
        eprintln!("skipped: a file limit of {files} cannot hold 1,000 connections from both ends");
        return;
    }
    let served = serve(&cluster, Duration::from_secs(10), Settings::default()).await;

    let mut slowloris = Vec::with_capacity(1_000);
    for _ in 0..1_000 {
        slowloris.push(half_sent(served.addr).await);
    }
    let opened = Instant::now();
    // They dribble a header line each now and then, from a task of their own.
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let dribbler = tokio::spawn(async move {
        loop {
            for stream in &mut slowloris {
                let _ = stream.write_all(b"X-a: b\r\n").await;
            }
            tokio::select! {
                _ = &mut stopped => return slowloris,
                () = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
    });

    let mut latencies = Vec::with_capacity(300);
    for _ in 0..300 {
        let started = Instant::now();
        let (status, _) = call(served.addr, "GET", "/api/tags", "", None).await;
        latencies.push(started.elapsed());
        assert_eq!(status, 200);
    }
    let measured_within = opened.elapsed();
    let _ = stop.send(());
    let mut slowloris = dribbler.await.expect("dribbler");
    latencies.sort();
    let p50 = latencies[latencies.len() / 2];
    let p99 = latencies[latencies.len() * 99 / 100];
    let max = latencies[latencies.len() - 1];
    // Measured while all of them were still within their header-read timeout.
    assert!(measured_within < Duration::from_secs(10), "measuring took {measured_within:?}");
    assert!(p99 < Duration::from_millis(50), "p50 {p50:?}, p99 {p99:?}, max {max:?}");

    // Then each is closed at its header-read timeout (10 s after it opened).
    let started = Instant::now();
    for stream in &mut slowloris {
        closed_by_server(stream, Duration::from_secs(15)).await;
    }
    eprintln!(
        "1,000 slowloris connections: GET /api/tags over 300 new connections p50 {p50:?}, p99 {p99:?}, max {max:?} \
         (measured within {measured_within:?}); all 1,000 closed by the server {:?} after they opened \
         (waited {:?} for the last)",
        opened.elapsed(),
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_clusters_log_is_private_and_holds_no_personal_data() {
    let Some(cluster) = Cluster::start().await else { return };
    let (writes, reads) =
        conduit::db::open(cluster.pg().connect_options(), 1, Duration::from_secs(10)).await.expect("open the database");
    let insert = "INSERT INTO users (username, email, password_hash) VALUES ($1, $2, 'x')";
    sqlx::query(insert).bind("jake").bind("jake.secret@example.com").execute(&writes).await.expect("insert jake");
    let duplicate = sqlx::query(insert).bind("jake2").bind("jake.secret@example.com").execute(&writes).await;
    assert!(duplicate.is_err(), "the email is taken");
    reads.close().await;
    writes.close().await;
    // Written by the time the cluster has stopped.
    cluster.pg_ctl(&["stop", "-w", "-m", "fast"]).await;

    let log_path = cluster.pg().data_dir().parent().expect("the data directory's parent").join("postgres.log");
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&log_path).expect("the log").permissions());
    assert_eq!(mode & 0o777, 0o600, "postgres.log is readable by its owner only");
    let log = std::fs::read_to_string(&log_path).expect("read the log");
    assert!(log.contains("duplicate key value violates unique constraint"), "the error is logged:\n{log}");
    assert!(!log.contains("jake.secret"), "no email in the log:\n{log}");
}
