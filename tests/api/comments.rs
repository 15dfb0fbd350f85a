//! Comments on articles: add, list and delete.

use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::support::{TestApp, TestResponse};

async fn add(app: &TestApp, token: &str, slug: &str, comment: Value) -> TestResponse {
    app.post(&format!("/api/articles/{slug}/comments"), Some(token), json!({"comment": comment})).await
}

async fn delete(app: &TestApp, token: &str, slug: &str, id: &str) -> TestResponse {
    app.delete(&format!("/api/articles/{slug}/comments/{id}"), Some(token)).await
}

/// The comment bodies of an article, in order.
async fn bodies(app: &TestApp, slug: &str, token: Option<&str>) -> Vec<String> {
    let response = app.get(&format!("/api/articles/{slug}/comments"), token).await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.text);
    response.body["comments"]
        .as_array()
        .expect("comments")
        .iter()
        .map(|c| c["body"].as_str().expect("body").to_owned())
        .collect()
}

#[tokio::test]
async fn adding_a_comment_returns_201_with_the_comment_and_its_author() {
    let app = TestApp::new().await;
    let jake = app.register("jake").await;
    let ann = app.register("ann").await;
    app.create_article(&jake, "Dragons", &[]).await;

    let response = add(&app, &ann, "dragons", json!({"body": "Thank you so much!"})).await;
    assert_eq!(response.status, StatusCode::CREATED, "{}", response.text);
    assert_eq!(response.headers["content-type"], "application/json; charset=utf-8");
    let comment = &response.body["comment"];
    let mut keys: Vec<&String> = comment.as_object().expect("object").keys().collect();
    keys.sort();
    assert_eq!(keys, ["author", "body", "createdAt", "id", "updatedAt"]);
    assert!(comment["id"].is_i64(), "id is a number: {}", comment["id"]);
    assert_eq!(comment["body"], "Thank you so much!");
    assert_eq!(comment["createdAt"], comment["updatedAt"]);
    assert_eq!(comment["author"], json!({"username": "ann", "bio": null, "image": null, "following": false}));

    let listed = app.get("/api/articles/dragons/comments", None).await;
    assert_eq!(listed.body["comments"], json!([comment]));
    assert_eq!(app.count("comments").await, 1);
}

#[tokio::test]
async fn a_blank_or_missing_comment_body_is_422() {
    let app = TestApp::new().await;
    let token = app.register("jake").await;
    app.create_article(&token, "Dragons", &[]).await;

    for comment in [json!({}), json!({"body": ""}), json!({"body": "  \n "}), json!({"body": null})] {
        let response = add(&app, &token, "dragons", comment.clone()).await;
        response.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "body");
        assert_eq!(response.error_fields(), ["body"], "{comment}");
    }
    let too_long = add(&app, &token, "dragons", json!({"body": "x".repeat(10_001)})).await;
    too_long.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "body");
    assert_eq!(app.count("comments").await, 0);

    let anonymous = app.post("/api/articles/dragons/comments", None, json!({"comment": {"body": "Hi"}})).await;
    anonymous.assert_error(StatusCode::UNAUTHORIZED, "token");
}

#[tokio::test]
async fn comments_are_listed_newest_first_with_or_without_a_token() {
    let app = TestApp::new().await;
    let jake = app.register("jake").await;
    let ann = app.register("ann").await;
    let bob = app.register("bob").await;
    app.create_article(&jake, "Dragons", &[]).await;
    app.create_article(&jake, "Unicorns", &[]).await;
    app.comment(&ann, "dragons", "first").await;
    app.comment(&bob, "dragons", "second").await;
    app.comment(&ann, "dragons", "third").await;
    app.comment(&bob, "unicorns", "elsewhere").await;
    app.follow(&jake, "ann").await;

    assert_eq!(bodies(&app, "dragons", None).await, ["third", "second", "first"]);
    assert_eq!(bodies(&app, "dragons", Some(&jake)).await, ["third", "second", "first"]);

    let anonymous = app.get("/api/articles/dragons/comments", None).await;
    let seen_by_jake = app.get("/api/articles/dragons/comments", Some(&jake)).await;
    let following = |response: &TestResponse| -> Vec<(Value, Value)> {
        response.body["comments"]
            .as_array()
            .expect("comments")
            .iter()
            .map(|c| (c["author"]["username"].clone(), c["author"]["following"].clone()))
            .collect()
    };
    assert_eq!(
        following(&anonymous),
        [(json!("ann"), json!(false)), (json!("bob"), json!(false)), (json!("ann"), json!(false))]
    );
    assert_eq!(
        following(&seen_by_jake),
        [(json!("ann"), json!(true)), (json!("bob"), json!(false)), (json!("ann"), json!(true))]
    );

    app.create_article(&jake, "Quiet", &[]).await;
    let quiet = app.get("/api/articles/quiet/comments", None).await;
    assert_eq!(quiet.status, StatusCode::OK, "{}", quiet.text);
    assert_eq!(quiet.body, json!({"comments": []}));
}

#[tokio::test]
async fn comments_of_an_unknown_article_are_404() {
    let app = TestApp::new().await;
    let token = app.register("jake").await;
    let listed = app.get("/api/articles/no-such-article/comments", None).await;
    listed.assert_error(StatusCode::NOT_FOUND, "article");
    assert_eq!(listed.error_fields(), ["article"]);
    app.get("/api/articles/no-such-article/comments", Some(&token))
        .await
        .assert_error(StatusCode::NOT_FOUND, "article");

    let added = add(&app, &token, "no-such-article", json!({"body": "Hello?"})).await;
    added.assert_error(StatusCode::NOT_FOUND, "article");
    assert_eq!(added.error_fields(), ["article"]);
    assert_eq!(app.count("comments").await, 0);
}

#[tokio::test]
async fn only_the_comments_author_may_delete_it() {
    let app = TestApp::new().await;
    let jake = app.register("jake").await;
    let ann = app.register("ann").await;
    let bob = app.register("bob").await;
    app.create_article(&jake, "Dragons", &[]).await;
    let id = app.comment(&ann, "dragons", "Mine").await.to_string();

    // Not even the article's author may delete someone else's comment.
    for other in [&jake, &bob] {
        let response = delete(&app, other, "dragons", &id).await;
        response.assert_error(StatusCode::FORBIDDEN, "comment");
        assert_eq!(response.body, json!({"errors": {"comment": ["forbidden"]}}));
    }
    app.delete(&format!("/api/articles/dragons/comments/{id}"), None)
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "token");
    assert_eq!(bodies(&app, "dragons", None).await, ["Mine"]);

    let response = delete(&app, &ann, "dragons", &id).await;
    assert_eq!(response.status, StatusCode::NO_CONTENT, "{}", response.text);
    assert_eq!(app.count("comments").await, 0);
}

#[tokio::test]
async fn a_comment_id_of_another_article_or_not_a_number_is_404_and_a_missing_article_is_named() {
    let app = TestApp::new().await;
    let jake = app.register("jake").await;
    app.create_article(&jake, "Dragons", &[]).await;
    app.create_article(&jake, "Unicorns", &[]).await;
    let id = app.comment(&jake, "dragons", "On dragons").await.to_string();

    let response = delete(&app, &jake, "no-such-article", &id).await;
    assert_eq!(response.body, json!({"errors": {"article": ["not found"]}}), "RealWorld 2.0 names the article");
    assert_eq!(response.status, StatusCode::NOT_FOUND);
    for (slug, id) in [
        ("unicorns", id.as_str()),
        ("dragons", "abc"),
        ("dragons", "1.5"),
        ("dragons", "-1"),
        ("dragons", "99999999999999999999"),
        ("dragons", "999999"),
    ] {
        let response = delete(&app, &jake, slug, id).await;
        response.assert_error(StatusCode::NOT_FOUND, "comment");
        assert_eq!(response.error_fields(), ["comment"], "{slug}/comments/{id}");
    }
    assert_eq!(bodies(&app, "dragons", None).await, ["On dragons"]);
}

#[tokio::test]
async fn deleting_a_comment_is_204() {
    let app = TestApp::new().await;
    let jake = app.register("jake").await;
    app.create_article(&jake, "Dragons", &[]).await;
    let first = app.comment(&jake, "dragons", "first").await.to_string();
    app.comment(&jake, "dragons", "second").await;

    let response = delete(&app, &jake, "dragons", &first).await;
    assert_eq!(response.status, StatusCode::NO_CONTENT, "{}", response.text);
    assert_eq!(response.text, "");
    assert_eq!(bodies(&app, "dragons", None).await, ["second"]);
    assert_eq!(app.count("comments").await, 1);

    delete(&app, &jake, "dragons", &first).await.assert_error(StatusCode::NOT_FOUND, "comment");
}

#[tokio::test]
async fn a_list_longer_than_a_page_comes_whole_newest_first_with_ties_in_id_order() {
    let app = TestApp::new().await;
    let jake = app.register("jake").await;
    app.register("ann").await;
    app.follow(&jake, "ann").await;
    let slug = app.create_article(&jake, "Dragons", &[]).await;
    // 130 comments of 5 KB: pages of 52, 52 and 26 (a page ends at 256 KiB of
    // bodies), at two distinct times, the first 70 sharing one time, so that a
    // page boundary falls among equal times.
    sqlx::query(
        "INSERT INTO comments (article_id, author_id, body, created_at, updated_at)
         SELECT a.id, u.id, 'comment ' || n || ' ' || repeat('x', 5000), t, t
         FROM articles a, users u, generate_series(1, 130) n,
              LATERAL (SELECT CASE WHEN n <= 70 THEN timestamptz '2026-01-01' ELSE timestamptz '2026-02-01' END) AS at(t)
         WHERE a.slug = $1 AND u.username = 'ann'",
    )
    .bind(&slug)
    .execute(&app.db)
    .await
    .expect("insert comments");
    let expected: Vec<String> = sqlx::query_scalar(
        "SELECT c.body FROM comments c JOIN articles a ON a.id = c.article_id
         WHERE a.slug = $1 ORDER BY c.created_at DESC, c.id DESC",
    )
    .bind(&slug)
    .fetch_all(&app.db)
    .await
    .expect("comments in order");
    assert_eq!(expected.len(), 130);

    for token in [None, Some(jake.as_str())] {
        let response = app.get(&format!("/api/articles/{slug}/comments"), token).await;
        assert_eq!(response.status, StatusCode::OK, "{}", response.text);
        assert_eq!(response.headers["content-type"], "application/json; charset=utf-8");
        let comments = response.body["comments"].as_array().expect("comments in valid JSON");
        let bodies: Vec<&str> = comments.iter().map(|c| c["body"].as_str().expect("body")).collect();
        assert_eq!(bodies, expected);
        let following = comments.iter().all(|c| c["author"]["following"] == json!(token.is_some()));
        assert!(following, "every page says whether the viewer follows the author");
    }
}
