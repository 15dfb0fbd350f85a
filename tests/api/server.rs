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
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let shutdown = async {
        let _ = stopped.await;
    };
    let settings = Settings { drain: Duration::ZERO, ..Settings::default() };
    let router = app.router.clone();
    let server = tokio::spawn(async move {
        conduit::edge::server::serve_until(listener, router, shutdown, &settings, Duration::from_secs(5)).await
    });
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
