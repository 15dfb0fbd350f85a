//! Cross-cutting HTTP behaviour: body parsing, routing, CORS, request ids, health
//! probes, timeouts and the media type of responses.

use std::time::Duration;

use axum::{
    body::Body,
    http::{Method, Request, StatusCode, header},
};
use conduit::{app::HttpOptions, config::CorsOrigins};
use serde_json::json;

use crate::support::{PASSWORD, TestApp, TestResponse};

const JSON_UTF8: &str = "application/json; charset=utf-8";

/// A request with a raw body and an optional content type.
fn raw(method: Method, uri: &str, content_type: Option<&str>, body: impl Into<Body>) -> Request<Body> {
    let mut builder = Request::builder().method(method).uri(uri);
    if let Some(content_type) = content_type {
        builder = builder.header(header::CONTENT_TYPE, content_type);
    }
    builder.body(body.into()).expect("valid request")
}

#[track_caller]
fn assert_content_type(response: &TestResponse, expected: &str) {
    assert_eq!(
        response.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()),
        Some(expected),
        "{} {}",
        response.status,
        response.text
    );
}

/// Asserts the error format under `field`, labelled as UTF-8 JSON.
#[track_caller]
fn assert_json_error(response: &TestResponse, status: StatusCode, field: &str) {
    response.assert_error(status, field);
    assert_content_type(response, JSON_UTF8);
}

fn registration() -> serde_json::Value {
    json!({"user": {"username": "jake", "email": "jake@jake.jake", "password": PASSWORD}})
}

#[tokio::test]
async fn malformed_json_is_400_in_the_error_format() {
    let app = TestApp::new().await;
    for body in [r#"{"user":"#, "{user: {}}", "not json at all"] {
        let response = app.send(raw(Method::POST, "/api/users", Some("application/json"), body)).await;
        assert_json_error(&response, StatusCode::BAD_REQUEST, "body");
    }
    assert_eq!(app.count("users").await, 0);
}

#[tokio::test]
async fn a_wrong_content_type_is_415_in_the_error_format() {
    let app = TestApp::new().await;
    let body = registration().to_string();
    for content_type in [Some("text/plain"), Some("application/x-www-form-urlencoded"), None] {
        let response = app.send(raw(Method::POST, "/api/users", content_type, body.clone())).await;
        assert_json_error(&response, StatusCode::UNSUPPORTED_MEDIA_TYPE, "body");
    }
    let charset = app.send(raw(Method::POST, "/api/users", Some("application/json; charset=utf-8"), body)).await;
    assert_eq!(charset.status, StatusCode::CREATED, "{}", charset.text);
}

#[tokio::test]
async fn an_oversized_body_is_413_in_the_error_format() {
    let app = TestApp::new().await;
    let mut body = registration();
    body["user"]["bio"] = json!("x".repeat(2 * 1024 * 1024));
    let response = app.post("/api/users", None, body).await;
    assert_json_error(&response, StatusCode::PAYLOAD_TOO_LARGE, "body");
    assert_eq!(app.count("users").await, 0);
}

#[tokio::test]
async fn a_body_of_the_wrong_shape_is_422() {
    // The error names the field at fault when there is one, else `body`.
    let app = TestApp::new().await;
    let bodies = [
        (json!({"user": "jake"}), "user"),
        (json!({"user": {"email": 5}}), "email"),
        (json!({"user": {"username": ["jake"], "email": "jake@jake.jake", "password": PASSWORD}}), "username"),
        (json!({}), "body"),
        (json!([]), "body"),
        (json!(null), "body"),
    ];
    for (body, field) in bodies {
        let response = app.post("/api/users", None, body.clone()).await;
        assert_json_error(&response, StatusCode::UNPROCESSABLE_ENTITY, field);
    }
    let token = app.register("jake").await;
    let response = app.put("/api/user", Some(&token), json!({"user": {"bio": 5}})).await;
    assert_json_error(&response, StatusCode::UNPROCESSABLE_ENTITY, "bio");
}

#[tokio::test]
async fn unknown_routes_are_404_and_wrong_methods_405_in_the_error_format() {
    let app = TestApp::new().await;
    for uri in ["/api/nope", "/nope", "/api", "/api/users/jake/extra"] {
        assert_json_error(&app.get(uri, None).await, StatusCode::NOT_FOUND, "route");
    }
    for (method, uri) in [(Method::DELETE, "/api/tags"), (Method::PATCH, "/api/user"), (Method::GET, "/api/users")] {
        let response = app.request(method.clone(), uri, None, None).await;
        assert_json_error(&response, StatusCode::METHOD_NOT_ALLOWED, "body");
    }
}

#[tokio::test]
async fn a_wrong_method_names_the_allowed_ones() {
    let app = TestApp::new().await;
    let response = app.request(Method::PATCH, "/api/user", None, None).await;
    assert_eq!(response.status, StatusCode::METHOD_NOT_ALLOWED);
    let allow = response.headers.get(header::ALLOW).and_then(|v| v.to_str().ok()).unwrap_or_default();
    assert!(allow.contains("GET") && allow.contains("PUT"), "Allow: {allow:?}");
}

/// An `OPTIONS` preflight from `origin` for a POST with a token.
fn preflight(origin: &str) -> Request<Body> {
    Request::builder()
        .method(Method::OPTIONS)
        .uri("/api/articles")
        .header(header::ORIGIN, origin)
        .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
        .header(header::ACCESS_CONTROL_REQUEST_HEADERS, "authorization,content-type")
        .body(Body::empty())
        .expect("valid request")
}

fn header_text(response: &TestResponse, name: impl header::AsHeaderName) -> &str {
    response.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default()
}

#[tokio::test]
async fn cors_preflight_allows_other_origins() {
    let app = TestApp::new().await;
    let response = app.send(preflight("http://localhost:4200")).await;
    assert!(response.status.is_success(), "{} {}", response.status, response.text);
    assert!(response.headers.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN), "{:?}", response.headers);
    let allowed_headers = header_text(&response, header::ACCESS_CONTROL_ALLOW_HEADERS).to_ascii_lowercase();
    assert!(allowed_headers.contains("authorization"), "{allowed_headers}");
    assert!(allowed_headers.contains("content-type"), "{allowed_headers}");
    assert!(header_text(&response, header::ACCESS_CONTROL_ALLOW_METHODS).contains("POST"), "{:?}", response.headers);

    // The actual request is answered with the CORS headers too, exposing the request
    // id, and the challenge that tells a browser client its token was refused.
    let request = Request::builder()
        .uri("/api/tags")
        .header(header::ORIGIN, "http://localhost:4200")
        .body(Body::empty())
        .expect("valid request");
    let response = app.send(request).await;
    assert_eq!(response.status, StatusCode::OK);
    assert!(response.headers.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN), "{:?}", response.headers);
    let exposed = header_text(&response, header::ACCESS_CONTROL_EXPOSE_HEADERS).to_ascii_lowercase();
    assert!(exposed.contains("x-request-id"), "{exposed}");
    assert!(exposed.contains("www-authenticate"), "{exposed}");
}

#[tokio::test]
async fn cors_with_an_origin_list_allows_only_those_origins() {
    let app = TestApp::with_options(HttpOptions {
        cors_origins: CorsOrigins::List(vec!["https://app.example.com".to_owned()]),
        ..Default::default()
    })
    .await;
    let allowed = app.send(preflight("https://app.example.com")).await;
    assert_eq!(header_text(&allowed, header::ACCESS_CONTROL_ALLOW_ORIGIN), "https://app.example.com");
    let other = app.send(preflight("https://evil.example.com")).await;
    assert!(!other.headers.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN), "{:?}", other.headers);
}

#[tokio::test]
async fn responses_carry_a_request_id() {
    let app = TestApp::new().await;
    let first = app.get("/api/tags", None).await;
    let second = app.get("/api/nope", None).await;
    let ids = [header_text(&first, "x-request-id"), header_text(&second, "x-request-id")];
    assert!(ids.iter().all(|id| !id.is_empty()), "{:?} / {:?}", first.headers, second.headers);
    assert_ne!(ids[0], ids[1]);

    let request = Request::builder()
        .uri("/api/tags")
        .header("x-request-id", "trace-me-42")
        .body(Body::empty())
        .expect("valid request");
    let echoed = app.send(request).await;
    assert_eq!(echoed.headers["x-request-id"], "trace-me-42");
}

#[tokio::test]
async fn health_endpoints_report_live_and_ready() {
    let app = TestApp::new().await;
    for uri in ["/health/live", "/health/ready"] {
        let response = app.get(uri, None).await;
        assert_eq!(response.status, StatusCode::OK, "{uri}: {}", response.text);
        assert_eq!(response.body, json!({"status": "ok"}));
    }
}

#[tokio::test]
async fn readiness_fails_when_the_pool_of_reads_cannot_lend_a_connection() {
    let app = TestApp::new().await;
    app.reads.close().await;
    let response = app.get("/health/ready", None).await;
    assert_eq!(response.status, StatusCode::SERVICE_UNAVAILABLE, "{}", response.text);
    assert_eq!(response.body, json!({"status": "database unavailable"}));
    assert_eq!(app.get("/health/live", None).await.status, StatusCode::OK, "the process itself is alive");
}

#[tokio::test]
async fn readiness_does_not_wait_behind_reads_that_hold_every_connection() {
    let app = TestApp::new().await;
    let _held = crate::reads::hold_every_connection(&app.reads, 5).await;
    let started = std::time::Instant::now();
    let response = app.get("/health/ready", None).await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.text);
    assert!(started.elapsed() < std::time::Duration::from_secs(1), "answered without waiting for a connection");
}

#[tokio::test]
async fn readiness_stays_ok_while_every_write_connection_is_busy() {
    // A busy pool is not down: found when every write connection was held and
    // the probe queued behind them until it timed out.
    let app = TestApp::new().await;
    let mut held = Vec::new();
    for _ in 0..5 {
        held.push(app.db.acquire().await.expect("a write connection"));
    }
    let started = std::time::Instant::now();
    let response = app.get("/health/ready", None).await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.text);
    assert!(started.elapsed() < Duration::from_secs(1), "answered without waiting for a connection");
    drop(held);
}

#[tokio::test]
async fn readiness_turns_off_when_the_server_starts_stopping() {
    let app = TestApp::new().await;
    assert_eq!(app.get("/health/ready", None).await.status, StatusCode::OK);
    app.readiness.stop();
    let response = app.get("/health/ready", None).await;
    assert_eq!(response.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.body, json!({"status": "stopping"}));
    assert_eq!(app.get("/health/live", None).await.status, StatusCode::OK, "still serving");
}

#[tokio::test]
async fn json_responses_say_utf8() {
    let app = TestApp::new().await;
    let ok = app.get("/api/tags", None).await;
    assert_eq!(ok.status, StatusCode::OK);
    assert_content_type(&ok, JSON_UTF8);
    assert_json_error(&app.get("/api/profiles/nobody", None).await, StatusCode::NOT_FOUND, "profile");
    assert_json_error(
        &app.post("/api/users", None, json!({"user": {}})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "email",
    );
    assert_json_error(&app.get("/api/user", None).await, StatusCode::UNAUTHORIZED, "token");
}

#[tokio::test]
async fn an_internal_error_is_500_in_the_error_format_without_details() {
    let app = TestApp::new().await;
    app.register("jake").await;
    sqlx::query("DROP TABLE follows").execute(&app.db).await.expect("drop follows");
    let response = app.get("/api/profiles/jake", None).await;
    assert_eq!(response.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(response.body, json!({"errors": {"server": ["internal error, please try again later"]}}));
    assert!(!response.text.contains("follows"), "{}", response.text);
    assert_content_type(&response, JSON_UTF8);
}

/// Inserts user jake, then locks the users table until the returned transaction
/// ends: any statement that reads or writes users waits meanwhile. jake is
/// inserted directly, as registering through the API hashes a password, which may
/// itself take longer than a short time limit; his token comes with the lock.
async fn jake_behind_a_lock(app: &TestApp) -> (sqlx::Transaction<'static, sqlx::Postgres>, String) {
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO users (username, email, password_hash) VALUES ('jake', 'jake@jake.jake', 'x') RETURNING id",
    )
    .fetch_one(&app.db)
    .await
    .expect("insert jake");
    let keys = conduit::auth::JwtKeys::new(
        &secrecy::SecretString::from(crate::support::JWT_SECRET),
        crate::support::TOKEN_LIFETIME,
    );
    let token = keys
        .sign(id, uuid::Uuid::new_v4(), chrono::Utc::now() + chrono::Duration::days(1))
        .expect("sign a token for jake");
    let mut lock = app.db.begin().await.expect("begin");
    sqlx::query("LOCK TABLE users IN ACCESS EXCLUSIVE MODE").execute(&mut *lock).await.expect("lock users");
    (lock, token)
}

#[tokio::test]
async fn a_request_that_takes_too_long_is_503_not_408_in_the_error_format() {
    let app =
        TestApp::with_options(HttpOptions { request_timeout: Duration::from_millis(300), ..Default::default() }).await;
    // Reading the profile waits for the lock, past the timeout.
    let (lock, _) = jake_behind_a_lock(&app).await;
    let request = Request::builder()
        .uri("/api/profiles/jake")
        .header(header::ORIGIN, "http://localhost:4200")
        .body(Body::empty())
        .expect("request");
    let response = app.send(request).await;
    lock.rollback().await.expect("rollback");
    assert_json_error(&response, StatusCode::SERVICE_UNAVAILABLE, "server");
    assert_eq!(response.headers["access-control-allow-origin"], "*", "browsers can read the timeout");
}

/// How many backends of this test's database wait for a lock.
async fn waiting_for_a_lock(app: &TestApp) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'",
    )
    .fetch_one(&app.db)
    .await
    .expect("count waiting backends")
}

#[tokio::test]
async fn statements_still_waiting_when_their_request_times_out_are_cancelled_in_postgresql() {
    // The time limit is the window in which both statements must be seen waiting:
    // generous, for a busy machine.
    let limit = Duration::from_secs(3);
    let app = TestApp::with_options(HttpOptions { request_timeout: limit, ..Default::default() }).await;
    let (lock, token) = jake_behind_a_lock(&app).await;

    // A read (the reads' pool) and a write (the write pool) that both wait on the
    // lock. The write changes the bio: no password to hash before its statement.
    let bio = json!({"user": {"bio": "waiting"}});
    let read = app.get("/api/profiles/jake", None);
    let write = app.put("/api/user", Some(&token), bio);
    let watch = async {
        let mut most = 0;
        let started = std::time::Instant::now();
        while most < 2 && started.elapsed() < limit {
            most = most.max(waiting_for_a_lock(&app).await);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        most
    };
    let (read, write, waited) = tokio::join!(read, write, watch);
    assert_json_error(&read, StatusCode::SERVICE_UNAVAILABLE, "server");
    assert_json_error(&write, StatusCode::SERVICE_UNAVAILABLE, "server");
    assert_eq!(waited, 2, "both statements reached PostgreSQL and waited");

    // The lock is still held: only a cancelled statement stops waiting for it.
    let started = std::time::Instant::now();
    let mut waiting = waiting_for_a_lock(&app).await;
    while waiting > 0 && started.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(20)).await;
        waiting = waiting_for_a_lock(&app).await;
    }
    assert_eq!(waiting, 0, "statements still wait for the lock 10 s after their requests ended");
    lock.rollback().await.expect("rollback");
    assert_eq!(app.get("/api/profiles/jake", None).await.status, StatusCode::OK, "the connections serve again");
    let bio: Option<String> =
        sqlx::query_scalar("SELECT bio FROM users WHERE username = 'jake'").fetch_one(&app.db).await.expect("bio");
    assert_ne!(bio.as_deref(), Some("waiting"), "the update was rolled back");
}

#[tokio::test]
async fn a_statement_postgresql_cancelled_for_its_time_limit_is_a_503_to_retry() {
    let app = TestApp::new().await;
    let options = conduit::db::with_statement_timeout(app.options.clone(), Duration::from_millis(50));
    let pool = conduit::db::connect(options, 1).await.expect("connect");
    let err = sqlx::query("SELECT pg_sleep(5)").execute(&pool).await.expect_err("cancelled after 50 ms");
    let err = conduit::error::Error::from(err);
    assert_eq!(err.status(), StatusCode::SERVICE_UNAVAILABLE, "{err:?}");
}

#[tokio::test]
async fn an_array_where_an_object_is_expected_is_422() {
    // Found by schemathesis and review: serde reads a struct from an array of its
    // fields, so `{"user": []}` updated nothing and `[["email", "password"]]` logged in.
    let app = TestApp::new().await;
    let token = app.register("jake").await;
    let cases = [
        (Method::PUT, "/api/user", json!({"user": []})),
        (Method::POST, "/api/users/login", json!([["jake@example.com", PASSWORD]])),
        (Method::POST, "/api/users/login", json!({"user": ["jake@example.com", PASSWORD]})),
        (Method::POST, "/api/articles", json!({"article": ["t", "d", "b"]})),
    ];
    for (method, uri, body) in cases {
        let response = app.request(method.clone(), uri, Some(&token), Some(body.clone())).await;
        assert_eq!(response.status, StatusCode::UNPROCESSABLE_ENTITY, "{method} {uri} {body}: {}", response.text);
        assert!(response.body["errors"].is_object(), "{}", response.text);
    }
}
