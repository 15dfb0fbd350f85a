//! Articles: create, read, update, delete, list, feed and favorites.

use axum::{
    body::Body,
    http::{Method, Request, StatusCode, header},
};
use serde_json::{Value, json};

use crate::support::{TestApp, TestResponse, is_millis_timestamp};

/// A complete `article` object for `POST /api/articles`.
fn article(title: &str, tags: &[&str]) -> Value {
    json!({"title": title, "description": "Ever wonder how?", "body": "You have to believe", "tagList": tags})
}

async fn create(app: &TestApp, token: &str, article: Value) -> TestResponse {
    app.post("/api/articles", Some(token), json!({"article": article})).await
}

async fn update(app: &TestApp, token: &str, slug: &str, changes: Value) -> TestResponse {
    app.put(&format!("/api/articles/{slug}"), Some(token), json!({"article": changes})).await
}

async fn get(app: &TestApp, slug: &str, token: Option<&str>) -> TestResponse {
    app.get(&format!("/api/articles/{slug}"), token).await
}

/// The slugs of a list response, in order, and its `articlesCount`.
#[track_caller]
fn slugs_and_count(response: &TestResponse) -> (Vec<String>, i64) {
    assert_eq!(response.status, StatusCode::OK, "{}", response.text);
    let slugs = response.body["articles"]
        .as_array()
        .expect("articles")
        .iter()
        .map(|a| a["slug"].as_str().expect("slug").to_owned())
        .collect();
    (slugs, response.body["articlesCount"].as_i64().expect("articlesCount"))
}

async fn list(app: &TestApp, uri: &str, token: Option<&str>) -> (Vec<String>, i64) {
    slugs_and_count(&app.get(uri, token).await)
}

/// Asserts that `slug` is `base`, a dash and 8 lowercase hex digits.
#[track_caller]
fn assert_suffixed(slug: &str, base: &str) {
    let suffix = slug.strip_prefix(base).and_then(|rest| rest.strip_prefix('-'));
    assert!(
        suffix.is_some_and(|hex| hex.len() == 8 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))),
        "{slug} is not {base}-<8 lowercase hex digits>"
    );
}

fn keys(object: &Value) -> Vec<&str> {
    let mut keys: Vec<&str> = object.as_object().expect("an object").keys().map(String::as_str).collect();
    keys.sort_unstable();
    keys
}

#[tokio::test]
async fn creating_an_article_returns_201_with_the_full_article() {
    let app = TestApp::new().await;
    let token = app.register("jake").await;
    let response = create(
        &app,
        &token,
        json!({"title": "How to train your dragon", "description": "Ever wonder how?", "body": "You have to believe",
               "tagList": ["reactjs", "angularjs", "dragons"]}),
    )
    .await;
    assert_eq!(response.status, StatusCode::CREATED, "{}", response.text);
    assert_eq!(response.headers["content-type"], "application/json; charset=utf-8");
    let article = &response.body["article"];
    assert_eq!(
        keys(article),
        [
            "author",
            "body",
            "createdAt",
            "description",
            "favorited",
            "favoritesCount",
            "slug",
            "tagList",
            "title",
            "updatedAt"
        ]
    );
    assert_eq!(article["slug"], "how-to-train-your-dragon");
    assert_eq!(article["title"], "How to train your dragon");
    assert_eq!(article["description"], "Ever wonder how?");
    assert_eq!(article["body"], "You have to believe");
    assert_eq!(article["tagList"], json!(["angularjs", "dragons", "reactjs"]));
    assert_eq!(article["favorited"], false);
    assert_eq!(article["favoritesCount"], 0);
    assert_eq!(article["author"], json!({"username": "jake", "bio": null, "image": null, "following": false}));
    assert_eq!(article["createdAt"], article["updatedAt"]);

    let read = get(&app, "how-to-train-your-dragon", None).await;
    assert_eq!(read.status, StatusCode::OK, "{}", read.text);
    assert_eq!(read.body["article"], *article);
}

#[tokio::test]
async fn creating_an_article_with_missing_or_blank_fields_is_422_per_field() {
    let app = TestApp::new().await;
    let token = app.register("jake").await;

    let missing = create(&app, &token, json!({})).await;
    missing.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "title");
    assert_eq!(missing.error_fields(), ["body", "description", "title"]);

    let blank = create(&app, &token, json!({"title": "  ", "description": "", "body": "\n\t", "tagList": []})).await;
    blank.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "title");
    assert_eq!(blank.error_fields(), ["body", "description", "title"]);

    for field in ["title", "description", "body"] {
        let mut without = article("Dragons", &[]);
        without.as_object_mut().expect("object").remove(field);
        let response = create(&app, &token, without).await;
        response.assert_error(StatusCode::UNPROCESSABLE_ENTITY, field);
        assert_eq!(response.error_fields(), [field], "only {field} is blamed");

        let mut blank = article("Dragons", &[]);
        blank[field] = json!("   ");
        let response = create(&app, &token, blank).await;
        response.assert_error(StatusCode::UNPROCESSABLE_ENTITY, field);
        assert_eq!(response.error_fields(), [field], "only {field} is blamed");
    }
    assert_eq!(app.count("articles").await, 0);
}

#[tokio::test]
async fn an_overlong_title_or_a_blank_tag_is_422() {
    let app = TestApp::new().await;
    let token = app.register("jake").await;

    let long = create(&app, &token, article(&"t".repeat(201), &[])).await;
    long.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "title");
    assert_eq!(long.error_fields(), ["title"]);

    let blank_tag = create(&app, &token, article("Dragons", &["dragons", " "])).await;
    blank_tag.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "tagList");
    assert_eq!(blank_tag.error_fields(), ["tagList"]);

    let long_tag = "t".repeat(41);
    let response = create(&app, &token, article("Dragons", &[&long_tag])).await;
    response.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "tagList");

    let names: Vec<String> = (1..=21).map(|i| format!("tag{i}")).collect();
    let twenty_one: Vec<&str> = names.iter().map(String::as_str).collect();
    let too_many = create(&app, &token, article("Dragons", &twenty_one)).await;
    too_many.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "tagList");
    assert_eq!(app.count("articles").await, 0);
    assert_eq!(app.count("tags").await, 0);

    // The limits themselves are allowed.
    let longest = create(&app, &token, article(&"t".repeat(200), &twenty_one[..20])).await;
    assert_eq!(longest.status, StatusCode::CREATED, "{}", longest.text);
    assert_eq!(longest.body["article"]["tagList"].as_array().map(Vec::len), Some(20));
}

#[tokio::test]
async fn a_second_article_with_the_same_title_gets_a_suffixed_slug() {
    let app = TestApp::new().await;
    let jake = app.register("jake").await;
    let ann = app.register("ann").await;
    let first = app.create_article(&jake, "How to train your dragon", &[]).await;
    let second = app.create_article(&ann, "How to train your dragon", &[]).await;
    let third = app.create_article(&jake, "How to train your dragon!", &[]).await;

    assert_eq!(first, "how-to-train-your-dragon");
    assert_suffixed(&second, "how-to-train-your-dragon");
    assert_suffixed(&third, "how-to-train-your-dragon");
    assert_ne!(second, third);
    for (slug, author) in [(&first, "jake"), (&second, "ann"), (&third, "jake")] {
        let response = get(&app, slug, None).await;
        assert_eq!(response.status, StatusCode::OK, "{}", response.text);
        assert_eq!(response.body["article"]["author"]["username"], author);
    }
}

#[tokio::test]
async fn an_article_titled_feed_gets_a_suffixed_slug_and_is_reachable() {
    let app = TestApp::new().await;
    let token = app.register("jake").await;
    let slug = app.create_article(&token, "Feed", &[]).await;
    assert_suffixed(&slug, "feed");

    let read = get(&app, &slug, None).await;
    assert_eq!(read.status, StatusCode::OK, "{}", read.text);
    assert_eq!(read.body["article"]["title"], "Feed");
    assert_eq!(read.body["article"]["slug"], slug);

    // `/api/articles/feed` is still the feed, which is empty: jake follows nobody.
    let feed = app.get("/api/articles/feed", Some(&token)).await;
    assert_eq!(feed.status, StatusCode::OK, "{}", feed.text);
    assert_eq!(feed.body, json!({"articles": [], "articlesCount": 0}));
    app.get("/api/articles/feed", None).await.assert_error(StatusCode::UNAUTHORIZED, "token");

    // Renaming an article to "Feed" suffixes its slug too.
    app.create_article(&token, "Dragons", &[]).await;
    let renamed = update(&app, &token, "dragons", json!({"title": "Feed"})).await;
    assert_eq!(renamed.status, StatusCode::OK, "{}", renamed.text);
    let renamed_slug = renamed.body["article"]["slug"].as_str().expect("slug");
    assert_suffixed(renamed_slug, "feed");
    assert_ne!(renamed_slug, slug);
    assert_eq!(get(&app, renamed_slug, None).await.status, StatusCode::OK);
}

#[tokio::test]
async fn tag_lists_are_sorted_alphabetically_and_deduplicated() {
    let app = TestApp::new().await;
    let token = app.register("jake").await;
    let created = create(&app, &token, article("Dragons", &["training", "dragons", "training"])).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    assert_eq!(created.body["article"]["tagList"], json!(["dragons", "training"]));

    let read = get(&app, "dragons", None).await;
    assert_eq!(read.body["article"]["tagList"], json!(["dragons", "training"]));
    let listed = app.get("/api/articles", None).await;
    assert_eq!(listed.body["articles"][0]["tagList"], json!(["dragons", "training"]));
    assert_eq!(app.count("tags").await, 2);
    assert_eq!(app.count("article_tags").await, 2);
}

#[tokio::test]
async fn timestamps_are_rfc3339_utc_with_three_fractional_digits() {
    let app = TestApp::new().await;
    let token = app.register("jake").await;
    let created = create(&app, &token, article("Dragons", &[])).await;
    let comment = app
        .post("/api/articles/dragons/comments", Some(&token), json!({"comment": {"body": "Thank you so much!"}}))
        .await;
    let read = get(&app, "dragons", None).await;
    let listed = app.get("/api/articles", None).await;
    let comments = app.get("/api/articles/dragons/comments", None).await;

    let objects = [
        ("created article", &created.body["article"]),
        ("read article", &read.body["article"]),
        ("listed article", &listed.body["articles"][0]),
        ("created comment", &comment.body["comment"]),
        ("listed comment", &comments.body["comments"][0]),
    ];
    for (what, object) in objects {
        for field in ["createdAt", "updatedAt"] {
            assert!(is_millis_timestamp(&object[field]), "{what}.{field} = {}", object[field]);
        }
    }
}

#[tokio::test]
async fn stored_timestamps_are_shown_to_the_millisecond_on_both_sides_of_1970_and_2000() {
    let app = TestApp::new().await;
    let token = app.register("jake").await;
    create(&app, &token, article("Dragons", &[])).await;
    let comment = app.comment(&token, "dragons", "Thank you so much!").await;
    // PostgreSQL counts microseconds from 2000, the API's text from 1970:
    // either count may be negative, and sub-millisecond digits are cut, not rounded.
    for (stored, shown) in [
        ("1969-12-31 23:59:59.999999+00", "1969-12-31T23:59:59.999Z"),
        ("1999-12-31 23:59:59.123456+00", "1999-12-31T23:59:59.123Z"),
        ("2000-01-01 00:00:00+00", "2000-01-01T00:00:00.000Z"),
        ("2000-02-29 12:00:00.000999+00", "2000-02-29T12:00:00.000Z"),
        ("0001-01-01 00:00:00+00", "0001-01-01T00:00:00.000Z"),
        ("9999-12-31 23:59:59.999999+00", "9999-12-31T23:59:59.999Z"),
        ("10000-01-01 00:00:00+00", "+10000-01-01T00:00:00.000Z"),
    ] {
        for table in ["articles", "comments"] {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "UPDATE {table} SET created_at = $1::timestamptz, updated_at = $1::timestamptz"
            )))
            .bind(stored)
            .execute(&app.db)
            .await
            .expect("set the timestamps");
        }
        let read = get(&app, "dragons", None).await;
        let listed = app.get("/api/articles", None).await;
        let comments = app.get("/api/articles/dragons/comments", None).await;
        assert_eq!(comments.body["comments"][0]["id"], comment);
        for object in [&read.body["article"], &listed.body["articles"][0], &comments.body["comments"][0]] {
            assert_eq!(object["createdAt"], shown, "stored {stored}");
            assert_eq!(object["updatedAt"], shown, "stored {stored}");
        }
    }
}

#[tokio::test]
async fn server_assigned_article_fields_in_the_request_are_ignored() {
    let app = TestApp::new().await;
    let token = app.register("jake").await;
    app.register("ann").await;
    let mut forged = article("Dragons", &[]);
    for (field, value) in [
        ("slug", json!("my-own-slug")),
        ("author", json!({"username": "ann", "bio": "forged", "image": null, "following": true})),
        ("favorited", json!(true)),
        ("favoritesCount", json!(99)),
        ("createdAt", json!("2000-01-01T00:00:00.000Z")),
        ("updatedAt", json!("2000-01-01T00:00:00.000Z")),
    ] {
        forged[field] = value;
    }
    let response = create(&app, &token, forged).await;
    assert_eq!(response.status, StatusCode::CREATED, "{}", response.text);
    let article = &response.body["article"];
    assert_eq!(article["slug"], "dragons");
    assert_eq!(article["author"], json!({"username": "jake", "bio": null, "image": null, "following": false}));
    assert_eq!(article["favorited"], false);
    assert_eq!(article["favoritesCount"], 0);
    for field in ["createdAt", "updatedAt"] {
        assert!(!article[field].as_str().expect("timestamp").starts_with("2000-"), "{field}: {}", article[field]);
    }
    assert_eq!(get(&app, "my-own-slug", None).await.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn getting_an_unknown_article_is_404() {
    let app = TestApp::new().await;
    let token = app.register("jake").await;
    get(&app, "no-such-article", None).await.assert_error(StatusCode::NOT_FOUND, "article");
    let with_token = get(&app, "no-such-article", Some(&token)).await;
    with_token.assert_error(StatusCode::NOT_FOUND, "article");
    assert_eq!(with_token.error_fields(), ["article"]);
}

#[tokio::test]
async fn updating_an_article_changes_only_the_given_fields() {
    let app = TestApp::new().await;
    let token = app.register("jake").await;
    let before = create(&app, &token, article("Dragons", &["dragons"])).await.body["article"].clone();

    let response = update(&app, &token, "dragons", json!({"description": "A new description"})).await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.text);
    let after = &response.body["article"];
    assert_eq!(after["description"], "A new description");
    for unchanged in ["slug", "title", "body", "tagList", "createdAt", "favorited", "favoritesCount", "author"] {
        assert_eq!(after[unchanged], before[unchanged], "{unchanged}");
    }
    // Fixed-width timestamps compare as text.
    assert!(
        after["updatedAt"].as_str() >= before["updatedAt"].as_str(),
        "{} < {}",
        after["updatedAt"],
        before["updatedAt"]
    );

    let response = update(&app, &token, "dragons", json!({"body": "A new body"})).await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.text);
    let read = get(&app, "dragons", None).await;
    let article = &read.body["article"];
    assert_eq!(article["body"], "A new body");
    assert_eq!(article["description"], "A new description");
    assert_eq!(article["title"], "Dragons");
    assert_eq!(article["tagList"], json!(["dragons"]));
}

#[tokio::test]
async fn updating_with_a_blank_field_is_422_and_changes_nothing() {
    let app = TestApp::new().await;
    let token = app.register("jake").await;
    app.create_article(&token, "Dragons", &[]).await;

    let response = update(&app, &token, "dragons", json!({"title": " ", "body": "A new body"})).await;
    response.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "title");
    assert_eq!(response.error_fields(), ["title"]);
    let response = update(&app, &token, "dragons", json!({"tagList": [""]})).await;
    response.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "tagList");

    let read = get(&app, "dragons", None).await;
    assert_eq!(read.body["article"]["title"], "Dragons");
    assert_eq!(read.body["article"]["body"], "the body");
}

#[tokio::test]
async fn changing_the_title_changes_the_slug_and_the_old_slug_is_404() {
    let app = TestApp::new().await;
    let token = app.register("jake").await;
    app.create_article(&token, "How to train your dragon", &[]).await;

    let response = update(&app, &token, "how-to-train-your-dragon", json!({"title": "Dragons for beginners"})).await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.text);
    assert_eq!(response.body["article"]["slug"], "dragons-for-beginners");
    assert_eq!(response.body["article"]["title"], "Dragons for beginners");

    get(&app, "how-to-train-your-dragon", None).await.assert_error(StatusCode::NOT_FOUND, "article");
    let read = get(&app, "dragons-for-beginners", None).await;
    assert_eq!(read.status, StatusCode::OK, "{}", read.text);
    assert_eq!(read.body["article"]["title"], "Dragons for beginners");
    assert_eq!(app.count("articles").await, 1);
}

#[tokio::test]
async fn changing_the_title_to_a_taken_slug_gets_a_suffixed_slug() {
    let app = TestApp::new().await;
    let token = app.register("jake").await;
    app.create_article(&token, "Dragons", &[]).await;
    app.create_article(&token, "Unicorns", &[]).await;

    let response = update(&app, &token, "unicorns", json!({"title": "Dragons"})).await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.text);
    let slug = response.body["article"]["slug"].as_str().expect("slug");
    assert_suffixed(slug, "dragons");
    assert_eq!(get(&app, "dragons", None).await.status, StatusCode::OK, "the first article keeps its slug");
    assert_eq!(get(&app, slug, None).await.status, StatusCode::OK);
    get(&app, "unicorns", None).await.assert_error(StatusCode::NOT_FOUND, "article");
}

#[tokio::test]
async fn keeping_the_title_keeps_the_slug() {
    let app = TestApp::new().await;
    let token = app.register("jake").await;
    let slug = app.create_article(&token, "How to train your dragon", &[]).await;
    let suffixed = app.create_article(&token, "How to train your dragon", &[]).await;

    let response = update(&app, &token, &slug, json!({"body": "New body"})).await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.text);
    assert_eq!(response.body["article"]["slug"], slug);

    let response = update(&app, &token, &slug, json!({"title": "How to train your dragon"})).await;
    assert_eq!(response.body["article"]["slug"], slug);

    let response = update(&app, &token, &slug, json!({"title": "How to Train Your Dragon!"})).await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.text);
    assert_eq!(response.body["article"]["slug"], slug);
    assert_eq!(response.body["article"]["title"], "How to Train Your Dragon!");

    // A suffixed slug is kept too, rather than traded for another suffix.
    let response = update(&app, &token, &suffixed, json!({"title": "How to train your dragon?"})).await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.text);
    assert_eq!(response.body["article"]["slug"], suffixed);
    assert_eq!(response.body["article"]["title"], "How to train your dragon?");
}

#[tokio::test]
async fn updating_the_tag_list_replaces_the_tags_and_null_is_422() {
    let app = TestApp::new().await;
    let token = app.register("jake").await;
    app.create_article(&token, "Dragons", &["angular", "dragons"]).await;

    // RealWorld 2.0: `null` is not a tag list (`[]` is how to remove them all).
    let response = update(&app, &token, "dragons", json!({"tagList": null, "body": "new body"})).await;
    response.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "tagList");
    let unchanged = get(&app, "dragons", None).await;
    assert_eq!(unchanged.body["article"]["tagList"], json!(["angular", "dragons"]));
    assert_ne!(unchanged.body["article"]["body"], "new body");

    let response = update(&app, &token, "dragons", json!({"tagList": ["training", "dragons"]})).await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.text);
    assert_eq!(response.body["article"]["tagList"], json!(["dragons", "training"]));
    assert_eq!(get(&app, "dragons", None).await.body["article"]["tagList"], json!(["dragons", "training"]));
    assert_eq!(app.get("/api/tags", None).await.body, json!({"tags": ["dragons", "training"]}));

    // Without `tagList` the tags stay; an empty one removes them all.
    let response = update(&app, &token, "dragons", json!({"title": "Dragons"})).await;
    assert_eq!(response.body["article"]["tagList"], json!(["dragons", "training"]));
    let response = update(&app, &token, "dragons", json!({"tagList": []})).await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.text);
    assert_eq!(response.body["article"]["tagList"], json!([]));
    assert_eq!(app.count("article_tags").await, 0);
}

#[tokio::test]
async fn only_the_author_may_update_or_delete_an_article() {
    let app = TestApp::new().await;
    let jake = app.register("jake").await;
    let ann = app.register("ann").await;
    app.create_article(&jake, "Dragons", &[]).await;

    let response = update(&app, &ann, "dragons", json!({"title": "Mine now"})).await;
    response.assert_error(StatusCode::FORBIDDEN, "article");
    assert_eq!(response.body, json!({"errors": {"article": ["forbidden"]}}));
    let response = app.delete("/api/articles/dragons", Some(&ann)).await;
    response.assert_error(StatusCode::FORBIDDEN, "article");
    assert_eq!(response.body, json!({"errors": {"article": ["forbidden"]}}));

    let read = get(&app, "dragons", None).await;
    assert_eq!(read.status, StatusCode::OK);
    assert_eq!(read.body["article"]["title"], "Dragons");

    update(&app, &jake, "no-such-article", json!({"title": "x"})).await.assert_error(StatusCode::NOT_FOUND, "article");
    app.delete("/api/articles/no-such-article", Some(&jake)).await.assert_error(StatusCode::NOT_FOUND, "article");

    let anonymous = app.put("/api/articles/dragons", None, json!({"article": {"title": "x"}})).await;
    anonymous.assert_error(StatusCode::UNAUTHORIZED, "token");
    app.delete("/api/articles/dragons", None).await.assert_error(StatusCode::UNAUTHORIZED, "token");
    assert_eq!(app.count("articles").await, 1);
}

#[tokio::test]
async fn deleting_an_article_is_204_and_removes_its_comments_and_favorites() {
    let app = TestApp::new().await;
    let jake = app.register("jake").await;
    let ann = app.register("ann").await;
    app.create_article(&jake, "Dragons", &["dragons"]).await;
    app.create_article(&jake, "Unicorns", &["dragons"]).await;
    app.comment(&ann, "dragons", "Great!").await;
    app.comment(&ann, "unicorns", "Also great!").await;
    app.favorite(&ann, "dragons").await;
    app.favorite(&ann, "unicorns").await;

    let response = app.delete("/api/articles/dragons", Some(&jake)).await;
    assert_eq!(response.status, StatusCode::NO_CONTENT, "{}", response.text);
    assert_eq!(response.text, "");

    get(&app, "dragons", None).await.assert_error(StatusCode::NOT_FOUND, "article");
    app.get("/api/articles/dragons/comments", None).await.assert_error(StatusCode::NOT_FOUND, "article");
    assert_eq!(app.count("articles").await, 1);
    assert_eq!(app.count("comments").await, 1);
    assert_eq!(app.count("favorites").await, 1);
    assert_eq!(app.count("article_tags").await, 1);
    let (slugs, count) = list(&app, "/api/articles?favorited=ann", None).await;
    assert_eq!((slugs, count), (vec!["unicorns".to_owned()], 1));

    app.delete("/api/articles/dragons", Some(&jake)).await.assert_error(StatusCode::NOT_FOUND, "article");
}

#[tokio::test]
async fn listing_returns_newest_first_without_bodies_and_the_total_count() {
    let app = TestApp::new().await;
    let jake = app.register("jake").await;
    let ann = app.register("ann").await;
    app.create_article(&jake, "First", &["dragons"]).await;
    app.create_article(&ann, "Second", &[]).await;
    app.create_article(&jake, "Third", &[]).await;

    let response = app.get("/api/articles", None).await;
    assert_eq!(slugs_and_count(&response), (vec!["third".into(), "second".into(), "first".into()], 3));
    for item in response.body["articles"].as_array().expect("articles") {
        assert_eq!(
            keys(item),
            [
                "author",
                "createdAt",
                "description",
                "favorited",
                "favoritesCount",
                "slug",
                "tagList",
                "title",
                "updatedAt"
            ],
            "no body in lists"
        );
    }
    let first = &response.body["articles"][2];
    assert_eq!(first["title"], "First");
    assert_eq!(first["description"], "about it");
    assert_eq!(first["tagList"], json!(["dragons"]));
    assert_eq!(first["author"], json!({"username": "jake", "bio": null, "image": null, "following": false}));

    let empty = TestApp::new().await;
    assert_eq!(empty.get("/api/articles", None).await.body, json!({"articles": [], "articlesCount": 0}));
}

#[tokio::test]
async fn list_items_are_seen_by_the_viewer() {
    let app = TestApp::new().await;
    let jake = app.register("jake").await;
    let ann = app.register("ann").await;
    app.create_article(&jake, "Dragons", &[]).await;
    app.follow(&ann, "jake").await;
    app.favorite(&ann, "dragons").await;

    let seen_by_ann = app.get("/api/articles", Some(&ann)).await;
    assert_eq!(seen_by_ann.body["articles"][0]["favorited"], true);
    assert_eq!(seen_by_ann.body["articles"][0]["favoritesCount"], 1);
    assert_eq!(seen_by_ann.body["articles"][0]["author"]["following"], true);
    let anonymous = app.get("/api/articles", None).await;
    assert_eq!(anonymous.body["articles"][0]["favorited"], false);
    assert_eq!(anonymous.body["articles"][0]["favoritesCount"], 1);
    assert_eq!(anonymous.body["articles"][0]["author"]["following"], false);

    let read = get(&app, "dragons", Some(&ann)).await;
    assert_eq!(read.body["article"]["favorited"], true);
    assert_eq!(read.body["article"]["author"]["following"], true);
    let read = get(&app, "dragons", Some(&jake)).await;
    assert_eq!(read.body["article"]["favorited"], false);
    assert_eq!(read.body["article"]["author"]["following"], false);
}

/// Every field of a listed article comes from its own column: each field here
/// has a value no other field has, so that a column read in the wrong place
/// shows, in every kind of list and for each viewer.
#[tokio::test]
async fn a_listed_article_is_the_single_article_without_its_body_in_every_list() {
    let app = TestApp::new().await;
    let jake = app.register("jake").await;
    let ann = app.register("ann").await;
    let bob = app.register("bob").await;
    let profile = json!({"user": {"bio": "Dragon keeper", "image": "https://example.com/jake.png"}});
    assert_eq!(app.put("/api/user", Some(&jake), profile).await.status, StatusCode::OK);
    let tags = ["z\u{e9}ro \u{1f980}", "with \"quotes\", {braces}", "back\\slash"];
    let created = create(
        &app,
        &jake,
        json!({"title": "How to Train", "description": "Ever wonder?",
        "body": "Believe", "tagList": tags}),
    )
    .await;
    let slug = created.body["article"]["slug"].as_str().expect("slug").to_owned();
    let later = update(&app, &jake, &slug, json!({"description": "Ever wondered?"})).await;
    assert_ne!(later.body["article"]["updatedAt"], later.body["article"]["createdAt"]);
    app.follow(&ann, "jake").await;
    app.favorite(&bob, &slug).await;

    for (viewer, token) in [("anonymous", None), ("a follower", Some(ann.as_str())), ("a fan", Some(bob.as_str()))] {
        let mut expected = get(&app, &slug, token).await.body["article"].clone();
        expected.as_object_mut().expect("an article").remove("body");
        let mut lists = vec![
            "/api/articles",
            "/api/articles?author=jake",
            "/api/articles?favorited=bob",
            "/api/articles?tag=back%5Cslash",
            "/api/articles?author=jake&favorited=bob",
        ];
        if token == Some(ann.as_str()) {
            lists.push("/api/articles/feed");
        }
        for uri in lists {
            let listed = app.get(uri, token).await;
            assert_eq!(listed.body["articles"], json!([expected]), "{uri} as {viewer}");
        }
    }
}

#[tokio::test]
async fn filters_combine_with_and() {
    let app = TestApp::new().await;
    let jake = app.register("jake").await;
    let ann = app.register("ann").await;
    app.create_article(&jake, "Alpha", &["dragons"]).await;
    app.create_article(&jake, "Beta", &["dragons", "training"]).await;
    app.create_article(&ann, "Gamma", &["dragons"]).await;
    app.favorite(&ann, "alpha").await;
    app.favorite(&ann, "gamma").await;
    app.favorite(&jake, "gamma").await;

    let cases: &[(&str, &[&str])] = &[
        ("tag=dragons", &["gamma", "beta", "alpha"]),
        ("tag=training", &["beta"]),
        ("tag=Dragons", &[]),
        ("tag=nothing", &[]),
        ("author=jake", &["beta", "alpha"]),
        ("author=nobody", &[]),
        ("tag=training&author=jake", &["beta"]),
        ("tag=training&author=ann", &[]),
        ("favorited=ann", &["gamma", "alpha"]),
        ("favorited=jake", &["gamma"]),
        ("favorited=ann&author=jake", &["alpha"]),
        ("favorited=ann&tag=training", &[]),
        ("tag=dragons&author=ann&favorited=jake", &["gamma"]),
        ("tag=dragons&author=jake&favorited=ann", &["alpha"]),
    ];
    for (query, expected) in cases {
        let (slugs, count) = list(&app, &format!("/api/articles?{query}"), None).await;
        assert_eq!(slugs, *expected, "?{query}");
        assert_eq!(count, i64::try_from(expected.len()).expect("small"), "?{query}");
    }
}

#[tokio::test]
async fn an_empty_filter_parameter_is_ignored() {
    let app = TestApp::new().await;
    let token = app.register("jake").await;
    app.create_article(&token, "Alpha", &["dragons"]).await;
    app.create_article(&token, "Beta", &[]).await;

    let all = (vec!["beta".to_owned(), "alpha".to_owned()], 2);
    for query in ["tag=", "author=", "favorited=", "tag=&author=&favorited=", "tag=%20"] {
        assert_eq!(list(&app, &format!("/api/articles?{query}"), None).await, all, "?{query}");
    }
    assert_eq!(list(&app, "/api/articles?tag=&author=jake", None).await, all);
    assert_eq!(list(&app, "/api/articles?tag=dragons&author=", None).await, (vec!["alpha".to_owned()], 1));
}

#[tokio::test]
async fn limit_and_offset_page_through_the_list() {
    let app = TestApp::new().await;
    let token = app.register("jake").await;
    for i in 1..=5 {
        app.create_article(&token, &format!("Article {i}"), &[]).await;
    }
    let slugs = |numbers: &[u8]| numbers.iter().map(|n| format!("article-{n}")).collect::<Vec<_>>();

    assert_eq!(list(&app, "/api/articles?limit=2", None).await, (slugs(&[5, 4]), 5));
    assert_eq!(list(&app, "/api/articles?limit=2&offset=2", None).await, (slugs(&[3, 2]), 5));
    assert_eq!(list(&app, "/api/articles?limit=2&offset=4", None).await, (slugs(&[1]), 5));
    assert_eq!(list(&app, "/api/articles?offset=1", None).await, (slugs(&[4, 3, 2, 1]), 5));
    assert_eq!(list(&app, "/api/articles?limit=1", None).await, (slugs(&[5]), 5));
    assert_eq!(list(&app, "/api/articles?limit=100&offset=0", None).await, (slugs(&[5, 4, 3, 2, 1]), 5));
    assert_eq!(list(&app, "/api/articles?author=jake&limit=3&offset=3", None).await, (slugs(&[2, 1]), 5));
}

#[tokio::test]
async fn the_default_page_is_the_newest_twenty() {
    let app = TestApp::new().await;
    let token = app.register("jake").await;
    for i in 1..=21 {
        app.create_article(&token, &format!("Article {i}"), &[]).await;
    }
    let (slugs, count) = list(&app, "/api/articles", None).await;
    assert_eq!(count, 21);
    assert_eq!(slugs.len(), 20);
    assert_eq!(slugs.first().map(String::as_str), Some("article-21"));
    assert_eq!(slugs.last().map(String::as_str), Some("article-2"));
}

#[tokio::test]
async fn limit_outside_1_to_100_or_a_negative_or_non_numeric_offset_is_422() {
    let app = TestApp::new().await;
    let token = app.register("jake").await;
    for limit in ["0", "101", "-1", "ten", "1.5", "99999999999999999999"] {
        let response = app.get(&format!("/api/articles?limit={limit}"), None).await;
        response.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "limit");
        assert_eq!(response.error_fields(), ["limit"], "limit={limit}");
    }
    for offset in ["-1", "x", "0.5"] {
        let response = app.get(&format!("/api/articles?offset={offset}"), None).await;
        response.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "offset");
        assert_eq!(response.error_fields(), ["offset"], "offset={offset}");
    }
    let both = app.get("/api/articles?limit=0&offset=-1", None).await;
    both.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "limit");
    assert_eq!(both.error_fields(), ["limit", "offset"]);

    let feed = app.get("/api/articles/feed?limit=101&offset=-5", Some(&token)).await;
    feed.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "limit");
    assert_eq!(feed.error_fields(), ["limit", "offset"]);
}

#[tokio::test]
async fn an_offset_past_the_end_returns_no_articles_but_the_total() {
    let app = TestApp::new().await;
    let token = app.register("jake").await;
    app.create_article(&token, "Alpha", &["dragons"]).await;
    app.create_article(&token, "Beta", &[]).await;

    let response = app.get("/api/articles?offset=5", None).await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.text);
    assert_eq!(response.body, json!({"articles": [], "articlesCount": 2}));
    assert_eq!(list(&app, "/api/articles?offset=2", None).await, (vec![], 2));
    assert_eq!(list(&app, "/api/articles?tag=dragons&offset=1", None).await, (vec![], 1));
}

#[tokio::test]
async fn the_feed_lists_only_followed_authors_newest_first() {
    let app = TestApp::new().await;
    let jake = app.register("jake").await;
    let ann = app.register("ann").await;
    let bob = app.register("bob").await;
    let carl = app.register("carl").await;
    app.create_article(&ann, "Ann one", &[]).await;
    app.create_article(&bob, "Bob one", &[]).await;
    app.create_article(&carl, "Carl one", &[]).await;
    app.create_article(&ann, "Ann two", &[]).await;
    app.create_article(&jake, "Jake one", &[]).await;
    app.follow(&jake, "ann").await;
    app.follow(&jake, "bob").await;
    app.follow(&ann, "carl").await;

    let response = app.get("/api/articles/feed", Some(&jake)).await;
    assert_eq!(slugs_and_count(&response), (vec!["ann-two".into(), "bob-one".into(), "ann-one".into()], 3));
    for item in response.body["articles"].as_array().expect("articles") {
        assert_eq!(item["author"]["following"], true, "{item}");
        assert!(item.get("body").is_none(), "no body in the feed");
    }
    assert_eq!(list(&app, "/api/articles/feed?limit=1&offset=1", Some(&jake)).await, (vec!["bob-one".into()], 3));
    assert_eq!(list(&app, "/api/articles/feed", Some(&ann)).await, (vec!["carl-one".into()], 1));
    assert_eq!(list(&app, "/api/articles/feed", Some(&bob)).await, (vec![], 0));

    let unfollowed = app.delete("/api/profiles/bob/follow", Some(&jake)).await;
    assert_eq!(unfollowed.status, StatusCode::OK, "{}", unfollowed.text);
    assert_eq!(list(&app, "/api/articles/feed", Some(&jake)).await, (vec!["ann-two".into(), "ann-one".into()], 2));
}

#[tokio::test]
async fn the_feed_requires_a_token() {
    let app = TestApp::new().await;
    let response = app.get("/api/articles/feed", None).await;
    response.assert_error(StatusCode::UNAUTHORIZED, "token");
    assert_eq!(response.error_fields(), ["token"]);
    app.get("/api/articles/feed", Some("not-a-token")).await.assert_error(StatusCode::UNAUTHORIZED, "token");
}

#[tokio::test]
async fn favoriting_and_unfavoriting_update_the_count_and_flag() {
    let app = TestApp::new().await;
    let jake = app.register("jake").await;
    let ann = app.register("ann").await;
    let bob = app.register("bob").await;
    app.create_article(&jake, "Dragons", &[]).await;

    let response = app.post("/api/articles/dragons/favorite", Some(&ann), json!({})).await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.text);
    assert_eq!(response.body["article"]["slug"], "dragons");
    assert_eq!(response.body["article"]["body"], "the body");
    assert_eq!(response.body["article"]["favorited"], true);
    assert_eq!(response.body["article"]["favoritesCount"], 1);

    let response = app.post("/api/articles/dragons/favorite", Some(&bob), json!({})).await;
    assert_eq!(response.body["article"]["favorited"], true);
    assert_eq!(response.body["article"]["favoritesCount"], 2);

    for (viewer, favorited) in [(Some(jake.as_str()), false), (Some(ann.as_str()), true), (None, false)] {
        let read = get(&app, "dragons", viewer).await;
        assert_eq!(read.body["article"]["favorited"], favorited);
        assert_eq!(read.body["article"]["favoritesCount"], 2);
    }

    let response = app.delete("/api/articles/dragons/favorite", Some(&ann)).await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.text);
    assert_eq!(response.body["article"]["favorited"], false);
    assert_eq!(response.body["article"]["favoritesCount"], 1);

    // Unfavoriting again changes nothing.
    let response = app.delete("/api/articles/dragons/favorite", Some(&ann)).await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.text);
    assert_eq!(response.body["article"]["favorited"], false);
    assert_eq!(response.body["article"]["favoritesCount"], 1);

    let listed = app.get("/api/articles", Some(&bob)).await;
    assert_eq!(listed.body["articles"][0]["favorited"], true);
    assert_eq!(listed.body["articles"][0]["favoritesCount"], 1);

    let anonymous = app.post("/api/articles/dragons/favorite", None, json!({})).await;
    anonymous.assert_error(StatusCode::UNAUTHORIZED, "token");
}

#[tokio::test]
async fn favoriting_twice_counts_once() {
    let app = TestApp::new().await;
    let jake = app.register("jake").await;
    let ann = app.register("ann").await;
    app.create_article(&jake, "Dragons", &[]).await;
    app.favorite(&ann, "dragons").await;

    let response = app.post("/api/articles/dragons/favorite", Some(&ann), json!({})).await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.text);
    assert_eq!(response.body["article"]["favorited"], true);
    assert_eq!(response.body["article"]["favoritesCount"], 1);
    assert_eq!(app.count("favorites").await, 1);
}

#[tokio::test]
async fn favoriting_an_unknown_article_is_404() {
    let app = TestApp::new().await;
    let token = app.register("jake").await;
    let favorite = app.post("/api/articles/no-such-article/favorite", Some(&token), json!({})).await;
    favorite.assert_error(StatusCode::NOT_FOUND, "article");
    assert_eq!(favorite.error_fields(), ["article"]);
    let unfavorite = app.delete("/api/articles/no-such-article/favorite", Some(&token)).await;
    unfavorite.assert_error(StatusCode::NOT_FOUND, "article");
    assert_eq!(app.count("favorites").await, 0);
}

#[tokio::test]
async fn favoriting_answers_with_the_article_even_if_it_was_renamed_meanwhile() {
    let app = TestApp::new().await;
    let jake = app.register("jake").await;
    let ann = app.register("ann").await;
    app.create_article(&jake, "Dragons", &[]).await;
    // A rename that lands between the write and the answer, made certain: each
    // change to a favorite renames its article in the same statement.
    sqlx::raw_sql(
        "CREATE FUNCTION rename_favorited() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             UPDATE articles SET slug = 'renamed-' || slug
             WHERE id = COALESCE(NEW.article_id, OLD.article_id);
             RETURN NULL;
         END $$;
         CREATE TRIGGER rename_favorited AFTER INSERT OR DELETE ON favorites
             FOR EACH ROW EXECUTE FUNCTION rename_favorited();",
    )
    .execute(&app.db)
    .await
    .expect("install the renaming trigger");

    let response = app.post("/api/articles/dragons/favorite", Some(&ann), json!({})).await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.text);
    assert_eq!(response.body["article"]["slug"], "renamed-dragons");
    assert_eq!(response.body["article"]["favorited"], true);
    assert_eq!(response.body["article"]["favoritesCount"], 1);

    let response = app.delete("/api/articles/renamed-dragons/favorite", Some(&ann)).await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.text);
    assert_eq!(response.body["article"]["slug"], "renamed-renamed-dragons");
    assert_eq!(response.body["article"]["favorited"], false);
    assert_eq!(response.body["article"]["favoritesCount"], 0);
}

#[tokio::test]
async fn favorite_accepts_an_empty_json_body() {
    let app = TestApp::new().await;
    let jake = app.register("jake").await;
    let ann = app.register("ann").await;
    app.create_article(&jake, "Dragons", &[]).await;

    let request = Request::builder()
        .method(Method::POST)
        .uri("/api/articles/dragons/favorite")
        .header(header::AUTHORIZATION, format!("Token {ann}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::empty())
        .expect("valid request");
    let response = app.send(request).await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.text);
    assert_eq!(response.body["article"]["favorited"], true);
    assert_eq!(response.body["article"]["favoritesCount"], 1);

    // No body and no content type at all is fine too.
    let response = app.request(Method::POST, "/api/articles/dragons/favorite", Some(&jake), None).await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.text);
    assert_eq!(response.body["article"]["favoritesCount"], 2);
}

#[tokio::test]
async fn a_failed_tag_write_leaves_no_article_behind() {
    let app = TestApp::new().await;
    let token = app.register("jake").await;
    sqlx::raw_sql(
        "CREATE FUNCTION fail_tags() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'boom'; END $$;
         CREATE TRIGGER fail_tags BEFORE INSERT ON article_tags FOR EACH ROW EXECUTE FUNCTION fail_tags();",
    )
    .execute(&app.db)
    .await
    .expect("install the failing trigger");

    let response = create(&app, &token, article("Dragons", &["dragons", "training"])).await;
    response.assert_error(StatusCode::INTERNAL_SERVER_ERROR, "server");
    assert_eq!(response.error_fields(), ["server"]);
    assert!(!response.text.contains("boom"), "the cause leaks: {}", response.text);
    assert_eq!(app.count("articles").await, 0);
    assert_eq!(app.count("tags").await, 0);
    assert_eq!(app.count("article_tags").await, 0);
    get(&app, "dragons", None).await.assert_error(StatusCode::NOT_FOUND, "article");

    // Without tags nothing touches the failing table, and the slug is still free.
    assert_eq!(app.create_article(&token, "Dragons", &[]).await, "dragons");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_articles_sharing_tags_are_all_written() {
    // Writers of overlapping tag sets once locked existing tags in different orders
    // and deadlocked (a 500 for about half of them).
    let app = std::sync::Arc::new(TestApp::new().await);
    let token = app.register("jake").await;
    let tags: Vec<String> = (0..12).map(|i| format!("t{i:02}")).collect();
    let sizes: Vec<usize> = (0..64).map(|i| 2 + i % 9).collect();
    let writers = sizes.iter().enumerate().map(|(i, &size)| {
        let (app, token) = (app.clone(), token.clone());
        let mut mine: Vec<String> = tags.iter().cycle().skip(i * 5 % 12).take(size).cloned().collect();
        if i % 2 == 0 {
            mine.reverse();
        }
        let body = json!({"title": format!("Article {i}"), "description": "d", "body": "b", "tagList": mine});
        tokio::spawn(async move { create(&app, &token, body).await })
    });
    for writer in writers {
        let response = writer.await.expect("writer");
        assert_eq!(response.status, StatusCode::CREATED, "{}", response.text);
    }
    assert_eq!(app.count("articles").await, 64);
    assert_eq!(app.count("tags").await, 12);
    assert_eq!(app.count("article_tags").await, i64::try_from(sizes.iter().sum::<usize>()).expect("small"));
}

#[tokio::test]
async fn every_article_keeps_exactly_its_own_body_through_taken_slugs_updates_and_deletes() {
    let app = TestApp::new().await;
    let jake = app.register("jake").await;
    let ann = app.register("ann").await;
    let body = |text: &str| json!({"title": "Dragons", "description": "d", "body": text, "tagList": []});
    assert_eq!(create(&app, &jake, body("first")).await.status, StatusCode::CREATED);
    // The slug is taken: the first insert is refused and retried under another slug.
    let second = create(&app, &ann, body("second")).await;
    assert_eq!(second.status, StatusCode::CREATED, "{}", second.text);
    let second = second.body["article"]["slug"].as_str().expect("slug").to_owned();

    let renamed = update(&app, &jake, "dragons", json!({"title": "Wyverns", "body": "first, again"})).await;
    assert_eq!(renamed.body["article"]["body"], "first, again", "{}", renamed.text);
    let titled = update(&app, &ann, &second, json!({"description": "no body given"})).await;
    assert_eq!(titled.body["article"]["body"], "second", "{}", titled.text);
    assert_eq!(get(&app, "wyverns", None).await.body["article"]["body"], "first, again");
    assert_eq!((app.count("articles").await, app.count("article_bodies").await), (2, 2));

    assert_eq!(app.delete("/api/articles/wyverns", Some(&jake)).await.status, StatusCode::NO_CONTENT);
    assert_eq!((app.count("articles").await, app.count("article_bodies").await), (1, 1));
}

#[tokio::test]
async fn an_empty_update_changes_nothing_not_even_updated_at() {
    let app = TestApp::new().await;
    let token = app.register("jake").await;
    let created = create(&app, &token, article("Dragons", &["dragons"])).await;
    let response = update(&app, &token, "dragons", json!({})).await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.text);
    assert_eq!(response.body["article"]["updatedAt"], created.body["article"]["updatedAt"]);
    assert_eq!(response.body["article"]["tagList"], json!(["dragons"]));
}

#[tokio::test]
async fn control_characters_in_text_fields_are_422_naming_the_field() {
    let app = TestApp::new().await;
    let token = app.register("jake").await;
    let response =
        create(&app, &token, json!({"title": "He\u{0}llo", "description": "d\u{7}", "body": "line\nbreaks\tare fine"}))
            .await;
    assert_eq!(response.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", response.text);
    assert!(response.body["errors"]["title"].is_array(), "{}", response.text);
    assert!(response.body["errors"]["description"].is_array(), "{}", response.text);
    assert!(response.body["errors"].get("body").is_none(), "{}", response.text);
}

#[tokio::test]
async fn nul_bytes_in_paths_queries_and_logins_are_client_errors() {
    let app = TestApp::new().await;
    let token = app.register("jake").await;
    for uri in ["/api/articles/a%00b", "/api/articles?tag=a%00b", "/api/profiles/a%00b", "/api/articles/a%00b/comments"]
    {
        let response = app.get(uri, Some(&token)).await;
        assert_eq!(response.status, StatusCode::BAD_REQUEST, "{uri}: {}", response.text);
        assert!(response.body["errors"]["body"].is_array(), "{uri}: {}", response.text);
    }
    let login =
        app.post("/api/users/login", None, json!({"user": {"email": "jake\u{0}@example.com", "password": "x"}})).await;
    assert_eq!(login.status, StatusCode::UNAUTHORIZED, "{}", login.text);
}

#[tokio::test]
async fn counters_stay_exact_under_concurrent_creates_retags_favorites_and_deletes() {
    // Totals and tag counts are kept by triggers that serialise article writers on
    // one row (see migrations/..._counters.sql); they, and the tag lists copied into
    // articles (migrations/..._tag_lists.sql), must match a full recount.
    let app = std::sync::Arc::new(TestApp::new().await);
    let token = app.register("jake").await;
    let fan = app.register("anne").await;
    let writers = (0..12usize).map(|i| {
        let (app, token, fan) = (app.clone(), token.clone(), fan.clone());
        tokio::spawn(async move {
            let tags = &["dragons", "training"][..(i % 3).min(2)];
            let slug = app.create_article(&token, &format!("T{i}"), tags).await;
            let favorited = app.post(&format!("/api/articles/{slug}/favorite"), Some(&fan), json!({})).await;
            assert_eq!(favorited.status, StatusCode::OK, "{}", favorited.text);
            if i % 4 == 0 {
                let retagged = update(&app, &token, &slug, json!({ "tagList": ["zebra", "dragons"] })).await;
                assert_eq!(retagged.status, StatusCode::OK, "{}", retagged.text);
            }
            if i % 5 == 0 {
                let deleted = app.delete(&format!("/api/articles/{slug}"), Some(&token)).await;
                assert_eq!(deleted.status, StatusCode::NO_CONTENT, "{}", deleted.text);
            }
        })
    });
    for writer in writers.collect::<Vec<_>>() {
        writer.await.expect("writer");
    }
    let mismatches: i64 = sqlx::query_scalar(
        r#"SELECT (SELECT count(*) FROM users u WHERE u.articles_count <> (SELECT count(*) FROM articles WHERE author_id = u.id)
                                                OR u.favorites_count <> (SELECT count(*) FROM favorites WHERE user_id = u.id))
                + (SELECT count(*) FROM articles a WHERE a.favorites_count <> (SELECT count(*) FROM favorites WHERE article_id = a.id))
                + (SELECT count(*) FROM tags t WHERE t.articles_count <> (SELECT count(*) FROM article_tags WHERE tag_id = t.id))
                + (SELECT count(*) FROM article_totals WHERE articles <> (SELECT count(*) FROM articles))
                + (SELECT count(*) FROM articles a WHERE a.tag_list <> ARRAY(
                       SELECT t.name FROM article_tags at JOIN tags t ON t.id = at.tag_id
                       WHERE at.article_id = a.id ORDER BY t.name))"#,
    )
    .fetch_one(&app.db)
    .await
    .expect("recount");
    assert_eq!(mismatches, 0);
    assert_eq!(app.count("articles").await, 9);
    // i = 4 and 8 keep their retag; i = 0 was retagged, then deleted.
    let (_, zebras) = slugs_and_count(&app.get("/api/articles?tag=zebra", None).await);
    assert_eq!(zebras, 2);
}

#[tokio::test]
async fn the_largest_offset_is_an_empty_page_not_an_error() {
    let app = TestApp::new().await;
    let token = app.register("jake").await;
    app.create_article(&token, "Dragons", &["dragons"]).await;
    for query in ["", "&tag=dragons", "&author=jake", "&favorited=jake"] {
        let response = app.get(&format!("/api/articles?offset={}{query}", i64::MAX), None).await;
        assert_eq!(response.status, StatusCode::OK, "{query}: {}", response.text);
    }
    let feed = app.get(&format!("/api/articles/feed?offset={}", i64::MAX), Some(&token)).await;
    assert_eq!(feed.status, StatusCode::OK, "{}", feed.text);
}

#[tokio::test]
async fn null_for_a_title_description_or_body_in_an_update_is_422() {
    // Found by schemathesis: `null` was read as "unchanged", though the document
    // types these fields as strings.
    let app = TestApp::new().await;
    let token = app.register("jake").await;
    create(&app, &token, article("Dragons", &[])).await;
    for field in ["title", "description", "body"] {
        let response = update(&app, &token, "dragons", json!({ field: null })).await;
        assert_eq!(response.status, StatusCode::UNPROCESSABLE_ENTITY, "{field}: {}", response.text);
    }
}

#[tokio::test]
async fn an_empty_limit_or_offset_is_422() {
    // Found by schemathesis: `?limit=` was read as the default, though the document
    // says the parameter is an integer.
    let app = TestApp::new().await;
    let token = app.register("jake").await;
    for uri in ["/api/articles?limit=", "/api/articles?offset=", "/api/articles/feed?offset=&limit=4"] {
        let response = app.get(uri, Some(&token)).await;
        assert_eq!(response.status, StatusCode::UNPROCESSABLE_ENTITY, "{uri}: {}", response.text);
    }
}

#[tokio::test]
async fn a_listed_article_is_read_by_column_name_and_refuses_a_column_of_another_type() {
    let app = TestApp::new().await;
    let row = |title: &str| {
        format!(
            "SELECT false AS author_following, '' AS author_image, 'b' AS author_bio, 'u' AS author_username,
                    2::bigint AS favorites_count, true AS favorited, now() AS updated_at, now() AS created_at,
                    ARRAY['t']::text[] AS tag_list, 'd' AS description, {title} AS title, 's' AS slug"
        )
    };
    let text = sqlx::query(sqlx::AssertSqlSafe(row("'T'"))).fetch_one(&app.db).await.expect("a row");
    let columns = conduit::db::articles::ListedArticle::columns(&text).expect("every column, of the field's type");
    let article = conduit::db::articles::ListedArticle::read(&text, &columns).expect("read");
    assert_eq!((article.slug, article.title, article.author_bio, article.favorites_count), ("s", "T", "b", 2));

    let number = sqlx::query(sqlx::AssertSqlSafe(row("42"))).fetch_one(&app.db).await.expect("a row");
    let err = conduit::db::articles::ListedArticle::columns(&number).expect_err("title is not text");
    assert!(err.to_string().contains("title"), "{err}");
}
