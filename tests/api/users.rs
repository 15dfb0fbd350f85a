//! Registration, login and the current user.

use axum::http::StatusCode;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Value, json};

use crate::support::{JWT_SECRET, PASSWORD, TestApp, TestResponse};

/// `{"user": {username, email, password}}`, the body of a registration.
fn new_user(username: &str, email: &str, password: &str) -> Value {
    json!({"user": {"username": username, "email": email, "password": password}})
}

async fn register(app: &TestApp, username: &str, email: &str, password: &str) -> TestResponse {
    app.post("/api/users", None, new_user(username, email, password)).await
}

async fn login(app: &TestApp, email: &str, password: &str) -> TestResponse {
    app.post("/api/users/login", None, json!({"user": {"email": email, "password": password}})).await
}

async fn update(app: &TestApp, token: &str, changes: Value) -> TestResponse {
    app.put("/api/user", Some(token), json!({"user": changes})).await
}

/// Asserts a 422 with messages under exactly `fields`.
#[track_caller]
fn assert_invalid(response: &TestResponse, fields: &[&str]) {
    for field in fields {
        response.assert_error(StatusCode::UNPROCESSABLE_ENTITY, field);
    }
    assert_eq!(response.error_fields(), fields, "{}", response.text);
}

/// A 409 naming `field` as taken, as RealWorld 2.0 words it.
#[track_caller]
fn assert_taken(response: &TestResponse, field: &str) {
    response.assert_error(StatusCode::CONFLICT, field);
    assert_eq!(response.body["errors"], json!({ field: ["has already been taken"] }), "{}", response.text);
}

/// The user id a token was signed for, after checking the signature and the claims.
#[track_caller]
fn token_subject(token: &str) -> String {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.set_issuer(&["conduit"]);
    validation.set_audience(&["conduit-api"]);
    let data = jsonwebtoken::decode::<Value>(token, &DecodingKey::from_secret(JWT_SECRET.as_bytes()), &validation)
        .unwrap_or_else(|err| panic!("{token} is not a valid token: {err}"));
    data.claims["sub"].as_str().expect("sub is a string").to_owned()
}

#[tokio::test]
async fn registering_returns_201_with_the_user_and_a_working_token() {
    let app = TestApp::new().await;
    let response = app
        .post(
            "/api/users",
            None,
            json!({"user": {"username": "jake", "email": "jake@jake.jake", "password": PASSWORD}}),
        )
        .await;
    assert_eq!(response.status, StatusCode::CREATED, "{}", response.text);
    assert_eq!(response.headers["content-type"], "application/json; charset=utf-8");
    let user = &response.body["user"];
    assert_eq!(user["username"], "jake");
    assert_eq!(user["email"], "jake@jake.jake");
    assert_eq!(user["bio"], Value::Null);
    assert_eq!(user["image"], Value::Null);
    let token = user["token"].as_str().expect("token");
    let me = app.get("/api/user", Some(token)).await;
    assert_eq!(me.status, StatusCode::OK);
    assert_eq!(me.body["user"]["username"], "jake");
}

#[tokio::test]
async fn registering_with_missing_or_blank_fields_is_422_per_field() {
    let app = TestApp::new().await;
    for field in ["username", "email", "password"] {
        let mut body = new_user("jake", "jake@jake.jake", PASSWORD);
        body["user"].as_object_mut().expect("object").remove(field);
        assert_invalid(&app.post("/api/users", None, body.clone()).await, &[field]);

        body["user"][field] = json!("   ");
        assert_invalid(&app.post("/api/users", None, body).await, &[field]);
    }
    assert_invalid(&app.post("/api/users", None, json!({"user": {}})).await, &["email", "password", "username"]);
    assert_eq!(app.count("users").await, 0);
}

#[tokio::test]
async fn registering_with_a_malformed_email_or_overlong_fields_is_422() {
    let app = TestApp::new().await;
    let long_name = "x".repeat(41);
    let cases = [
        ("email", "jake", "jake", PASSWORD.to_owned()),
        ("username", long_name.as_str(), "jake@jake.jake", PASSWORD.to_owned()),
        ("username", "jake the dog", "jake@jake.jake", PASSWORD.to_owned()),
        ("password", "jake", "jake@jake.jake", "1234567".to_owned()),
        ("password", "jake", "jake@jake.jake", "p".repeat(129)),
    ];
    for (field, username, email, password) in cases {
        assert_invalid(&register(&app, username, email, &password).await, &[field]);
    }
    assert_eq!(app.count("users").await, 0);
}

#[tokio::test]
async fn the_longest_allowed_username_and_password_are_accepted() {
    let app = TestApp::new().await;
    let (username, password) = ("x".repeat(40), "p".repeat(128));
    let response = register(&app, &username, "long@jake.jake", &password).await;
    assert_eq!(response.status, StatusCode::CREATED, "{}", response.text);
    assert_eq!(response.body["user"]["username"], username.as_str());
    assert_eq!(login(&app, "long@jake.jake", &password).await.status, StatusCode::OK);
}

#[tokio::test]
async fn registering_a_taken_username_or_email_in_any_case_is_409() {
    let app = TestApp::new().await;
    assert_eq!(register(&app, "jake", "jake@jake.jake", PASSWORD).await.status, StatusCode::CREATED);

    assert_taken(&register(&app, "JAKE", "other@jake.jake", PASSWORD).await, "username");
    assert_taken(&register(&app, "other", "Jake@Jake.jake", PASSWORD).await, "email");

    assert_eq!(app.count("users").await, 1);
}

#[tokio::test]
async fn logging_in_returns_the_user_with_a_fresh_token() {
    let app = TestApp::new().await;
    let registered = register(&app, "jake", "jake@jake.jake", PASSWORD).await;
    let id = token_subject(registered.body["user"]["token"].as_str().expect("token"));

    let response = login(&app, "JAKE@jake.JAKE", PASSWORD).await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.text);
    let user = &response.body["user"];
    assert_eq!(user["username"], "jake");
    assert_eq!(user["email"], "jake@jake.jake", "the email as registered, not as typed");
    assert_eq!(user["bio"], Value::Null);
    assert_eq!(user["image"], Value::Null);
    let token = user["token"].as_str().expect("token");
    assert_eq!(token_subject(token), id);
    let me = app.get("/api/user", Some(token)).await;
    assert_eq!(me.status, StatusCode::OK);
    assert_eq!(me.body["user"]["username"], "jake");
}

#[tokio::test]
async fn login_with_an_unknown_email_or_a_wrong_password_gets_the_same_401() {
    let app = TestApp::new().await;
    app.register("jake").await;

    let unknown = login(&app, "nobody@example.com", PASSWORD).await;
    let wrong = login(&app, "jake@example.com", "not the password").await;
    for response in [&unknown, &wrong] {
        assert_eq!(response.status, StatusCode::UNAUTHORIZED, "{}", response.text);
        assert_eq!(response.body, json!({"errors": {"credentials": ["invalid"]}}));
    }
    assert_eq!(unknown.text, wrong.text);
}

#[tokio::test]
async fn login_with_missing_fields_is_422() {
    let app = TestApp::new().await;
    app.register("jake").await;
    let cases = [
        (json!({}), vec!["email", "password"]),
        (json!({"email": "jake@example.com"}), vec!["password"]),
        (json!({"password": PASSWORD}), vec!["email"]),
        (json!({"email": "  ", "password": ""}), vec!["email", "password"]),
    ];
    for (user, fields) in cases {
        let response = app.post("/api/users/login", None, json!({"user": user})).await;
        assert_invalid(&response, &fields);
    }
}

#[tokio::test]
async fn getting_the_current_user_returns_the_presented_token() {
    let app = TestApp::new().await;
    let registered = app.register("jake").await;
    let me = app.get("/api/user", Some(&registered)).await;
    assert_eq!(me.status, StatusCode::OK);
    assert_eq!(me.body["user"]["token"], registered.as_str());
    assert_eq!(me.body["user"]["email"], "jake@example.com");

    let logged_in = login(&app, "jake@example.com", PASSWORD).await;
    let token = logged_in.body["user"]["token"].as_str().expect("token");
    let me = app.get("/api/user", Some(token)).await;
    assert_eq!(me.status, StatusCode::OK);
    assert_eq!(me.body["user"]["token"], token);
}

#[tokio::test]
async fn updating_the_user_changes_only_the_given_fields() {
    let app = TestApp::new().await;
    let token = app.register("jake").await;

    let response = update(&app, &token, json!({"bio": "I like to skateboard"})).await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.text);
    assert_eq!(
        response.body["user"],
        json!({"username": "jake", "email": "jake@example.com", "bio": "I like to skateboard", "image": null, "token": token})
    );

    let image = "https://i.stack.imgur.com/xHWG8.jpg";
    let response = update(&app, &token, json!({"image": image})).await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.text);
    assert_eq!(response.body["user"]["image"], image);
    assert_eq!(response.body["user"]["bio"], "I like to skateboard");

    let response = update(&app, &token, json!({"username": "jacob"})).await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.text);
    let expected = json!({"username": "jacob", "email": "jake@example.com", "bio": "I like to skateboard", "image": image, "token": token});
    assert_eq!(response.body["user"], expected);
    assert_eq!(app.get("/api/user", Some(&token)).await.body["user"], expected);
    assert_eq!(app.get("/api/profiles/jacob", None).await.status, StatusCode::OK);
    assert_eq!(app.get("/api/profiles/jake", None).await.status, StatusCode::NOT_FOUND);
    assert_eq!(login(&app, "jake@example.com", PASSWORD).await.status, StatusCode::OK, "password kept");
}

#[tokio::test]
async fn updating_the_user_with_their_own_email_and_username_succeeds() {
    let app = TestApp::new().await;
    let token = app.register("jake").await;

    let response = update(&app, &token, json!({"username": "jake", "email": "jake@example.com"})).await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.text);
    assert_eq!(response.body["user"]["username"], "jake");

    let response = update(&app, &token, json!({"username": "Jake", "email": "JAKE@example.com"})).await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.text);
    assert_eq!(response.body["user"]["username"], "Jake");
    assert_eq!(response.body["user"]["email"], "JAKE@example.com");
}

#[tokio::test]
async fn updating_to_another_users_email_or_username_is_409() {
    let app = TestApp::new().await;
    app.register("jake").await;
    let bob = app.register("bob").await;

    assert_taken(&update(&app, &bob, json!({"username": "JAKE"})).await, "username");
    assert_taken(&update(&app, &bob, json!({"email": "Jake@Example.com"})).await, "email");

    let me = app.get("/api/user", Some(&bob)).await;
    assert_eq!((&me.body["user"]["username"], &me.body["user"]["email"]), (&json!("bob"), &json!("bob@example.com")));
}

#[tokio::test]
async fn updating_with_invalid_values_is_422_and_changes_nothing() {
    let app = TestApp::new().await;
    let token = app.register("jake").await;
    let cases = [
        (json!({"username": ""}), "username"),
        (json!({"username": "a/b"}), "username"),
        (json!({"email": "jake"}), "email"),
        (json!({"password": "short"}), "password"),
        (json!({"bio": "b".repeat(1001)}), "bio"),
    ];
    for (changes, field) in cases {
        assert_invalid(&update(&app, &token, changes).await, &[field]);
    }
    let me = app.get("/api/user", Some(&token)).await;
    assert_eq!(me.body["user"]["username"], "jake");
    assert_eq!(me.body["user"]["email"], "jake@example.com");
    assert_eq!(me.body["user"]["bio"], Value::Null);
    assert_eq!(login(&app, "jake@example.com", PASSWORD).await.status, StatusCode::OK);
}

#[tokio::test]
async fn updating_the_password_lets_the_user_log_in_with_the_new_one_only() {
    let app = TestApp::new().await;
    let token = app.register("jake").await;
    let new_password = "a brand new password";

    let response = update(&app, &token, json!({"password": new_password})).await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.text);
    assert!(response.body["user"].get("password").is_none(), "{}", response.text);

    assert_eq!(login(&app, "jake@example.com", new_password).await.status, StatusCode::OK);
    assert_eq!(login(&app, "jake@example.com", PASSWORD).await.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn bio_and_image_are_null_until_set_and_null_or_an_empty_string_clears_them() {
    let app = TestApp::new().await;
    let token = app.register("jake").await;
    let me = app.get("/api/user", Some(&token)).await;
    assert_eq!((&me.body["user"]["bio"], &me.body["user"]["image"]), (&Value::Null, &Value::Null));
    let profile = app.get("/api/profiles/jake", None).await;
    assert_eq!((&profile.body["profile"]["bio"], &profile.body["profile"]["image"]), (&Value::Null, &Value::Null));

    let set = update(&app, &token, json!({"bio": "hello", "image": "http://example.com/me.png"})).await;
    assert_eq!(set.status, StatusCode::OK, "{}", set.text);
    assert_eq!(
        (&set.body["user"]["bio"], &set.body["user"]["image"]),
        (&json!("hello"), &json!("http://example.com/me.png"))
    );

    let cleared = update(&app, &token, json!({"bio": null, "image": ""})).await;
    assert_eq!(cleared.status, StatusCode::OK, "{}", cleared.text);
    assert_eq!((&cleared.body["user"]["bio"], &cleared.body["user"]["image"]), (&Value::Null, &Value::Null));
    let profile = app.get("/api/profiles/jake", None).await;
    assert_eq!((&profile.body["profile"]["bio"], &profile.body["profile"]["image"]), (&Value::Null, &Value::Null));

    update(&app, &token, json!({"bio": "again", "image": "https://example.com/me.png"})).await;
    let cleared = update(&app, &token, json!({"bio": "", "image": null})).await;
    assert_eq!(cleared.status, StatusCode::OK, "{}", cleared.text);
    assert_eq!((&cleared.body["user"]["bio"], &cleared.body["user"]["image"]), (&Value::Null, &Value::Null));
}

#[tokio::test]
async fn an_image_that_is_not_an_http_url_is_422() {
    let app = TestApp::new().await;
    let token = app.register("jake").await;
    // Stricter than RealWorld 2.0 on purpose: every client renders it as `<img src>`.
    let refused = [
        "javascript:alert(1)",
        "data:image/png;base64,iVBORw0KGgo=",
        "ftp://example.com/me.png",
        "me.png",
        "https://",
        "https://exa mple.com/a.png",
    ];
    for image in refused {
        assert_invalid(&update(&app, &token, json!({"image": image})).await, &["image"]);
    }
    assert_eq!(app.get("/api/user", Some(&token)).await.body["user"]["image"], Value::Null);
}

#[tokio::test]
async fn server_assigned_fields_in_the_request_are_ignored() {
    let app = TestApp::new().await;
    let body = json!({"user": {
        "username": "jake", "email": "jake@jake.jake", "password": PASSWORD,
        "token": "x", "id": 5, "bio": "b", "image": "https://example.com/a.png", "following": true
    }});
    let response = app.post("/api/users", None, body).await;
    assert_eq!(response.status, StatusCode::CREATED, "{}", response.text);
    let user = &response.body["user"];
    let token = user["token"].as_str().expect("token");
    assert_ne!(token, "x");
    assert_ne!(token_subject(token), "5");
    assert_eq!((&user["bio"], &user["image"]), (&Value::Null, &Value::Null));
    assert!(user.get("id").is_none() && user.get("following").is_none(), "{}", response.text);

    let updated = update(&app, token, json!({"token": "x", "id": 5})).await;
    assert_eq!(updated.status, StatusCode::OK, "{}", updated.text);
    assert_eq!(updated.body["user"]["token"], token);
}

/// Passes on a cluster with a UTF-8 `LC_CTYPE`; fails on the embedded one, whose
/// `initdb --no-locale` makes `lower()` fold ASCII only.
#[tokio::test]
async fn usernames_and_emails_with_non_ascii_letters_are_unique_in_any_case() {
    let app = TestApp::new().await;
    assert_eq!(register(&app, "Zoë", "zoë@example.com", PASSWORD).await.status, StatusCode::CREATED);
    assert_taken(&register(&app, "ZOË", "other@example.com", PASSWORD).await, "username");
    assert_taken(&register(&app, "other", "ZOË@example.com", PASSWORD).await, "email");
    assert_eq!(login(&app, "ZOË@EXAMPLE.COM", PASSWORD).await.status, StatusCode::OK);
    let profile = app.get("/api/profiles/zo%C3%8B", None).await;
    assert_eq!(profile.status, StatusCode::OK, "{}", profile.text);
    assert_eq!(profile.body["profile"]["username"], "Zoë");
}

/// `/api/profiles/..` is rewritten by URL normalisation in clients and proxies, so
/// such a profile could never be reached.
#[tokio::test]
async fn dot_segment_usernames_are_422() {
    let app = TestApp::new().await;
    for username in [".", ".."] {
        assert_invalid(&register(&app, username, "dots@example.com", PASSWORD).await, &["username"]);
    }
}

#[tokio::test]
async fn null_for_an_email_username_or_password_in_an_update_is_422() {
    // Found by schemathesis: `null` was read as "unchanged", though the document
    // types these fields as strings (only `bio` and `image` may be null).
    let app = TestApp::new().await;
    let token = app.register("jake").await;
    for field in ["email", "username", "password"] {
        let response = app.put("/api/user", Some(&token), json!({"user": { field: null }})).await;
        assert_eq!(response.status, StatusCode::UNPROCESSABLE_ENTITY, "{field}: {}", response.text);
    }
}

#[tokio::test]
async fn a_settings_form_with_an_empty_password_is_422_and_changes_nothing() {
    // RealWorld 2.0 refuses `"password": ""` (its Hurl suite asserts it). Older
    // Angular and Svelte clients sent it for a password left alone: they now get a
    // 422 naming the password, and nothing of the form is saved.
    let app = TestApp::new().await;
    let token = app.register("jake").await;
    let form = json!({"user": {"image": "", "username": "jake", "bio": "I work at statefarm", "email": "jake@example.com", "password": ""}});
    let response = app.put("/api/user", Some(&token), form).await;
    assert_invalid(&response, &["password"]);
    assert_eq!(response.body["errors"]["password"], json!(["can't be blank"]));
    assert_eq!(app.get("/api/user", Some(&token)).await.body["user"]["bio"], Value::Null, "nothing was saved");
    let login = |password: &str| {
        app.post("/api/users/login", None, json!({"user": {"email": "jake@example.com", "password": password}}))
    };
    assert_eq!(login(PASSWORD).await.status, StatusCode::OK, "the password is unchanged");
    assert_eq!(login("").await.status, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn a_field_of_the_wrong_type_is_422_under_its_own_name() {
    let app = TestApp::new().await;
    let token = app.register("jake").await;
    let response = app.put("/api/user", Some(&token), json!({"user": {"email": 5}})).await;
    assert_eq!(response.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", response.text);
    assert!(response.body["errors"]["email"].is_array(), "{}", response.text);
    let response = app.put("/api/user", Some(&token), json!({"user": {"password": null}})).await;
    assert!(response.body["errors"]["password"].is_array(), "{}", response.text);
}
