//! Registration, login and the current user.

use axum::http::StatusCode;
use serde_json::json;

use crate::support::{PASSWORD, TestApp};

#[tokio::test]
async fn registering_returns_201_with_the_user_and_a_working_token() {
    let app = TestApp::new().await;
    let response = app
        .post("/api/users", None, json!({"user": {"username": "jake", "email": "jake@jake.jake", "password": PASSWORD}}))
        .await;
    assert_eq!(response.status, StatusCode::CREATED, "{}", response.text);
    assert_eq!(response.headers["content-type"], "application/json; charset=utf-8");
    let user = &response.body["user"];
    assert_eq!(user["username"], "jake");
    assert_eq!(user["email"], "jake@jake.jake");
    assert_eq!(user["bio"], "");
    assert_eq!(user["image"], "");
    let token = user["token"].as_str().expect("token");
    let me = app.get("/api/user", Some(token)).await;
    assert_eq!(me.status, StatusCode::OK);
    assert_eq!(me.body["user"]["username"], "jake");
}
