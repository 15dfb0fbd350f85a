//! The published OpenAPI document and the docs page, as clients fetch them.

use axum::http::StatusCode;
use serde_json::Value;

use crate::support::TestApp;

/// Every `$ref` string anywhere in `value`.
fn refs(value: &Value, found: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, item) in map {
                match (key.as_str(), item) {
                    ("$ref", Value::String(target)) => found.push(target.clone()),
                    _ => refs(item, found),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| refs(item, found)),
        _ => {}
    }
}

#[tokio::test]
async fn the_document_is_served_as_openapi_3_1_with_every_reference_resolvable() {
    // A dangling `#/components/schemas/ErrorBody` once hid every error response
    // from the fuzzer and broke the docs page.
    let app = TestApp::new().await;
    let response = app.get("/api/openapi.json", None).await;
    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(response.headers["content-type"], "application/json; charset=utf-8");
    let doc = &response.body;
    assert_eq!(doc["openapi"], "3.1.0");
    let mut found = Vec::new();
    refs(doc, &mut found);
    assert!(!found.is_empty());
    for target in found {
        let pointer = target.strip_prefix('#').unwrap_or_else(|| panic!("external reference {target}"));
        assert!(doc.pointer(pointer).is_some(), "dangling reference {target}");
    }
    assert!(doc["components"]["securitySchemes"]["Token"].is_object());
    assert!(doc["components"]["securitySchemes"]["Bearer"].is_object());
}

#[tokio::test]
async fn the_document_matches_the_router() {
    let app = TestApp::new().await;
    let doc = app.get("/api/openapi.json", None).await.body;
    let paths = doc["paths"].as_object().expect("paths");
    let operations: usize = paths.values().map(|item| item.as_object().map_or(0, serde_json::Map::len)).sum();
    assert_eq!(operations, 21, "19 RealWorld operations and 2 health probes");
    assert_eq!(
        doc,
        serde_json::to_value(conduit::app::openapi()).expect("serialises"),
        "`conduit openapi` prints the same"
    );
}

#[tokio::test]
async fn the_docs_page_loads_nothing_from_other_origins() {
    let app = TestApp::new().await;
    let page = app.get("/docs/", None).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.text.contains("swagger-ui"), "{}", page.text);
    assert!(!page.text.contains("http://") && !page.text.contains("https://"), "{}", page.text);
    let init = app.get("/docs/swagger-initializer.js", None).await;
    assert_eq!(init.status, StatusCode::OK);
    assert!(init.text.contains("/api/openapi.json"), "{}", init.text);
    assert!(!init.text.contains("https://"), "{}", init.text);
    let bundle = app.get("/docs/swagger-ui-bundle.js", None).await;
    assert_eq!(bundle.status, StatusCode::OK, "the UI is served by this server");
}
