//! End-to-end over a real socket: graceful shutdown and request timeouts.

use std::time::Duration;

use axum::http::StatusCode;
use conduit::{app::HttpOptions, edge::server::Settings};
use serde_json::json;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
};

use crate::support::{PASSWORD, TestApp};

/// Starts serving `app` on a free loopback port; the sender stops the server.
async fn start(app: &TestApp) -> (std::net::SocketAddr, tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    start_with(app, Settings { drain: Duration::ZERO, ..Settings::default() }).await
}

/// As [`start`], with `settings`.
async fn start_with(
    app: &TestApp,
    settings: Settings,
) -> (std::net::SocketAddr, tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let shutdown = async {
        let _ = stopped.await;
    };
    let settings = Settings { grace: Duration::from_secs(5), ..settings };
    let router = app.router.clone();
    let server =
        tokio::spawn(async move { conduit::edge::server::serve_until(listener, router, shutdown, &settings).await });
    let handle = tokio::spawn(async move {
        server.await.expect("server task").expect("server ran");
    });
    (addr, stop, handle)
}

/// One HTTP/1.1 request on a new connection; returns the status and the body.
pub async fn http(addr: std::net::SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request(method, path, body, addr).as_bytes()).await.expect("write");
    response(stream).await
}

/// A request with a JSON body, on a connection closed after it.
pub fn request(method: &str, path: &str, body: &str, addr: std::net::SocketAddr) -> String {
    format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// The status and body of the response that ends `stream`.
pub async fn response(mut stream: TcpStream) -> (u16, String) {
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    let status = response.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("status line");
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

fn login_body() -> String {
    json!({"user": {"email": "jake@example.com", "password": PASSWORD}}).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_the_requests_in_flight_then_refuses_new_connections() {
    let app = TestApp::new().await;
    app.register("jake").await;
    let (addr, stop, server) = start(&app).await;

    // A login spends a full Argon2 verification: long enough to be caught in
    // flight. Its request is sent whole before the stop.
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request("POST", "/api/users/login", &login_body(), addr).as_bytes()).await.expect("write");
    stop.send(()).expect("server is running");

    let (status, body) = response(stream).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"token\""), "{body}");
    tokio::time::timeout(Duration::from_secs(10), server).await.expect("server stops").expect("server task");
    assert!(TcpStream::connect(addr).await.is_err(), "the listener is closed after shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_over_the_time_limit_is_answered_503_in_the_error_format() {
    let app =
        TestApp::with_options(HttpOptions { request_timeout: Duration::from_millis(1), ..Default::default() }).await;
    let (addr, stop, server) = start(&app).await;

    let body = json!({"user": {"username": "slow", "email": "slow@example.com", "password": PASSWORD}}).to_string();
    let (status, text) = http(addr, "POST", "/api/users", &body).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE.as_u16(), "{text}");
    let json: serde_json::Value = serde_json::from_str(&text).expect("JSON error body");
    assert_eq!(json["errors"]["server"][0], "took too long, please try again later", "{text}");

    stop.send(()).expect("server is running");
    server.await.expect("server task");
}

/// Bytes sent to the server on `port` that it has not read yet, connections
/// waiting to be accepted included (the kernel's count, in `/proc/net/tcp`): 0
/// once the server has read everything its clients sent.
pub fn unread_by_server(port: u16) -> u64 {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    let port = format!(":{port:04X}");
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let queues = fields.get(4)?;
            fields.get(1)?.ends_with(&port).then(|| u64::from_str_radix(queues.split_once(':')?.1, 16).ok())?
        })
        .sum()
}

/// Waits, up to 10 s, until the server on `port` has read all its clients sent.
pub async fn wait_until_read(port: u16) {
    let started = std::time::Instant::now();
    while unread_by_server(port) > 0 {
        assert!(started.elapsed() < Duration::from_secs(10), "the server left bytes unread for 10 s");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Reads one response from a connection kept open: its head, and a body of its `Content-Length`.
async fn one_response(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        stream.read_exact(&mut byte).await.expect("a response head");
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).expect("utf-8 head");
    let length: usize = head
        .lines()
        .find_map(|line| {
            line.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().expect("length"))
        })
        .expect("a Content-Length");
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).await.expect("the body");
    head
}

/// Waits, up to `within`, until the server closes `stream` without a response; how long that took.
async fn closed_by_server(stream: &mut TcpStream, within: Duration) -> Duration {
    let started = std::time::Instant::now();
    let mut buf = [0u8; 256];
    match tokio::time::timeout(within, stream.read(&mut buf)).await {
        Ok(Ok(0) | Err(_)) => started.elapsed(),
        Ok(Ok(n)) => panic!("the server sent {:?}", String::from_utf8_lossy(&buf[..n])),
        Err(_) => panic!("the server kept the connection open for {within:?}"),
    }
}

/// Waits, up to 10 s, until the server refuses new connections.
async fn wait_until_refused(addr: std::net::SocketAddr) {
    let started = std::time::Instant::now();
    while TcpStream::connect(addr).await.is_ok() {
        assert!(started.elapsed() < Duration::from_secs(10), "still accepting 10 s after the stop");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_closed_when_the_drain_starts_while_new_ones_are_served() {
    let app = TestApp::new().await;
    let drain = Duration::from_secs(3);
    let (addr, stop, server) = start_with(&app, Settings { drain, ..Settings::default() }).await;

    let mut idle = TcpStream::connect(addr).await.expect("connect");
    idle.write_all(b"GET /api/tags HTTP/1.1\r\nHost: idle\r\n\r\n").await.expect("write");
    let head = one_response(&mut idle).await;
    assert!(head.starts_with("HTTP/1.1 200") && !head.to_ascii_lowercase().contains("connection: close"), "{head}");

    stop.send(()).expect("server is running");
    // Closed while the server still accepts: its client reconnects to a server that serves.
    let closed_after = closed_by_server(&mut idle, drain / 2).await;
    let (status, body) = http(addr, "GET", "/api/tags", "").await;
    assert_eq!(status, 200, "{body}");
    eprintln!("drain {drain:?}: an idle keep-alive connection was closed {closed_after:?} after the stop");
    tokio::time::timeout(drain + Duration::from_secs(5), server).await.expect("server stops").expect("server task");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_begun_on_a_kept_alive_connection_when_the_server_stops_accepting_is_answered() {
    let app = TestApp::new().await;
    let (addr, stop, server) = start(&app).await;

    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(b"GET /api/tags HTTP/1.1\r\nHost: first\r\n\r\n").await.expect("write");
    assert!(one_response(&mut stream).await.starts_with("HTTP/1.1 200"));
    // The next request's first line reaches the server, then the stop comes.
    stream.write_all(b"GET /api/tags HTTP/1.1\r\n").await.expect("write");
    wait_until_read(addr.port()).await;
    stop.send(()).expect("server is running");
    wait_until_refused(addr).await;
    let mut buf = [0u8; 64];
    let early = tokio::time::timeout(Duration::from_millis(100), stream.read(&mut buf)).await;
    assert!(early.is_err(), "the server closed a connection whose request had begun: {early:?}");

    stream.write_all(b"Host: second\r\n\r\n").await.expect("write the rest");
    let head = one_response(&mut stream).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.to_ascii_lowercase().contains("connection: close"), "{head}");
    tokio::time::timeout(Duration::from_secs(10), server).await.expect("server stops").expect("server task");
}

/// A login whose head is sent whole and whose body, announced as 1,000 bytes, stops after 10.
async fn stalled_login(addr: std::net::SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let head =
        "POST /api/users/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n";
    stream.write_all(format!("{head}{{\"user\": {{").as_bytes()).await.expect("write");
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_body_that_stops_for_the_header_read_timeout_closes_its_connection() {
    let app = TestApp::new().await;
    let header_read_timeout = Duration::from_secs(1);
    let settings = Settings { header_read_timeout, drain: Duration::ZERO, ..Settings::default() };
    let (addr, stop, server) = start_with(&app, settings).await;

    let mut stalled = stalled_login(addr).await;
    let closed_after = closed_by_server(&mut stalled, Duration::from_secs(5)).await;
    assert!(closed_after >= header_read_timeout - Duration::from_millis(100), "closed too early: {closed_after:?}");
    eprintln!("header-read timeout {header_read_timeout:?}: a stalled request body was closed after {closed_after:?}");
    stop.send(()).expect("server is running");
    server.await.expect("server task");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_logins_with_half_sent_bodies_do_not_hold_the_stop() {
    let app = TestApp::new().await;
    let (addr, stop, server) = start(&app).await;

    let mut stalled = Vec::new();
    for _ in 0..20 {
        stalled.push(stalled_login(addr).await);
    }
    wait_until_read(addr.port()).await;
    let stopping = std::time::Instant::now();
    stop.send(()).expect("server is running");
    tokio::time::timeout(Duration::from_secs(10), server).await.expect("server stops").expect("server task");
    let stopped_after = stopping.elapsed();
    eprintln!("20 logins with half-sent bodies: the server stopped {stopped_after:?} after the stop (no drain)");
    // The moment given to requests still being sent, and a margin for a busy machine.
    assert!(stopped_after < Duration::from_secs(2), "the stop waited for the bodies: {stopped_after:?}");
    for mut stream in stalled {
        closed_by_server(&mut stream, Duration::from_secs(1)).await;
    }
}
