//! Sessions: refresh tokens with rotation and reuse detection, the refresh
//! cookie and its CSRF check, logout, the session list, and revocation heard by
//! every server (docs/auth.md).

use std::time::Duration;

use axum::{
    body::Body,
    http::{HeaderMap, Method, Request, StatusCode, header},
};
use conduit::{
    app::{self, AppState, HttpOptions},
    auth::Revocations,
    config::CorsOrigins,
};
use serde_json::{Value, json};

use crate::support::{PASSWORD, TOKEN_LIFETIME, TestApp, TestResponse, is_millis_timestamp};

const COOKIE: &str = "__Host-conduit-refresh";

/// Logs `username` in; with `body`, asks for the refresh token in the body.
async fn login(app: &TestApp, username: &str, body: bool) -> TestResponse {
    let login = json!({"user": {"email": format!("{username}@example.com"), "password": PASSWORD}});
    let mut request = Request::post("/api/users/login")
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::USER_AGENT, format!("test-agent of {username}"));
    if body {
        request = request.header("x-refresh-token-delivery", "body");
    }
    let response = app.send(request.body(Body::from(login.to_string())).expect("valid request")).await;
    assert_eq!(response.status, StatusCode::OK, "login {username}: {}", response.text);
    response
}

/// A signed-in client: its access token and refresh token.
struct Signed {
    access: String,
    refresh: String,
}

/// Logs `username` in, with the refresh token in the body.
async fn sign_in(app: &TestApp, username: &str) -> Signed {
    signed(&login(app, username, true).await)
}

fn signed(response: &TestResponse) -> Signed {
    let user = &response.body["user"];
    Signed {
        access: user["token"].as_str().expect("token").to_owned(),
        refresh: user["refreshToken"].as_str().expect("refreshToken in the body").to_owned(),
    }
}

/// The refresh token of the response's `Set-Cookie`, with the cookie's attributes.
fn set_cookie(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::SET_COOKIE)?.to_str().expect("ASCII");
    let (pair, attributes) = value.split_once(';').unwrap_or((value, ""));
    let token = pair.strip_prefix(COOKIE)?.strip_prefix('=')?;
    Some((token.to_owned(), attributes.trim().to_owned()))
}

async fn refresh_with_body(app: &TestApp, refresh: &str) -> TestResponse {
    app.post("/api/auth/refresh", None, json!({"refreshToken": refresh})).await
}

async fn refresh_with_cookie(app: &TestApp, refresh: &str, origin: Option<&str>) -> TestResponse {
    let mut request = Request::post("/api/auth/refresh")
        .header(header::HOST, "api.conduit.test")
        .header(header::COOKIE, format!("theme=dark; {COOKIE}={refresh}"));
    if let Some(origin) = origin {
        request = request.header(header::ORIGIN, origin);
    }
    app.send(request.body(Body::empty()).expect("valid request")).await
}

#[track_caller]
fn assert_revoked(response: &TestResponse) {
    assert_eq!(response.status, StatusCode::UNAUTHORIZED, "{}", response.text);
    assert_eq!(response.body, json!({"errors": {"token": ["has been revoked"]}}));
}

#[track_caller]
fn assert_refresh_refused(response: &TestResponse) {
    assert_eq!(response.status, StatusCode::UNAUTHORIZED, "{}", response.text);
    assert_eq!(response.body, json!({"errors": {"refresh_token": ["is invalid"]}}));
}

async fn sessions(app: &TestApp, access: &str) -> Vec<Value> {
    let response = app.get("/api/user/sessions", Some(access)).await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.text);
    response.body["sessions"].as_array().expect("a list").clone()
}

#[tokio::test]
async fn register_and_login_set_the_refresh_cookie_with_every_attribute() {
    let app = TestApp::new().await;
    let register = app
        .post(
            "/api/users",
            None,
            json!({"user": {"username": "jake", "email": "jake@example.com", "password": PASSWORD}}),
        )
        .await;
    assert_eq!(register.status, StatusCode::CREATED, "{}", register.text);
    let login = login(&app, "jake", false).await;
    for response in [&register, &login] {
        let (token, attributes) = set_cookie(&response.headers).expect("the refresh cookie");
        assert_eq!(token.len(), 43, "256 bits in base64url: {token}");
        assert!(token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'), "{token}");
        assert_eq!(attributes, format!("HttpOnly; Secure; SameSite=Strict; Path=/; Max-Age={}", 14 * 86_400));
        assert!(response.body["user"].get("refreshToken").is_none(), "not in the body: {}", response.text);
    }
    // Only its hash is stored.
    let (token, _) = set_cookie(&login.headers).expect("cookie");
    let stored: i64 =
        sqlx::query_scalar("SELECT count(*) FROM refresh_tokens WHERE hash = sha256(convert_to($1, 'UTF8'))")
            .bind(&token)
            .fetch_one(&app.db)
            .await
            .expect("count");
    assert_eq!(stored, 1);
    let plain: i64 = sqlx::query_scalar("SELECT count(*) FROM refresh_tokens WHERE hash = convert_to($1, 'UTF8')")
        .bind(&token)
        .fetch_one(&app.db)
        .await
        .expect("count");
    assert_eq!(plain, 0);
}

#[tokio::test]
async fn a_client_that_asks_gets_the_refresh_token_in_the_body_and_no_cookie() {
    let app = TestApp::new().await;
    app.register("jake").await;
    let response = login(&app, "jake", true).await;
    assert!(set_cookie(&response.headers).is_none(), "{:?}", response.headers);
    let signed = signed(&response);
    assert_eq!(signed.refresh.len(), 43);
    assert_eq!(app.get("/api/user", Some(&signed.access)).await.status, StatusCode::OK);
}

#[tokio::test]
async fn the_session_list_shows_each_sign_in_newest_first_with_the_current_one_marked() {
    let app = TestApp::new().await;
    let first = app.register("jake").await;
    let second = sign_in(&app, "jake").await;
    let listed = sessions(&app, &second.access).await;
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert_eq!(listed[0]["method"], "password");
    assert_eq!(listed[0]["current"], true);
    assert_eq!(listed[0]["userAgent"], "test-agent of jake");
    assert_eq!(listed[1]["method"], "register");
    assert_eq!(listed[1]["current"], false);
    assert_eq!(listed[1]["userAgent"], "");
    for session in &listed {
        assert!(is_millis_timestamp(&session["createdAt"]), "{session}");
        assert!(is_millis_timestamp(&session["lastUsedAt"]), "{session}");
        // Called in-process, the router has no peer address.
        assert_eq!(session["clientAddress"], Value::Null);
        assert!(uuid::Uuid::try_parse(session["id"].as_str().expect("id")).is_ok(), "{session}");
    }
    let from_first = sessions(&app, &first).await;
    assert_eq!(from_first[1]["current"], true);
    assert_eq!(from_first[0]["current"], false);
    // Another user sees none of them.
    let bob = app.register("bob").await;
    assert_eq!(sessions(&app, &bob).await.len(), 1);
}

#[tokio::test]
async fn a_long_user_agent_is_kept_to_256_characters() {
    let app = TestApp::new().await;
    let body = json!({"user": {"username": "jake", "email": "jake@example.com", "password": PASSWORD}});
    let request = Request::post("/api/users")
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::USER_AGENT, "x".repeat(1000))
        .body(Body::from(body.to_string()))
        .expect("valid request");
    let response = app.send(request).await;
    let token = response.body["user"]["token"].as_str().expect("token").to_owned();
    assert_eq!(sessions(&app, &token).await[0]["userAgent"], "x".repeat(256));
}

#[tokio::test]
async fn a_refresh_gives_new_tokens_and_retires_the_old_refresh_token() {
    let app = TestApp::new().await;
    app.register("jake").await;
    let first = sign_in(&app, "jake").await;
    let before = sessions(&app, &first.access).await[0]["lastUsedAt"].clone();
    tokio::time::sleep(Duration::from_millis(5)).await; // so that last used moves

    let refreshed = refresh_with_body(&app, &first.refresh).await;
    assert_eq!(refreshed.status, StatusCode::OK, "{}", refreshed.text);
    assert_eq!(refreshed.body["user"]["username"], "jake");
    assert!(set_cookie(&refreshed.headers).is_none(), "a body token comes back in the body");
    let second = signed(&refreshed);
    assert_ne!(second.refresh, first.refresh);
    assert_eq!(app.get("/api/user", Some(&second.access)).await.status, StatusCode::OK);
    // The same session, marked used.
    let listed = sessions(&app, &second.access).await;
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0]["current"], true);
    assert_ne!(listed[0]["lastUsedAt"], before);
    // The child can be exchanged in turn.
    let third = refresh_with_body(&app, &second.refresh).await;
    assert_eq!(third.status, StatusCode::OK, "{}", third.text);
}

#[tokio::test]
async fn a_reused_refresh_token_revokes_the_whole_session() {
    let app = TestApp::new().await;
    let other = app.register("jake").await;
    let victim = sign_in(&app, "jake").await;
    let rotated = signed(&refresh_with_body(&app, &victim.refresh).await);

    // The thief presents the retired token.
    assert_refresh_refused(&refresh_with_body(&app, &victim.refresh).await);
    // Thief and victim are both signed out: every token of the session is refused.
    assert_revoked(&app.get("/api/user", Some(&rotated.access)).await);
    assert_revoked(&app.get("/api/user", Some(&victim.access)).await);
    assert_refresh_refused(&refresh_with_body(&app, &rotated.refresh).await);
    // Another session of the same user is untouched.
    assert_eq!(app.get("/api/user", Some(&other)).await.status, StatusCode::OK);
    let revoked: i64 = sqlx::query_scalar("SELECT count(*) FROM sessions WHERE revoked_at IS NOT NULL")
        .fetch_one(&app.db)
        .await
        .expect("count");
    assert_eq!(revoked, 1);
}

#[tokio::test]
async fn two_refreshes_of_the_same_token_at_once_never_both_succeed_and_revoke_the_session() {
    let app = TestApp::new().await;
    app.register("jake").await;
    for round in 0..5 {
        let signed_in = sign_in(&app, "jake").await;
        let requests = [0, 1].map(|_| {
            let router = app.router.clone();
            let body = json!({"refreshToken": signed_in.refresh}).to_string();
            tokio::spawn(async move {
                let request = Request::post("/api/auth/refresh")
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(Body::from(body))
                    .expect("valid request");
                let response = tower::ServiceExt::oneshot(router, request).await.expect("infallible");
                let status = response.status();
                let bytes = http_body_util::BodyExt::collect(response.into_body()).await.expect("body").to_bytes();
                (status, serde_json::from_slice::<Value>(&bytes).unwrap_or(Value::Null))
            })
        });
        let mut answers = Vec::new();
        for request in requests {
            answers.push(request.await.expect("joins"));
        }
        let winners: Vec<_> = answers.iter().filter(|(status, _)| *status == StatusCode::OK).collect();
        assert_eq!(winners.len(), 1, "round {round}: {answers:?}");
        assert!(answers.iter().any(|(status, _)| *status == StatusCode::UNAUTHORIZED), "round {round}: {answers:?}");
        // No grace window: the winner's new tokens die with the session.
        let winner = winners[0].1["user"]["token"].as_str().expect("token");
        assert_revoked(&app.get("/api/user", Some(winner)).await);
        assert_revoked(&app.get("/api/user", Some(&signed_in.access)).await);
    }
}

#[tokio::test]
async fn unknown_empty_and_expired_refresh_tokens_are_refused_without_revoking() {
    let app = TestApp::new().await;
    app.register("jake").await;
    let signed_in = sign_in(&app, "jake").await;
    assert_refresh_refused(&refresh_with_body(&app, "not-a-token-we-made").await);
    assert_refresh_refused(&app.send(Request::post("/api/auth/refresh").body(Body::empty()).expect("valid")).await);
    assert_refresh_refused(&refresh_with_body(&app, "").await);
    assert_eq!(app.get("/api/user", Some(&signed_in.access)).await.status, StatusCode::OK);

    sqlx::query("UPDATE refresh_tokens SET expires_at = now() - interval '1 second'")
        .execute(&app.db)
        .await
        .expect("expire");
    assert_refresh_refused(&refresh_with_body(&app, &signed_in.refresh).await);
    assert_eq!(app.get("/api/user", Some(&signed_in.access)).await.status, StatusCode::OK, "not a reuse");
}

#[tokio::test]
async fn a_session_past_its_absolute_lifetime_cannot_be_refreshed() {
    let app = TestApp::new().await;
    app.register("jake").await;
    let signed_in = sign_in(&app, "jake").await;
    sqlx::query("UPDATE sessions SET expires_at = now() - interval '1 second'")
        .execute(&app.db)
        .await
        .expect("end the sessions");
    assert_refresh_refused(&refresh_with_body(&app, &signed_in.refresh).await);
}

#[tokio::test]
async fn a_sign_in_deletes_the_users_ended_sessions_and_keeps_recently_revoked_ones() {
    let app = TestApp::new().await;
    app.register("jake").await;
    app.register("mary").await;
    let (ended, old_revoked, recent_revoked) =
        (sign_in(&app, "jake").await, sign_in(&app, "jake").await, sign_in(&app, "jake").await);
    let marys = sign_in(&app, "mary").await;
    let by_token = |signed: &Signed| crate::support::session_id(&signed.access);
    // One past its end, one revoked longer ago than a token lives, one revoked just
    // now (its tokens may still come: it must stay for the revocation sets), and
    // Mary's, ended too: only Jake's sign-in prunes, and only Jake's sessions.
    let backdate = "UPDATE sessions SET expires_at = CASE WHEN id = $1 OR id = $4 THEN now() - interval '1 second'
                        ELSE expires_at END,
                        revoked_at = CASE WHEN id = $2 THEN now() - $5 * interval '1 second' - interval '2 minutes'
                                          WHEN id = $3 THEN now() ELSE revoked_at END";
    sqlx::query(backdate)
        .bind(by_token(&ended))
        .bind(by_token(&old_revoked))
        .bind(by_token(&recent_revoked))
        .bind(by_token(&marys))
        .bind(TOKEN_LIFETIME.as_secs_f64())
        .execute(&app.db)
        .await
        .expect("age the sessions");
    let count = async |user: &str| -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM sessions s JOIN users u ON u.id = s.user_id WHERE u.username = $1")
            .bind(user)
            .fetch_one(&app.db)
            .await
            .expect("count")
    };
    assert_eq!(count("jake").await, 4, "registering opened one too");
    sign_in(&app, "jake").await;
    let left: Vec<uuid::Uuid> = sqlx::query_scalar(
        "SELECT s.id FROM sessions s JOIN users u ON u.id = s.user_id WHERE u.username = 'jake' ORDER BY s.created_at",
    )
    .fetch_all(&app.db)
    .await
    .expect("Jake's sessions");
    assert_eq!(left.len(), 3, "registering's, the recently revoked one and the new one: {left:?}");
    assert_eq!(left[1], by_token(&recent_revoked));
    assert!(!left.contains(&by_token(&ended)) && !left.contains(&by_token(&old_revoked)));
    assert_eq!(count("mary").await, 2, "another user's sessions are not touched (registering's and the ended one)");
    let orphans: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM refresh_tokens t WHERE NOT EXISTS (SELECT 1 FROM sessions s WHERE s.id = t.session_id)",
    )
    .fetch_one(&app.db)
    .await
    .expect("count");
    assert_eq!(orphans, 0);
}

#[tokio::test]
async fn a_cookie_refresh_from_an_allowed_origin_rotates_the_cookie() {
    let app = TestApp::new().await;
    app.register("jake").await;
    let (token, _) = set_cookie(&login(&app, "jake", false).await.headers).expect("cookie");
    // With CORS `*` (development), the request's own host and loopback hosts.
    let mut current = token;
    for origin in ["https://api.conduit.test", "http://localhost:3000", "http://127.0.0.1:5173", "http://[::1]:8080"] {
        let response = refresh_with_cookie(&app, &current, Some(origin)).await;
        assert_eq!(response.status, StatusCode::OK, "{origin}: {}", response.text);
        assert!(response.body["user"].get("refreshToken").is_none(), "a cookie token comes back in the cookie");
        let (next, attributes) = set_cookie(&response.headers).expect("a new cookie");
        assert!(attributes.starts_with("HttpOnly; Secure; SameSite=Strict; Path=/;"), "{attributes}");
        assert_ne!(next, current);
        current = next;
    }
}

#[tokio::test]
async fn a_cross_site_cookie_refresh_is_refused_and_leaves_the_token_usable() {
    let app = TestApp::new().await;
    app.register("jake").await;
    let (token, _) = set_cookie(&login(&app, "jake", false).await.headers).expect("cookie");
    for origin in [Some("https://evil.example"), Some("null"), Some("https://localhost.evil.example"), None] {
        let response = refresh_with_cookie(&app, &token, origin).await;
        assert_eq!(response.status, StatusCode::FORBIDDEN, "{origin:?}: {}", response.text);
        assert_eq!(response.body, json!({"errors": {"origin": ["is not allowed"]}}));
    }
    // Not rotated: the token still works, once.
    let response = refresh_with_cookie(&app, &token, Some("http://localhost:4200")).await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.text);
}

#[tokio::test]
async fn with_configured_origins_only_those_may_use_the_cookie_and_cors_allows_credentials() {
    let origins = CorsOrigins::List(vec!["https://app.conduit.test".to_owned()]);
    let app = TestApp::with_options(HttpOptions {
        cors_origins: origins,
        request_timeout: Duration::from_secs(30),
        ..Default::default()
    })
    .await;
    app.register("jake").await;
    let (token, _) = set_cookie(&login(&app, "jake", false).await.headers).expect("cookie");
    for origin in ["http://localhost:3000", "https://api.conduit.test", "https://evil.example"] {
        let response = refresh_with_cookie(&app, &token, Some(origin)).await;
        assert_eq!(response.status, StatusCode::FORBIDDEN, "{origin}: {}", response.text);
    }
    let response = refresh_with_cookie(&app, &token, Some("https://app.conduit.test")).await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.text);
    assert_eq!(response.headers["access-control-allow-credentials"], "true");
    assert_eq!(response.headers["access-control-allow-origin"], "https://app.conduit.test");
}

#[tokio::test]
async fn logout_revokes_this_session_only_and_clears_the_cookie() {
    let app = TestApp::new().await;
    let other = app.register("jake").await;
    let signed_in = sign_in(&app, "jake").await;
    let response = app.post("/api/auth/logout", Some(&signed_in.access), json!({})).await;
    assert_eq!(response.status, StatusCode::NO_CONTENT, "{}", response.text);
    let cleared = response.headers[header::SET_COOKIE].to_str().expect("ASCII");
    assert!(cleared.starts_with(&format!("{COOKIE}=;")) && cleared.ends_with("Max-Age=0"), "{cleared}");
    assert_revoked(&app.get("/api/user", Some(&signed_in.access)).await);
    assert_refresh_refused(&refresh_with_body(&app, &signed_in.refresh).await);
    assert_eq!(app.get("/api/user", Some(&other)).await.status, StatusCode::OK);
    assert_eq!(sessions(&app, &other).await.len(), 1);
}

#[tokio::test]
async fn logout_all_revokes_every_session_of_the_user_and_no_one_elses() {
    let app = TestApp::new().await;
    let first = app.register("jake").await;
    let second = sign_in(&app, "jake").await;
    let bob = app.register("bob").await;
    let response = app.post("/api/auth/logout-all", Some(&first), json!({})).await;
    assert_eq!(response.status, StatusCode::NO_CONTENT, "{}", response.text);
    assert_revoked(&app.get("/api/user", Some(&first)).await);
    assert_revoked(&app.get("/api/user", Some(&second.access)).await);
    assert_refresh_refused(&refresh_with_body(&app, &second.refresh).await);
    assert_eq!(app.get("/api/user", Some(&bob)).await.status, StatusCode::OK);
}

#[tokio::test]
async fn a_user_can_revoke_their_own_session_and_no_one_elses() {
    let app = TestApp::new().await;
    let jake = app.register("jake").await;
    let laptop = sign_in(&app, "jake").await;
    let bob = app.register("bob").await;
    let laptop_id = sessions(&app, &laptop.access).await[0]["id"].as_str().expect("id").to_owned();
    let bobs_id = sessions(&app, &bob).await[0]["id"].as_str().expect("id").to_owned();

    let not_found = json!({"errors": {"session": ["not found"]}});
    for id in [bobs_id.as_str(), "8d7f6e5c-4b3a-4c2d-9e1f-0a1b2c3d4e5f", "not-a-uuid"] {
        let response = app.delete(&format!("/api/user/sessions/{id}"), Some(&jake)).await;
        assert_eq!(response.status, StatusCode::NOT_FOUND, "{id}: {}", response.text);
        assert_eq!(response.body, not_found);
    }
    assert_eq!(app.get("/api/user", Some(&bob)).await.status, StatusCode::OK, "bob's session lives");

    let response = app.delete(&format!("/api/user/sessions/{laptop_id}"), Some(&jake)).await;
    assert_eq!(response.status, StatusCode::NO_CONTENT, "{}", response.text);
    assert_revoked(&app.get("/api/user", Some(&laptop.access)).await);
    assert_eq!(app.get("/api/user", Some(&jake)).await.status, StatusCode::OK);
    // Revoked already: gone from the list, and a second revocation finds nothing.
    assert_eq!(sessions(&app, &jake).await.len(), 1);
    let again = app.delete(&format!("/api/user/sessions/{laptop_id}"), Some(&jake)).await;
    assert_eq!(again.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_new_password_or_email_revokes_every_other_session_and_keeps_this_one() {
    let app = TestApp::new().await;
    let current = app.register("jake").await;
    let other = sign_in(&app, "jake").await;
    let update = |user: Value| app.put("/api/user", Some(&current), json!({"user": user}));

    // Neither a new bio nor the same email again changes the credentials.
    assert_eq!(update(json!({"bio": "hi"})).await.status, StatusCode::OK);
    assert_eq!(update(json!({"email": "jake@example.com"})).await.status, StatusCode::OK);
    assert_eq!(app.get("/api/user", Some(&other.access)).await.status, StatusCode::OK);

    assert_eq!(update(json!({"password": "a brand new passphrase"})).await.status, StatusCode::OK);
    assert_revoked(&app.get("/api/user", Some(&other.access)).await);
    assert_refresh_refused(&refresh_with_body(&app, &other.refresh).await);
    assert_eq!(app.get("/api/user", Some(&current)).await.status, StatusCode::OK);

    let email_login = json!({"user": {"email": "jake@example.com", "password": "a brand new passphrase"}});
    let another = app.post("/api/users/login", None, email_login).await;
    let another = another.body["user"]["token"].as_str().expect("token").to_owned();
    assert_eq!(update(json!({"email": "jacob@example.com"})).await.status, StatusCode::OK);
    assert_revoked(&app.get("/api/user", Some(&another)).await);
    assert_eq!(app.get("/api/user", Some(&current)).await.status, StatusCode::OK);
}

/// A second server on the same database, with its own subscription.
async fn second_server(app: &TestApp) -> (axum::Router, Revocations) {
    let revocations = Revocations::follow(&app.options, TOKEN_LIFETIME).await.expect("follow revocations");
    let state = AppState { revocations: revocations.clone(), ..app.state.clone() };
    let options = HttpOptions { request_timeout: Duration::from_secs(30), ..Default::default() };
    (app::router(state, &options), revocations)
}

async fn status_on(router: &axum::Router, token: &str) -> StatusCode {
    let request = Request::builder()
        .method(Method::GET)
        .uri("/api/user")
        .header(header::AUTHORIZATION, format!("Token {token}"))
        .body(Body::empty())
        .expect("valid request");
    tower::ServiceExt::oneshot(router.clone(), request).await.expect("infallible").status()
}

#[tokio::test]
async fn a_logout_on_one_server_is_refused_by_another_within_a_second() {
    let app = TestApp::new().await;
    app.register("jake").await;
    let signed_in = sign_in(&app, "jake").await;
    let (other, _) = second_server(&app).await;
    assert_eq!(status_on(&other, &signed_in.access).await, StatusCode::OK);

    let started = tokio::time::Instant::now();
    let response = app.post("/api/auth/logout", Some(&signed_in.access), json!({})).await;
    assert_eq!(response.status, StatusCode::NO_CONTENT);
    // At once on the server that revoked it.
    assert_revoked(&app.get("/api/user", Some(&signed_in.access)).await);
    let deadline = started + Duration::from_secs(1);
    while status_on(&other, &signed_in.access).await != StatusCode::UNAUTHORIZED {
        assert!(tokio::time::Instant::now() < deadline, "the other server still accepts the token after 1 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(1), "{elapsed:?}");
}

#[tokio::test]
async fn a_server_started_after_a_revocation_refuses_the_sessions_tokens_at_once() {
    let app = TestApp::new().await;
    app.register("jake").await;
    let signed_in = sign_in(&app, "jake").await;
    let response = app.post("/api/auth/logout-all", Some(&signed_in.access), json!({})).await;
    assert_eq!(response.status, StatusCode::NO_CONTENT);
    let (later, revocations) = second_server(&app).await;
    assert_eq!(status_on(&later, &signed_in.access).await, StatusCode::UNAUTHORIZED);
    let ids: Vec<uuid::Uuid> =
        sqlx::query_scalar("SELECT id FROM sessions").fetch_all(&app.db).await.expect("session ids");
    assert_eq!(ids.len(), 2);
    assert!(ids.iter().all(|id| revocations.session_revoked(*id)));
}

#[tokio::test]
async fn one_update_revoking_many_sessions_announces_each() {
    let app = TestApp::new().await;
    app.register("jake").await;
    let tokens = [sign_in(&app, "jake").await, sign_in(&app, "jake").await, sign_in(&app, "jake").await];
    let (other, _) = second_server(&app).await;
    // Revoked behind the servers' backs, as an operator would.
    sqlx::query("UPDATE sessions SET revoked_at = now()").execute(&app.db).await.expect("revoke all");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
    for signed_in in &tokens {
        while status_on(&other, &signed_in.access).await != StatusCode::UNAUTHORIZED {
            assert!(tokio::time::Instant::now() < deadline, "not every revocation was heard of within 1 s");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// The events of target `security`, each as its fields' text.
#[derive(Clone, Default)]
struct SecurityEvents(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for SecurityEvents {
    fn enabled(&self, metadata: &tracing::Metadata<'_>, _: tracing_subscriber::layer::Context<'_, S>) -> bool {
        metadata.target() == "security"
    }

    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        struct Fields(String);
        impl tracing::field::Visit for Fields {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                self.0.push_str(&format!("{}={value:?} ", field.name()));
            }
        }
        let mut fields = Fields(String::new());
        event.record(&mut fields);
        self.0.lock().expect("not poisoned").push(fields.0);
    }
}

#[tokio::test]
async fn a_reused_refresh_token_is_logged_as_a_security_event_without_the_token() {
    // A second subscriber registered for the process, so that callsite interest
    // is asked of every live subscriber (see tests/api/statements.rs).
    static SECOND: std::sync::LazyLock<tracing::Dispatch> =
        std::sync::LazyLock::new(|| tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default()));
    std::sync::LazyLock::force(&SECOND);
    let app = TestApp::new().await;
    app.register("jake").await;
    let signed_in = sign_in(&app, "jake").await;
    let session = sessions(&app, &signed_in.access).await[0]["id"].as_str().expect("id").to_owned();
    assert_eq!(refresh_with_body(&app, &signed_in.refresh).await.status, StatusCode::OK);

    let events = SecurityEvents::default();
    let subscriber = tracing_subscriber::layer::SubscriberExt::with(tracing_subscriber::registry(), events.clone());
    let response = {
        let _guard = tracing::subscriber::set_default(subscriber);
        tracing::callsite::rebuild_interest_cache();
        refresh_with_body(&app, &signed_in.refresh).await
    };
    assert_refresh_refused(&response);
    let logged = events.0.lock().expect("not poisoned").clone();
    assert_eq!(logged.len(), 1, "{logged:?}");
    assert!(logged[0].contains("refresh_token_reused") && logged[0].contains(&session), "{}", logged[0]);
    assert!(!logged[0].contains(&signed_in.refresh), "the token is never logged: {}", logged[0]);
}
