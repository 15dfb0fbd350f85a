//! What new accounts may not be: a common password, a username that looks like
//! another's (issue 24, item 6).

use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::support::{PASSWORD, TestApp, TestResponse};

async fn register(app: &TestApp, username: &str, password: &str) -> TestResponse {
    let body = json!({"user": {"username": username, "email": format!("{}@example.com", username.len()), "password": password}});
    app.post("/api/users", None, body).await
}

async fn update(app: &TestApp, token: &str, changes: Value) -> TestResponse {
    app.put("/api/user", Some(token), json!({"user": changes})).await
}

#[track_caller]
fn assert_only_error(response: &TestResponse, status: StatusCode, field: &str) {
    response.assert_error(status, field);
    assert_eq!(response.error_fields(), [field], "{}", response.text);
}

#[tokio::test]
async fn registering_with_a_common_password_is_422_naming_the_password() {
    let app = TestApp::new().await;
    for password in ["password", "Password123", "p@ssw0rd", "aaaaaaaa", "12345678"] {
        let response = register(&app, "jake", password).await;
        assert_only_error(&response, StatusCode::UNPROCESSABLE_ENTITY, "password");
        assert!(response.text.contains("too common"), "{}", response.text);
    }
    assert_eq!(register(&app, "jake", PASSWORD).await.status, StatusCode::CREATED);
}

#[tokio::test]
async fn changing_to_a_common_password_is_422_and_to_a_strong_one_200() {
    let app = TestApp::new().await;
    let token = app.register("jake").await;
    let response = update(&app, &token, json!({"password": "iloveyou"})).await;
    assert_only_error(&response, StatusCode::UNPROCESSABLE_ENTITY, "password");
    let response = update(&app, &token, json!({"password": "plum thunder kettle 42"})).await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.text);
    let login = json!({"user": {"email": "jake@example.com", "password": "plum thunder kettle 42"}});
    assert_eq!(app.post("/api/users/login", None, login).await.status, StatusCode::OK);
}
