//! Public profiles, following and unfollowing.

use axum::{
    body::Body,
    http::{Method, Request, StatusCode, header},
};
use serde_json::json;

use crate::support::{TestApp, TestResponse};

async fn profile(app: &TestApp, username: &str, viewer: Option<&str>) -> TestResponse {
    app.get(&format!("/api/profiles/{username}"), viewer).await
}

async fn follow(app: &TestApp, token: &str, username: &str) -> TestResponse {
    app.post(&format!("/api/profiles/{username}/follow"), Some(token), json!({})).await
}

async fn unfollow(app: &TestApp, token: &str, username: &str) -> TestResponse {
    app.delete(&format!("/api/profiles/{username}/follow"), Some(token)).await
}

/// Asserts a 200 with the profile of `username` and its `following` flag.
#[track_caller]
fn assert_profile(response: &TestResponse, username: &str, following: bool) {
    assert_eq!(response.status, StatusCode::OK, "{}", response.text);
    assert_eq!(response.body["profile"]["username"], username, "{}", response.text);
    assert_eq!(response.body["profile"]["following"], following, "{}", response.text);
}

#[tokio::test]
async fn a_profile_shows_whether_the_viewer_follows_it() {
    let app = TestApp::new().await;
    let jake = app.register("jake").await;
    let bob = app.register("bob").await;

    let anonymous = profile(&app, "jake", None).await;
    assert_eq!(anonymous.status, StatusCode::OK);
    assert_eq!(
        anonymous.body,
        json!({"profile": {"username": "jake", "bio": null, "image": null, "following": false}})
    );
    assert_profile(&profile(&app, "jake", Some(&bob)).await, "jake", false);

    follow(&app, &bob, "jake").await;
    assert_profile(&profile(&app, "jake", Some(&bob)).await, "jake", true);
    assert_profile(&profile(&app, "jake", None).await, "jake", false);
    assert_profile(&profile(&app, "bob", Some(&jake)).await, "bob", false);
    assert_profile(&profile(&app, "jake", Some(&jake)).await, "jake", false);
}

#[tokio::test]
async fn profiles_are_found_case_insensitively() {
    let app = TestApp::new().await;
    let bob = app.register("bob").await;
    app.register("Jake").await;

    assert_profile(&profile(&app, "jake", None).await, "Jake", false);
    assert_profile(&profile(&app, "JAKE", None).await, "Jake", false);
    assert_profile(&follow(&app, &bob, "jAkE").await, "Jake", true);
    assert_profile(&profile(&app, "Jake", Some(&bob)).await, "Jake", true);
    assert_profile(&unfollow(&app, &bob, "JAKE").await, "Jake", false);
}

#[tokio::test]
async fn an_unknown_profile_is_404() {
    let app = TestApp::new().await;
    let bob = app.register("bob").await;
    profile(&app, "nobody", None).await.assert_error(StatusCode::NOT_FOUND, "profile");
    profile(&app, "nobody", Some(&bob)).await.assert_error(StatusCode::NOT_FOUND, "profile");
    follow(&app, &bob, "nobody").await.assert_error(StatusCode::NOT_FOUND, "profile");
    unfollow(&app, &bob, "nobody").await.assert_error(StatusCode::NOT_FOUND, "profile");
    assert_eq!(app.count("follows").await, 0);
}

#[tokio::test]
async fn following_and_unfollowing_return_the_profile() {
    let app = TestApp::new().await;
    app.register("jake").await;
    let bob = app.register("bob").await;

    let followed = follow(&app, &bob, "jake").await;
    assert_eq!(followed.body, json!({"profile": {"username": "jake", "bio": null, "image": null, "following": true}}));
    assert_eq!(app.count("follows").await, 1);

    let unfollowed = unfollow(&app, &bob, "jake").await;
    assert_eq!(
        unfollowed.body,
        json!({"profile": {"username": "jake", "bio": null, "image": null, "following": false}})
    );
    assert_eq!(app.count("follows").await, 0);
    assert_profile(&profile(&app, "jake", Some(&bob)).await, "jake", false);
}

#[tokio::test]
async fn following_twice_is_idempotent() {
    let app = TestApp::new().await;
    app.register("jake").await;
    let bob = app.register("bob").await;
    assert_profile(&follow(&app, &bob, "jake").await, "jake", true);
    assert_profile(&follow(&app, &bob, "jake").await, "jake", true);
    assert_eq!(app.count("follows").await, 1);
    assert_profile(&unfollow(&app, &bob, "jake").await, "jake", false);
    assert_profile(&profile(&app, "jake", Some(&bob)).await, "jake", false);
}

#[tokio::test]
async fn unfollowing_someone_not_followed_is_idempotent() {
    let app = TestApp::new().await;
    app.register("jake").await;
    let bob = app.register("bob").await;
    assert_profile(&unfollow(&app, &bob, "jake").await, "jake", false);
    follow(&app, &bob, "jake").await;
    assert_profile(&unfollow(&app, &bob, "jake").await, "jake", false);
    assert_profile(&unfollow(&app, &bob, "jake").await, "jake", false);
    assert_eq!(app.count("follows").await, 0);
}

#[tokio::test]
async fn following_yourself_is_422() {
    let app = TestApp::new().await;
    let jake = app.register("jake").await;
    follow(&app, &jake, "jake").await.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "username");
    follow(&app, &jake, "JAKE").await.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "username");
    assert_eq!(app.count("follows").await, 0);
}

#[tokio::test]
async fn follow_accepts_any_json_body() {
    let app = TestApp::new().await;
    app.register("jake").await;
    let bob = app.register("bob").await;

    let with_user = app.post("/api/profiles/jake/follow", Some(&bob), json!({"user": {"email": "x@y.z"}})).await;
    assert_profile(&with_user, "jake", true);

    for body in ["", "null"] {
        let request = Request::builder()
            .method(Method::POST)
            .uri("/api/profiles/jake/follow")
            .header(header::AUTHORIZATION, format!("Token {bob}"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body))
            .expect("valid request");
        assert_profile(&app.send(request).await, "jake", true);
    }
    assert_eq!(app.count("follows").await, 1);
}
