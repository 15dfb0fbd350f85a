//! What new accounts may not be: a common password, a username that looks like
//! another's (issue 24, item 6).

use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::support::{PASSWORD, TestApp, TestResponse};

async fn register(app: &TestApp, username: &str, password: &str) -> TestResponse {
    // An email of its own for each name, however alike the names.
    let email: Vec<String> = username.chars().map(|c| format!("{:x}", u32::from(c))).collect();
    let body = json!({"user": {"username": username, "email": format!("{}@example.com", email.join("-")), "password": password}});
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

#[tokio::test]
async fn a_username_that_looks_like_a_taken_one_is_409_as_if_taken() {
    let app = TestApp::new().await;
    assert_eq!(register(&app, "alice", PASSWORD).await.status, StatusCode::CREATED);
    // Cyrillic а (U+0430) and А (U+0410), and the case-insensitive rule.
    for look_alike in ["\u{430}lice", "\u{410}LICE", "AlIce", "ALICE"] {
        let response = register(&app, look_alike, PASSWORD).await;
        assert_only_error(&response, StatusCode::CONFLICT, "username");
        assert_eq!(response.body["errors"], json!({"username": ["has already been taken"]}), "{look_alike}");
    }
    // UTS #39 takes `rn` for `m`.
    assert_eq!(register(&app, "mark", PASSWORD).await.status, StatusCode::CREATED);
    assert_only_error(&register(&app, "rnark", PASSWORD).await, StatusCode::CONFLICT, "username");
    for unrelated in ["alicia", "Zoë", "\u{430}\u{43b}\u{438}\u{441}\u{430}"] {
        assert_eq!(register(&app, unrelated, PASSWORD).await.status, StatusCode::CREATED, "{unrelated}");
    }
}

#[tokio::test]
async fn renaming_to_a_look_alike_of_another_name_is_409_but_to_ones_own_is_not() {
    let app = TestApp::new().await;
    app.register("alice").await;
    let token = app.register("bob").await;
    let response = update(&app, &token, json!({"username": "\u{430}lice"})).await;
    assert_only_error(&response, StatusCode::CONFLICT, "username");
    assert_eq!(response.body["errors"], json!({"username": ["has already been taken"]}));
    // One's own name, or a look-alike of it, is one's own skeleton.
    for name in ["bob", "BOB", "b\u{43e}b"] {
        let response = update(&app, &token, json!({"username": name})).await;
        assert_eq!(response.status, StatusCode::OK, "{name}: {}", response.text);
    }
    let stored: String = sqlx::query_scalar("SELECT username_skeleton FROM users WHERE username = 'b\u{43e}b'")
        .fetch_one(&app.db)
        .await
        .expect("skeleton");
    assert_eq!(stored, "bob");
}

#[tokio::test]
async fn skeletons_of_rows_written_before_the_column_are_filled_in_and_clashes_left_unset() {
    let app = TestApp::new().await;
    sqlx::query(
        "INSERT INTO users (username, email, password_hash) VALUES
           ('alice', 'a@example.com', 'x'), ('\u{430}lice', 'b@example.com', 'x'), ('bob', 'c@example.com', 'x')",
    )
    .execute(&app.db)
    .await
    .expect("legacy rows");
    let filled = conduit::db::users::backfill_username_skeletons(&app.db).await.expect("backfill");
    assert_eq!(filled, 2);
    let rows: Vec<(String, Option<String>)> =
        sqlx::query_as("SELECT username, username_skeleton FROM users ORDER BY id")
            .fetch_all(&app.db)
            .await
            .expect("rows");
    assert_eq!(
        rows,
        [
            ("alice".to_owned(), Some("alice".to_owned())),
            ("\u{430}lice".to_owned(), None),
            ("bob".to_owned(), Some("bob".to_owned()))
        ]
    );
    assert_eq!(conduit::db::users::backfill_username_skeletons(&app.db).await.expect("again"), 0);
    // The names the clash left unset still block their look-alikes: the first row holds the skeleton.
    assert_only_error(&register(&app, "\u{410}LICE", PASSWORD).await, StatusCode::CONFLICT, "username");
}
