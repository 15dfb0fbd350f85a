//! Authentication: the `Authorization` header on required and optional endpoints.

use axum::{
    body::Body,
    http::{Method, Request, StatusCode, header},
};
use jsonwebtoken::{EncodingKey, Header};
use serde_json::{Value, json};

use std::{sync::Arc, time::Duration};

use conduit::{
    app::{AppState, HttpOptions},
    auth::{JwtKeys, PasswordHasher, Revocations},
};
use secrecy::SecretString;

use crate::support::{JWT_SECRET, TOKEN_LIFETIME, TestApp, TestResponse};

fn article() -> Value {
    json!({"article": {"title": "A title", "description": "about it", "body": "the body", "tagList": []}})
}

/// Sends `method uri` with the raw `Authorization` header value `authorization`.
async fn send_with_authorization(app: &TestApp, method: Method, uri: &str, authorization: &str) -> TestResponse {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::AUTHORIZATION, authorization)
        .body(Body::empty())
        .expect("valid request");
    app.send(request).await
}

/// A token signed with `secret`, with the server's claims for `sub` and the given
/// issue and expiry times (seconds from now, may be negative), naming a session
/// (`sid`) of its own that no one revoked.
fn forge(secret: &str, sub: &str, issued: i64, expires: i64) -> String {
    let now = i64::try_from(jsonwebtoken::get_current_timestamp()).expect("a sane clock");
    let sid = uuid::Uuid::new_v4().to_string();
    let claims = json!({
        "sub": sub, "iss": "conduit", "aud": "conduit-api", "iat": now + issued, "exp": now + expires, "sid": sid,
    });
    jsonwebtoken::encode(&Header::default(), &claims, &EncodingKey::from_secret(secret.as_bytes())).expect("encodes")
}

/// A token as servers signed them before sessions: no `sid`.
fn forge_without_session(secret: &str, sub: &str) -> String {
    let now = jsonwebtoken::get_current_timestamp();
    let claims = json!({"sub": sub, "iss": "conduit", "aud": "conduit-api", "iat": now, "exp": now + 3600});
    jsonwebtoken::encode(&Header::default(), &claims, &EncodingKey::from_secret(secret.as_bytes())).expect("encodes")
}

async fn user_id(app: &TestApp, username: &str) -> i64 {
    sqlx::query_scalar("SELECT id FROM users WHERE username = $1")
        .bind(username)
        .fetch_one(&app.db)
        .await
        .expect("user exists")
}

/// The challenge of a refused token whose body message is `message`.
fn challenge(message: &str) -> String {
    format!(r#"Token error="invalid_token", error_description="{message}""#)
}

/// Asserts that a public read (`what`) with a refused token got the anonymous
/// answer (`anonymous`) and the challenge for `message`.
#[track_caller]
fn assert_read_as_anonymous_with_challenge(
    what: &str,
    response: &TestResponse,
    anonymous: &TestResponse,
    message: &str,
) {
    assert_eq!(response.status, anonymous.status, "{what}: {}", response.text);
    assert_eq!(response.body, anonymous.body, "{what} reads as anonymous");
    assert_eq!(response.headers[header::WWW_AUTHENTICATE], challenge(message).as_str(), "{what}");
}

/// Asserts the 401 of the API: errors under `token` and a `WWW-Authenticate` challenge.
#[track_caller]
fn assert_unauthorized(response: &TestResponse) {
    response.assert_error(StatusCode::UNAUTHORIZED, "token");
    assert!(response.headers.contains_key(header::WWW_AUTHENTICATE), "no WWW-Authenticate in {:?}", response.headers);
}

#[tokio::test]
async fn a_missing_token_on_a_protected_endpoint_is_401() {
    let app = TestApp::new().await;
    app.register("jake").await;
    let requests = [
        (Method::GET, "/api/user", None),
        (Method::PUT, "/api/user", Some(json!({"user": {"bio": "b"}}))),
        (Method::POST, "/api/articles", Some(article())),
        (Method::GET, "/api/articles/feed", None),
        (Method::POST, "/api/profiles/jake/follow", Some(json!({}))),
        (Method::DELETE, "/api/profiles/jake/follow", None),
    ];
    for (method, uri, body) in requests {
        let response = app.request(method.clone(), uri, None, body).await;
        assert_unauthorized(&response);
        assert_eq!(response.body, json!({"errors": {"token": ["is missing"]}}), "{method} {uri}");
        assert_eq!(
            response.headers[header::WWW_AUTHENTICATE],
            "Token",
            "no error code without credentials (RFC 6750, 3.1)"
        );
    }
    assert_eq!(app.count("articles").await, 0);
    assert_eq!(app.count("follows").await, 0);
}

#[tokio::test]
async fn malformed_expired_and_badly_signed_tokens_are_401() {
    let app = TestApp::new().await;
    app.register("jake").await;
    let id = user_id(&app, "jake").await.to_string();

    // The forging itself is right: a token with the right secret and fresh claims works.
    let valid = forge(JWT_SECRET, &id, 0, 3600);
    assert_eq!(app.get("/api/user", Some(&valid)).await.status, StatusCode::OK);

    let other_secret = "another-secret-another-secret-another!";
    let headers = [
        format!("Token {}", forge(JWT_SECRET, &id, -7200, -3600)),
        format!("Token {}", forge(JWT_SECRET, &id, 3600, 7200)),
        format!("Token {}", forge(other_secret, &id, 0, 3600)),
        format!("Token {}", forge(JWT_SECRET, "not-a-number", 0, 3600)),
        // Signed before sessions existed: everyone signs in once after the upgrade.
        format!("Token {}", forge_without_session(JWT_SECRET, &id)),
        "Token garbage".to_owned(),
        "Token a.b.c".to_owned(),
        "Token ".to_owned(),
        "Token".to_owned(),
        valid.clone(),
        "Basic xxx".to_owned(),
        format!("Basic {valid}"),
    ];
    for authorization in &headers {
        assert_unauthorized(&send_with_authorization(&app, Method::GET, "/api/user", authorization).await);
    }
}

#[tokio::test]
async fn both_token_and_bearer_schemes_are_accepted() {
    let app = TestApp::new().await;
    let token = app.register("jake").await;
    for authorization in [format!("Token {token}"), format!("Bearer {token}"), format!("bearer {token}")] {
        let response = send_with_authorization(&app, Method::GET, "/api/user", &authorization).await;
        assert_eq!(response.status, StatusCode::OK, "{authorization}: {}", response.text);
        assert_eq!(response.body["user"]["token"], token.as_str());
    }
}

#[tokio::test]
async fn a_refused_token_on_a_protected_endpoint_is_401_saying_why() {
    let app = TestApp::new().await;
    app.register("jake").await;
    let id = user_id(&app, "jake").await.to_string();
    let cases = [
        (format!("Token {}", forge(JWT_SECRET, &id, -7200, -3600)), "has expired"),
        (format!("Token {}", forge("another-secret-another-secret-another!", &id, 0, 3600)), "is invalid"),
        ("Token garbage".to_owned(), "is invalid"),
        ("Token ".to_owned(), "is invalid"),
    ];
    for (authorization, message) in cases {
        for (method, uri) in [(Method::GET, "/api/user"), (Method::GET, "/api/articles/feed")] {
            let response = send_with_authorization(&app, method, uri, &authorization).await;
            assert_unauthorized(&response);
            assert_eq!(response.body, json!({"errors": {"token": [message]}}), "{uri} with {authorization}");
            assert_eq!(response.headers[header::WWW_AUTHENTICATE], challenge(message).as_str());
        }
    }
}

/// Jake's article "Dragons" (slug returned), with a comment and a tag, and bob's
/// token: bob follows jake and likes the article, so his view of every public read
/// differs from the anonymous one.
async fn an_article_and_a_fan(app: &TestApp) -> (String, String) {
    let jake = app.register("jake").await;
    let bob = app.register("bob").await;
    let slug = app.create_article(&jake, "Dragons", &["dragons"]).await;
    app.comment(&jake, &slug, "first").await;
    app.follow(&bob, "jake").await;
    app.favorite(&bob, &slug).await;
    (slug, bob)
}

/// Clients keep a stale token in storage and sign the user out on any 401 from
/// a public page; answering such reads anonymously keeps the site readable, and
/// the challenge still tells the client its token is no good.
#[tokio::test]
async fn a_refused_token_on_a_public_read_is_answered_as_for_an_anonymous_visitor_with_a_challenge() {
    let app = TestApp::new().await;
    let (slug, bob) = an_article_and_a_fan(&app).await;
    let bob_id = user_id(&app, "bob").await.to_string();

    let reads = [
        "/api/articles".to_owned(),
        "/api/articles?author=jake&limit=5".to_owned(),
        format!("/api/articles/{slug}"),
        format!("/api/articles/{slug}/comments"),
        "/api/profiles/jake".to_owned(),
        "/api/tags".to_owned(),
    ];
    let refused = [
        (format!("Token {}", forge(JWT_SECRET, &bob_id, -7200, -3600)), "has expired"),
        (format!("Bearer {}", forge("another-secret-another-secret-another!", &bob_id, 0, 3600)), "is invalid"),
        ("Token garbage".to_owned(), "is invalid"),
        ("Token".to_owned(), "is invalid"),
    ];
    for uri in &reads {
        let anonymous = app.get(uri, None).await;
        assert_eq!(anonymous.status, StatusCode::OK, "{uri}: {}", anonymous.text);
        assert!(!anonymous.headers.contains_key(header::WWW_AUTHENTICATE), "{uri} anonymous");
        let as_bob = app.get(uri, Some(&bob)).await;
        assert_eq!(as_bob.status, StatusCode::OK, "{uri}: {}", as_bob.text);
        assert!(!as_bob.headers.contains_key(header::WWW_AUTHENTICATE), "{uri} with a valid token");

        for (authorization, message) in &refused {
            let response = send_with_authorization(&app, Method::GET, uri, authorization).await;
            assert_read_as_anonymous_with_challenge(
                &format!("{uri} with {authorization}"),
                &response,
                &anonymous,
                message,
            );
        }
    }
    // The test can fail: bob's own view of the profile is not the anonymous one.
    let profile = |token| app.get("/api/profiles/jake", token);
    assert_ne!(profile(Some(bob.as_str())).await.body, profile(None).await.body);
}

#[tokio::test]
async fn a_token_of_a_deleted_user_reads_every_public_read_as_anonymous_with_a_revoked_challenge() {
    let app = TestApp::new().await;
    let (slug, bob) = an_article_and_a_fan(&app).await;
    app.delete_account("bob").await;

    let reads = [
        ("/api/articles".to_owned(), StatusCode::OK),
        (format!("/api/articles/{slug}"), StatusCode::OK),
        (format!("/api/articles/{slug}/comments"), StatusCode::OK),
        ("/api/profiles/jake".to_owned(), StatusCode::OK),
        ("/api/tags".to_owned(), StatusCode::OK),
        // Not found is answered alike: the token is refused before any statement runs.
        ("/api/articles/no-such-article".to_owned(), StatusCode::NOT_FOUND),
        ("/api/profiles/nobody".to_owned(), StatusCode::NOT_FOUND),
    ];
    for (uri, status) in &reads {
        let anonymous = app.get(uri, None).await;
        assert_eq!(anonymous.status, *status, "{uri}: {}", anonymous.text);
        let response = app.get(uri, Some(&bob)).await;
        assert_read_as_anonymous_with_challenge(uri, &response, &anonymous, "has been revoked");
    }
}

#[tokio::test]
async fn a_stale_token_sent_with_a_login_or_a_registration_changes_nothing_in_the_answer() {
    let app = TestApp::new().await;
    app.register("jake").await;
    let stale = forge(JWT_SECRET, &user_id(&app, "jake").await.to_string(), -7200, -3600);
    let login = json!({"user": {"email": "jake@example.com", "password": crate::support::PASSWORD}});
    let response = app.post("/api/users/login", Some(&stale), login).await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.text);
    assert!(!response.headers.contains_key(header::WWW_AUTHENTICATE), "{:?}", response.headers);
    let register =
        json!({"user": {"username": "ann", "email": "ann@example.com", "password": crate::support::PASSWORD}});
    let response = app.post("/api/users", Some(&stale), register).await;
    assert_eq!(response.status, StatusCode::CREATED, "{}", response.text);
    assert!(!response.headers.contains_key(header::WWW_AUTHENTICATE), "{:?}", response.headers);
}

#[tokio::test]
async fn a_token_of_a_deleted_user_is_401() {
    let app = TestApp::new().await;
    let token = app.register("jake").await;
    app.delete_account("jake").await;

    let response = app.get("/api/user", Some(&token)).await;
    assert_unauthorized(&response);
    assert_eq!(response.body, json!({"errors": {"token": ["has been revoked"]}}));
    assert_unauthorized(&app.post("/api/articles", Some(&token), article()).await);
    assert_eq!(app.count("articles").await, 0);
}

#[tokio::test]
async fn a_token_of_a_deleted_user_cannot_update_or_follow() {
    let app = TestApp::new().await;
    let token = app.register("jake").await;
    app.register("bob").await;
    app.delete_account("jake").await;

    assert_unauthorized(&app.put("/api/user", Some(&token), json!({"user": {"bio": "still here?"}})).await);
    assert_unauthorized(&app.post("/api/profiles/bob/follow", Some(&token), json!({})).await);
    assert_eq!(app.count("follows").await, 0);
}

#[tokio::test]
async fn a_token_of_a_deleted_user_cannot_read_the_feed_or_unfollow() {
    let app = TestApp::new().await;
    let token = app.register("jake").await;
    app.register("bob").await;
    app.delete_account("jake").await;

    assert_unauthorized(&app.get("/api/articles/feed", Some(&token)).await);
    assert_unauthorized(&app.delete("/api/profiles/bob/follow", Some(&token)).await);
}

#[tokio::test]
async fn a_token_of_a_deleted_user_cannot_change_or_delete_articles_or_comments() {
    let app = TestApp::new().await;
    let jake = app.register("jake").await;
    let bob = app.register("bob").await;
    let slug = app.create_article(&bob, "Bobs article", &[]).await;
    let comment = app.comment(&bob, &slug, "first").await;
    app.delete_account("jake").await;

    let uri = format!("/api/articles/{slug}");
    assert_unauthorized(&app.put(&uri, Some(&jake), json!({"article": {"body": "mine now"}})).await);
    assert_unauthorized(&app.delete(&uri, Some(&jake)).await);
    assert_unauthorized(&app.delete(&format!("{uri}/comments/{comment}"), Some(&jake)).await);
    assert_unauthorized(&app.delete(&format!("{uri}/favorite"), Some(&jake)).await);
}

#[tokio::test]
async fn a_server_started_after_an_account_was_deleted_refuses_its_tokens_at_once() {
    let app = TestApp::new().await;
    let token = app.register("jake").await;
    app.delete_account("jake").await;
    let id = user_id_of_token(&token);

    // A second server on the same database reads the deletion when it starts.
    let later = Revocations::follow(&app.options, TOKEN_LIFETIME).await.expect("follow revocations");
    assert!(later.account_deleted(id));
}

#[tokio::test]
async fn every_server_on_the_database_hears_of_a_deletion() {
    let app = TestApp::new().await;
    let token = app.register("jake").await;
    let other = Revocations::follow(&app.options, TOKEN_LIFETIME).await.expect("follow revocations");
    assert!(!other.account_deleted(user_id_of_token(&token)));

    app.delete_account("jake").await;
    crate::support::wait_until_deleted(&other, user_id_of_token(&token)).await;
}

#[tokio::test]
async fn deletions_older_than_the_tokens_lifetime_are_not_kept() {
    let app = TestApp::new().await;
    sqlx::query(
        "INSERT INTO deleted_accounts (user_id, deleted_at) VALUES (41, now() - interval '2 hours'), (42, now())",
    )
    .execute(&app.db)
    .await
    .expect("record two deletions");
    let accounts = Revocations::follow(&app.options, Duration::from_secs(3600)).await.expect("follow revocations");
    assert!(!accounts.account_deleted(41), "every token of an account deleted two hours ago has expired");
    assert!(accounts.account_deleted(42));
}

/// Before the notification arrives, a deleted account's token passes the
/// authentication path; the database refuses what it then tries, with the same 401.
#[tokio::test]
async fn a_deleted_account_not_yet_heard_of_still_gets_the_revoked_401() {
    let mut app = TestApp::new().await;
    let token = app.register("jake").await;
    app.register("bob").await;
    let bob = app.register("ann").await;
    let slug = app.create_article(&bob, "Anns article", &[]).await;
    // A router whose authentication path knows of no deletion.
    let state = AppState {
        writes: app.db.clone(),
        reads: app.reads.clone(),
        jwt: Arc::new(JwtKeys::new(&SecretString::from(JWT_SECRET), TOKEN_LIFETIME)),
        revocations: Revocations::default(),
        hasher: PasswordHasher::new(1).expect("hasher"),
        common_passwords: Default::default(),
        readiness: Default::default(),
        oidc: Default::default(),
        session_policy: Default::default(),
    };
    let options = HttpOptions { request_timeout: Duration::from_secs(30), ..Default::default() };
    app.router = conduit::app::router(state, &options);
    let unaware = &app;
    sqlx::query("DELETE FROM users WHERE username = 'jake'").execute(&app.db).await.expect("delete jake");

    let revoked = json!({"errors": {"token": ["has been revoked"]}});
    for response in [
        unaware.get("/api/user", Some(&token)).await,
        unaware.put("/api/user", Some(&token), json!({"user": {"bio": "still here?"}})).await,
        unaware.post("/api/articles", Some(&token), article()).await,
        unaware.post("/api/profiles/bob/follow", Some(&token), json!({})).await,
        unaware.post(&format!("/api/articles/{slug}/favorite"), Some(&token), json!({})).await,
        unaware.post(&format!("/api/articles/{slug}/comments"), Some(&token), json!({"comment": {"body": "hi"}})).await,
    ] {
        assert_unauthorized(&response);
        assert_eq!(response.body, revoked);
    }
    for table in ["articles", "follows", "favorites", "comments"] {
        let expected = i64::from(table == "articles");
        assert_eq!(app.count(table).await, expected, "{table}");
    }
}

/// The user id a token of ours names.
fn user_id_of_token(token: &str) -> i64 {
    let keys = JwtKeys::new(&SecretString::from(JWT_SECRET), TOKEN_LIFETIME);
    keys.verify(token).expect("a valid token").0
}

#[tokio::test]
async fn a_dropped_set_of_deleted_accounts_closes_its_connection() {
    let app = TestApp::new().await;
    let listening = || async {
        let count: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'conduit-listener'",
        )
        .fetch_one(&app.db)
        .await
        .expect("count the listeners");
        count
    };
    let wait_for = |expected: i64| async move {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while listening().await != expected {
            assert!(tokio::time::Instant::now() < deadline, "never {expected} listening connections");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    wait_for(1).await; // the router's
    let other = Revocations::follow(&app.options, TOKEN_LIFETIME).await.expect("follow revocations");
    wait_for(2).await;
    drop(other);
    wait_for(1).await;
}
