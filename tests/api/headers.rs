//! Security headers on every kind of answer, and the request id's bounds.

use std::time::Duration;

use axum::{
    body::Body,
    http::{HeaderMap, Request, StatusCode, header},
};
use conduit::{app::HttpOptions, edge::headers};

use crate::support::{TestApp, TestResponse};

/// The headers every answer carries, whatever it is.
const ON_EVERY_ANSWER: [(&str, &str); 5] = [
    ("x-content-type-options", "nosniff"),
    ("cache-control", "no-store"),
    ("referrer-policy", "no-referrer"),
    ("x-frame-options", "DENY"),
    ("cross-origin-opener-policy", "same-origin"),
];

#[track_caller]
fn assert_secure(what: &str, headers: &HeaderMap, csp: &str) {
    for (name, value) in ON_EVERY_ANSWER.into_iter().chain([("content-security-policy", csp)]) {
        let values: Vec<_> = headers.get_all(name).iter().collect();
        assert_eq!(values, [value], "{what}: {name} in {headers:?}");
    }
    for name in ["server", "x-powered-by", "strict-transport-security"] {
        assert!(!headers.contains_key(name), "{what}: {name} in {headers:?}");
    }
}

async fn get(app: &TestApp, uri: &str, token: Option<&str>) -> TestResponse {
    let response = app.get(uri, token).await;
    assert!(!response.status.is_server_error(), "{uri}: {}", response.status);
    response
}

#[tokio::test]
async fn every_answer_carries_the_security_headers_and_the_docs_their_own_policy() {
    let app = TestApp::new().await;
    let token = app.register("jake").await;

    let public = get(&app, "/api/articles", None).await;
    assert_eq!(public.status, StatusCode::OK);
    assert_secure("a public read", &public.headers, headers::API_CSP);

    let private = get(&app, "/api/user", Some(&token)).await;
    assert_eq!(private.status, StatusCode::OK);
    assert_secure("an authenticated read", &private.headers, headers::API_CSP);

    let error = get(&app, "/api/profiles/nobody", None).await;
    assert_eq!(error.status, StatusCode::NOT_FOUND);
    assert_secure("an error", &error.headers, headers::API_CSP);

    let login = app.post("/api/users/login", None, serde_json::json!({"user": {}})).await;
    assert_eq!(login.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_secure("an auth endpoint", &login.headers, headers::API_CSP);

    let docs = get(&app, "/docs/", None).await;
    assert_eq!(docs.status, StatusCode::OK);
    assert!(docs.headers[header::CONTENT_TYPE].to_str().is_ok_and(|t| t.starts_with("text/html")));
    assert_secure("the docs", &docs.headers, headers::DOCS_CSP);
    let script = get(&app, "/docs/swagger-ui-bundle.js", None).await;
    assert_secure("the docs' script", &script.headers, headers::DOCS_CSP);

    let preflight = Request::options("/api/articles")
        .header(header::ORIGIN, "https://app.example.com")
        .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
        .body(Body::empty())
        .expect("request");
    let preflight = app.send(preflight).await;
    assert!(preflight.status.is_success(), "{}", preflight.status);
    assert_secure("a CORS preflight", &preflight.headers, headers::API_CSP);
}

#[tokio::test]
async fn strict_transport_security_is_sent_only_when_a_max_age_is_configured() {
    let app = TestApp::with_options(HttpOptions { hsts: Some(Duration::from_secs(600)), ..Default::default() }).await;
    for uri in ["/api/tags", "/api/nope", "/docs/"] {
        let response = app.get(uri, None).await;
        assert_eq!(response.headers["strict-transport-security"], "max-age=600; includeSubDomains", "{uri}");
    }
}

#[tokio::test]
async fn swagger_ui_does_not_keep_the_pasted_token_in_local_storage() {
    let app = TestApp::new().await;
    let initializer = app.get("/docs/swagger-initializer.js", None).await;
    assert_eq!(initializer.status, StatusCode::OK);
    let config: String = initializer.text.split_whitespace().collect();
    assert!(config.contains("\"persistAuthorization\":false"), "{}", initializer.text);
}

async fn echoed_id(app: &TestApp, id: &[u8]) -> String {
    let request = Request::get("/api/tags").header("x-request-id", id).body(Body::empty()).expect("request");
    let response = app.send(request).await;
    assert_eq!(response.status, StatusCode::OK);
    let ids: Vec<_> = response.headers.get_all("x-request-id").iter().collect();
    assert_eq!(ids.len(), 1, "{:?}", response.headers);
    ids[0].to_str().expect("ascii").to_owned()
}

#[tokio::test]
async fn a_long_or_odd_request_id_is_replaced_by_a_new_one() {
    let app = TestApp::new().await;
    let kept = "0c7d2f5e-8c0e-4d6b-9b1f-2f0d7f3f5a11";
    assert_eq!(echoed_id(&app, kept.as_bytes()).await, kept);

    let huge = "a".repeat(300 * 1024);
    for sent in [huge.as_bytes(), b"has spaces in it", b"quote\"and;semicolon", "a".repeat(65).as_bytes()] {
        let echoed = echoed_id(&app, sent).await;
        assert_ne!(echoed.as_bytes(), sent);
        assert!(uuid_like(&echoed), "{echoed}");
    }
}

fn uuid_like(id: &str) -> bool {
    id.len() == 36 && id.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
}
