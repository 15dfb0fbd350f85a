//! W3C trace context: a request's `traceparent` is continued, returned and logged,
//! a bad one starts a new trace (never an error); and, with
//! `OTEL_EXPORTER_OTLP_ENDPOINT` set, the spans reach an OTLP receiver on loopback
//! that decodes them with the official protobuf definitions (`opentelemetry-proto`).
//!
//! The logging subscriber is global to a process, so what is logged and exported
//! is tested on the real binary, run as a child process.

use std::{
    collections::HashMap,
    io::BufRead as _,
    net::SocketAddr,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    body::{Body, Bytes},
    extract::State,
    http::{HeaderValue, Request, StatusCode, header},
    response::IntoResponse,
};
use conduit::telemetry::traceparent::{TRACEPARENT, TraceParent};
use opentelemetry_proto::tonic::{
    collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse},
    common::v1::{AnyValue, KeyValue, any_value},
    trace::v1::Span,
};
use prost::Message as _;
use serde_json::{Value, json};
use sqlx::postgres::PgConnectOptions;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::support::{JWT_SECRET, PASSWORD, TestApp};

/// The example of the W3C recommendation: sampled.
const CALLER: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

/// The response's `traceparent`, parsed (the test fails without one).
#[track_caller]
fn returned(headers: &axum::http::HeaderMap) -> TraceParent {
    let value = headers.get(TRACEPARENT).expect("a traceparent on the response");
    let text = value.to_str().expect("ascii");
    assert!(text.starts_with("00-") && text.len() == 55, "version 00: {text}");
    TraceParent::parse(value.as_bytes()).expect("a valid traceparent")
}

async fn get_tags(app: &TestApp, traceparent: Option<HeaderValue>) -> crate::support::TestResponse {
    let mut request = Request::get("/api/tags");
    if let Some(value) = traceparent {
        request = request.header(TRACEPARENT, value);
    }
    app.send(request.body(Body::empty()).expect("request")).await
}

#[tokio::test]
async fn a_valid_traceparent_is_continued_and_returned_with_our_span_as_parent() {
    let app = TestApp::new().await;
    let response = get_tags(&app, Some(HeaderValue::from_static(CALLER))).await;
    assert_eq!(response.status, StatusCode::OK);
    let ours = returned(&response.headers);
    assert_eq!(ours.trace_id.to_string(), CALLER_TRACE, "the caller's trace");
    assert_ne!(ours.span_id.to_string(), CALLER_SPAN, "our own span");
    assert!(ours.sampled, "the caller's sampling decision is kept");

    let unsampled = HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00");
    let response = get_tags(&app, Some(unsampled)).await;
    let ours = returned(&response.headers);
    assert_eq!((ours.trace_id.to_string().as_str(), ours.sampled), (CALLER_TRACE, false));
}

#[tokio::test]
async fn without_a_traceparent_each_request_starts_a_trace_of_its_own() {
    let app = TestApp::new().await;
    let first = returned(&get_tags(&app, None).await.headers);
    let second = returned(&get_tags(&app, None).await.headers);
    assert_ne!(first.trace_id, second.trace_id);
    assert!(!first.sampled, "nothing is recorded for export without a collector");
    // Error answers, produced in and out of the handlers, carry it too.
    for uri in ["/api/nowhere", "/api/articles/no-such-article"] {
        let response = app.get(uri, None).await;
        assert_eq!(response.status, StatusCode::NOT_FOUND, "{uri}");
        returned(&response.headers);
    }
}

#[tokio::test]
async fn a_bad_traceparent_starts_a_new_trace_and_never_fails_the_request() {
    let app = TestApp::new().await;
    let long = format!("00-{}-00f067aa0ba902b7-01", "a".repeat(300_000));
    let bad: Vec<HeaderValue> = [
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01,00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "",
        "ciao",
        long.as_str(),
    ]
    .into_iter()
    .map(|text| HeaderValue::from_str(text).expect("header value"))
    .chain([HeaderValue::from_bytes(b"00-4bf92f3577b34da6a3ce929d0e0e47\xff\xfe-00f067aa0ba902b7-01").expect("obs-text")])
    .collect();
    for value in bad {
        let shown = String::from_utf8_lossy(&value.as_bytes()[..value.len().min(80)]).into_owned();
        let response = get_tags(&app, Some(value)).await;
        assert_eq!(response.status, StatusCode::OK, "{shown}: {}", response.text);
        let ours = returned(&response.headers);
        assert_ne!(ours.trace_id.to_string(), CALLER_TRACE, "{shown}: a new trace");
    }

    // Two `traceparent` headers are ambiguous: a new trace too.
    let request = Request::get("/api/tags")
        .header(TRACEPARENT, CALLER)
        .header(TRACEPARENT, CALLER)
        .body(Body::empty())
        .expect("request");
    let response = app.send(request).await;
    assert_eq!(response.status, StatusCode::OK);
    assert_ne!(returned(&response.headers).trace_id.to_string(), CALLER_TRACE);

    // A bad body still gets its usual answer.
    let request = Request::post("/api/users/login")
        .header(TRACEPARENT, "00-zz")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from("{"))
        .expect("request");
    let response = app.send(request).await;
    assert!(response.status.is_client_error(), "{}", response.text);
    returned(&response.headers);
}

#[tokio::test]
async fn browsers_may_send_the_trace_context_and_read_the_answer() {
    let app = TestApp::new().await;
    let preflight = Request::options("/api/tags")
        .header(header::ORIGIN, "https://app.example.com")
        .header(header::ACCESS_CONTROL_REQUEST_METHOD, "GET")
        .header(header::ACCESS_CONTROL_REQUEST_HEADERS, "traceparent,tracestate")
        .body(Body::empty())
        .expect("request");
    let response = app.send(preflight).await;
    let allowed = response.headers.get(header::ACCESS_CONTROL_ALLOW_HEADERS).expect("allowed headers");
    let allowed = allowed.to_str().expect("ascii").to_ascii_lowercase();
    assert!(allowed.contains("traceparent") && allowed.contains("tracestate"), "{allowed}");

    let request = Request::get("/api/tags")
        .header(header::ORIGIN, "https://app.example.com")
        .body(Body::empty())
        .expect("request");
    let exposed = app.send(request).await.headers.get(header::ACCESS_CONTROL_EXPOSE_HEADERS).cloned();
    let exposed = exposed.expect("exposed headers").to_str().expect("ascii").to_ascii_lowercase();
    assert!(exposed.contains("traceparent"), "{exposed}");
}

// --- The binary: logs and export. ---

const BIN: &str = env!("CARGO_BIN_EXE_conduit");

/// The URL of a test's database, for the server in a child process.
fn database_url(options: &PgConnectOptions) -> String {
    let (host, port, user, db) =
        (options.get_host(), options.get_port(), options.get_username(), options.get_database().unwrap_or("postgres"));
    if host.starts_with('/') {
        format!("postgres://{user}@localhost:{port}/{db}?host={host}")
    } else {
        format!("postgres://{user}@{host}:{port}/{db}")
    }
}

/// `conduit` serving `app`'s database on a free port, logging JSON to a buffer;
/// killed if the test ends without stopping it.
struct Server {
    child: Child,
    addr: SocketAddr,
    stdout: Option<std::thread::JoinHandle<Vec<String>>>,
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
    async fn start(app: &TestApp, vars: &[(&str, &str)]) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let mut child = Command::new(BIN)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DATABASE_URL", database_url(&app.options))
            .env("JWT_SECRET", JWT_SECRET)
            .env("BIND_ADDR", addr.to_string())
            .env("LOG_FORMAT", "json")
            .envs(vars.iter().copied())
            .current_dir(std::env::temp_dir())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start conduit");
        let stdout = child.stdout.take().expect("stdout");
        let stdout = std::thread::spawn(move || {
            std::io::BufReader::new(stdout).lines().map_while(Result::ok).collect::<Vec<String>>()
        });
        let mut server = Self { child, addr, stdout: Some(stdout) };
        server.wait_serving().await;
        server
    }

    async fn wait_serving(&mut self) {
        let started = Instant::now();
        loop {
            assert!(self.child.try_wait().expect("poll child").is_none(), "conduit exited during start-up");
            if tokio::net::TcpStream::connect(self.addr).await.is_ok()
                && send(self.addr, "GET", "/health/live", &[], "").await.0 == 200
            {
                return;
            }
            assert!(started.elapsed() < Duration::from_secs(60), "not serving after 60 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops the server with SIGTERM and returns its log lines, parsed.
    fn stop(mut self) -> Vec<Value> {
        let pid = nix::unistd::Pid::from_raw(self.child.id().try_into().expect("pid"));
        nix::sys::signal::kill(pid, nix::sys::signal::SIGTERM).expect("SIGTERM");
        let started = Instant::now();
        while self.child.try_wait().expect("poll child").is_none() {
            assert!(started.elapsed() < Duration::from_secs(60), "conduit did not stop within 60 s of SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(self.child.wait().expect("status").success(), "clean exit");
        let lines = self.stdout.take().expect("read once").join().expect("stdout reader");
        lines.iter().map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}"))).collect()
    }
}

/// One HTTP/1.1 request on its own connection: the status, the response's
/// `traceparent` (if any) and the body.
async fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, Option<TraceParent>, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len()));
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    let (head, body) = response.split_once("\r\n\r\n").expect("a head and a body");
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("status line");
    let traceparent = head
        .lines()
        .filter_map(|line| line.split_once(": "))
        .find(|(name, _)| name.eq_ignore_ascii_case("traceparent"))
        .map(|(_, value)| TraceParent::parse(value.as_bytes()).expect("a valid traceparent"));
    (status, traceparent, body.to_owned())
}

/// The log lines inside the request span of trace `trace_id`.
fn lines_of_trace<'a>(lines: &'a [Value], trace_id: &str) -> Vec<&'a Value> {
    lines.iter().filter(|line| line["span"]["trace_id"] == trace_id).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_trace_id_is_in_the_log_lines_of_its_request() {
    let app = TestApp::new().await;
    let server = Server::start(&app, &[]).await;
    let (status, ours, _) = send(server.addr, "GET", "/api/tags", &[("traceparent", CALLER)], "").await;
    assert_eq!(status, 200);
    assert_eq!(ours.expect("traceparent").trace_id.to_string(), CALLER_TRACE);
    let (status, new, _) = send(server.addr, "GET", "/api/articles", &[], "").await;
    assert_eq!(status, 200);
    let new = new.expect("traceparent").trace_id.to_string();
    let lines = server.stop();

    for (trace_id, route) in [(CALLER_TRACE, "/api/tags"), (new.as_str(), "/api/articles")] {
        let logged = lines_of_trace(&lines, trace_id);
        assert!(
            logged.iter().any(|line| line["message"] == "response" && line["status"] == 200),
            "the response line of {route} carries trace {trace_id}: {lines:#?}"
        );
        assert!(logged.iter().all(|line| line["span"]["route"] == route), "{logged:#?}");
    }
}

/// An OTLP/HTTP receiver: decodes each `ExportTraceServiceRequest` posted to
/// `/v1/traces` and keeps its spans with their service's name.
#[derive(Debug, Clone, Default)]
struct Receiver {
    spans: Arc<Mutex<Vec<(String, Span)>>>,
}

impl Receiver {
    async fn start(&self) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let app = axum::Router::new().route("/v1/traces", axum::routing::post(receive)).with_state(self.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.expect("receiver") });
        addr
    }

    fn spans(&self) -> Vec<(String, Span)> {
        self.spans.lock().expect("spans").clone()
    }
}

async fn receive(State(receiver): State<Receiver>, body: Bytes) -> axum::response::Response {
    let Ok(export) = ExportTraceServiceRequest::decode(body) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let mut spans = receiver.spans.lock().expect("spans");
    for resource_spans in export.resource_spans {
        let attributes = resource_spans.resource.map(|r| r.attributes).unwrap_or_default();
        let service = string_attribute(&attributes, "service.name").unwrap_or_default();
        for scope_spans in resource_spans.scope_spans {
            spans.extend(scope_spans.spans.into_iter().map(|span| (service.clone(), span)));
        }
    }
    ([(header::CONTENT_TYPE, "application/x-protobuf")], ExportTraceServiceResponse::default().encode_to_vec())
        .into_response()
}

fn string_attribute(attributes: &[KeyValue], key: &str) -> Option<String> {
    attributes.iter().find(|kv| kv.key == key).and_then(|kv| match &kv.value {
        Some(AnyValue { value: Some(any_value::Value::StringValue(value)) }) => Some(value.clone()),
        _ => None,
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The spans of one trace, by span id.
fn trace(spans: &[(String, Span)], trace_id: &str) -> HashMap<String, Span> {
    spans
        .iter()
        .filter(|(_, span)| hex(&span.trace_id) == trace_id)
        .map(|(_, s)| (hex(&s.span_id), s.clone()))
        .collect()
}

/// Whether `span` is `ancestor`'s descendant, by parent links within `trace`.
fn descends_from(trace: &HashMap<String, Span>, span: &Span, ancestor: &str) -> bool {
    let mut parent = hex(&span.parent_span_id);
    while let Some(next) = trace.get(&parent) {
        if parent == ancestor {
            return true;
        }
        parent = hex(&next.parent_span_id);
    }
    false
}

/// Asserts that the trace has the request span `ours` under `caller` (or a root
/// span), and SQL and Argon2 spans below it; returns the request span's route.
#[track_caller]
fn assert_request_trace(spans: &[(String, Span)], ours: TraceParent, caller: Option<&str>, sql: &str, argon2: &str) {
    let trace = trace(spans, &ours.trace_id.to_string());
    let request = trace.get(&ours.span_id.to_string()).unwrap_or_else(|| {
        panic!("the request span {} of trace {} was exported: {trace:#?}", ours.span_id, ours.trace_id)
    });
    assert_eq!(request.name, "request");
    assert_eq!(hex(&request.parent_span_id), caller.unwrap_or(""), "the request span's parent is the caller's");
    for name in [sql, argon2] {
        let child = trace.values().find(|span| span.name == name).unwrap_or_else(|| {
            panic!(
                "a `{name}` span in trace {}: {:?}",
                ours.trace_id,
                trace.values().map(|s| &s.name).collect::<Vec<_>>()
            )
        });
        assert!(descends_from(&trace, child, &ours.span_id.to_string()), "`{name}` is inside the request span");
        assert!(child.start_time_unix_nano >= request.start_time_unix_nano);
        assert!(child.end_time_unix_nano <= request.end_time_unix_nano);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_an_otlp_endpoint_requests_sql_and_argon2_spans_are_exported_in_the_callers_trace() {
    let receiver = Receiver::default();
    let collector = receiver.start().await;
    let app = TestApp::new().await;
    // A batch every minute: what reaches the receiver was sent by the flush at shutdown.
    let endpoint = format!("http://{collector}");
    let server = Server::start(
        &app,
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint), ("OTEL_BSP_SCHEDULE_DELAY", "60000"), ("RUST_LOG", "warn")],
    )
    .await;

    let register = json!({"user": {"username": "jake", "email": "jake@example.com", "password": PASSWORD}});
    let (status, registered, body) =
        send(server.addr, "POST", "/api/users", &[("traceparent", CALLER)], &register.to_string()).await;
    assert_eq!(status, 201, "{body}");
    let registered = registered.expect("traceparent");
    assert_eq!(registered.trace_id.to_string(), CALLER_TRACE);
    assert!(registered.sampled, "exported, so sampled");

    let login = json!({"user": {"email": "jake@example.com", "password": PASSWORD}});
    let (status, logged_in, body) = send(server.addr, "POST", "/api/users/login", &[], &login.to_string()).await;
    assert_eq!(status, 200, "{body}");
    let logged_in = logged_in.expect("traceparent");
    assert!(logged_in.sampled, "a new trace is sampled when spans are exported");
    assert_ne!(logged_in.trace_id.to_string(), CALLER_TRACE);

    let lines = server.stop();
    let spans = receiver.spans();
    assert!(spans.iter().all(|(service, _)| service == "conduit"), "service.name");
    assert_request_trace(&spans, registered, Some(CALLER_SPAN), "insert", "argon2.hash");
    assert_request_trace(&spans, logged_in, None, "credentials_by_email", "argon2.verify");
    // `RUST_LOG=warn` quiets the logs, not the export.
    assert!(lines_of_trace(&lines, CALLER_TRACE).is_empty(), "{lines:#?}");
}
