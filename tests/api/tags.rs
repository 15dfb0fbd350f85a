//! `GET /api/tags`.

use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::support::TestApp;

async fn tags(app: &TestApp) -> Value {
    let response = app.get("/api/tags", None).await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.text);
    response.body
}

#[tokio::test]
async fn tags_lists_tags_in_use_most_used_first() {
    let app = TestApp::new().await;
    assert_eq!(tags(&app).await, json!({"tags": []}));

    let jake = app.register("jake").await;
    let ann = app.register("ann").await;
    app.create_article(&jake, "Alpha", &["training", "dragons"]).await;
    app.create_article(&ann, "Beta", &["dragons", "angular"]).await;
    let gamma = app.create_article(&jake, "Gamma", &["zebra", "dragons", "training"]).await;
    // Most used first; equally used ones alphabetically.
    assert_eq!(tags(&app).await, json!({"tags": ["dragons", "training", "angular", "zebra"]}));

    // Tags of deleted articles disappear.
    let deleted = app.delete(&format!("/api/articles/{gamma}"), Some(&jake)).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT, "{}", deleted.text);
    assert_eq!(tags(&app).await, json!({"tags": ["dragons", "angular", "training"]}));

    // So do tags taken off an article.
    let updated = app.put("/api/articles/beta", Some(&ann), json!({"article": {"tagList": ["dragons"]}})).await;
    assert_eq!(updated.status, StatusCode::OK, "{}", updated.text);
    assert_eq!(tags(&app).await, json!({"tags": ["dragons", "training"]}));

    for (slug, token) in [("alpha", &jake), ("beta", &ann)] {
        let deleted = app.delete(&format!("/api/articles/{slug}"), Some(token)).await;
        assert_eq!(deleted.status, StatusCode::NO_CONTENT, "{}", deleted.text);
    }
    assert_eq!(tags(&app).await, json!({"tags": []}));
}
