//! Every read endpoint runs exactly one SQL statement per request.
//!
//! sqlx reports each statement it executes as a `tracing` event with the target
//! `sqlx::query` (at DEBUG, or WARN when slow). A subscriber that records those
//! events is made the thread's default for the duration of one request: tests run
//! on a current-thread runtime, so the request, and the pool work it causes, run on
//! the test's thread and nothing from other tests is seen.

use std::sync::{Arc, LazyLock, Mutex, PoisonError};

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};
use tracing::{
    Dispatch, Event, Metadata, Subscriber,
    field::{Field, Visit},
    subscriber::NoSubscriber,
};
use tracing_subscriber::{
    Layer,
    layer::{Context, SubscriberExt as _},
};

use crate::support::{TestApp, TestResponse};

const SQLX_TARGET: &str = "sqlx::query";

/// A subscriber that enables nothing, registered for the life of the process.
///
/// While only one subscriber is registered, tracing-core decides whether a
/// callsite is enabled from the *calling thread's* default alone. With this
/// test's subscriber the only one, another test thread (which has none) that
/// reaches sqlx's statement event first caches it as never enabled, and this
/// test then sees no statements (`ran []`, about one full run in four). With a
/// second subscriber registered, tracing-core asks every live subscriber.
static SECOND_SUBSCRIBER: LazyLock<Dispatch> = LazyLock::new(|| Dispatch::new(NoSubscriber::default()));

/// The statements sqlx reported, by their summary (the first words of the SQL).
#[derive(Clone, Default)]
struct Statements(Arc<Mutex<Vec<String>>>);

impl<S: Subscriber> Layer<S> for Statements {
    fn enabled(&self, metadata: &Metadata<'_>, _: Context<'_, S>) -> bool {
        metadata.target() == SQLX_TARGET
    }

    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let mut summary = Summary::default();
        event.record(&mut summary);
        self.0.lock().unwrap_or_else(PoisonError::into_inner).push(summary.0);
    }
}

#[derive(Default)]
struct Summary(String);

impl Visit for Summary {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "summary" {
            value.clone_into(&mut self.0);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "summary" {
            self.0 = format!("{value:?}");
        }
    }
}

/// Sends one request and returns its response and the statements it ran.
async fn with_statements(
    app: &TestApp,
    method: Method,
    uri: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (TestResponse, Vec<String>) {
    LazyLock::force(&SECOND_SUBSCRIBER);
    let statements = Statements::default();
    let subscriber = tracing_subscriber::registry().with(statements.clone());
    let response = {
        let _guard = tracing::subscriber::set_default(subscriber);
        // Another test thread may have cached sqlx's callsites as uninteresting
        // while no subscriber was set; recompute with this one in place.
        tracing::callsite::rebuild_interest_cache();
        app.request(method, uri, token, body).await
    };
    let seen = std::mem::take(&mut *statements.0.lock().unwrap_or_else(PoisonError::into_inner));
    (response, seen)
}

/// jake wrote "Dragons" (tagged), ann follows jake, favorited and commented on it.
async fn populated() -> (TestApp, String) {
    let app = TestApp::new().await;
    let jake = app.register("jake").await;
    let ann = app.register("ann").await;
    app.create_article(&jake, "Dragons", &["dragons"]).await;
    app.create_article(&ann, "Unicorns", &["unicorns"]).await;
    app.follow(&ann, "jake").await;
    app.favorite(&ann, "dragons").await;
    app.comment(&ann, "dragons", "Great!").await;
    (app, ann)
}

#[tokio::test]
async fn every_read_endpoint_runs_exactly_one_statement() {
    let (app, ann) = populated().await;
    let ann = Some(ann.as_str());
    let reads = [
        ("/api/articles", None, StatusCode::OK),
        ("/api/articles", ann, StatusCode::OK),
        ("/api/articles?tag=dragons", ann, StatusCode::OK),
        ("/api/articles?author=jake", ann, StatusCode::OK),
        ("/api/articles?favorited=ann", None, StatusCode::OK),
        ("/api/articles?tag=dragons&author=jake&favorited=ann&limit=5&offset=0", ann, StatusCode::OK),
        ("/api/articles?offset=100", None, StatusCode::OK),
        ("/api/articles/feed", ann, StatusCode::OK),
        ("/api/articles/feed?limit=1&offset=1", ann, StatusCode::OK),
        ("/api/articles/dragons", None, StatusCode::OK),
        ("/api/articles/dragons", ann, StatusCode::OK),
        ("/api/articles/no-such-article", ann, StatusCode::NOT_FOUND),
        ("/api/articles/dragons/comments", None, StatusCode::OK),
        ("/api/articles/dragons/comments", ann, StatusCode::OK),
        ("/api/articles/unicorns/comments", None, StatusCode::OK),
        ("/api/articles/no-such-article/comments", None, StatusCode::NOT_FOUND),
        ("/api/profiles/jake", None, StatusCode::OK),
        ("/api/profiles/jake", ann, StatusCode::OK),
        ("/api/profiles/nobody", None, StatusCode::NOT_FOUND),
        ("/api/tags", None, StatusCode::OK),
        ("/api/user", ann, StatusCode::OK),
        ("/api/user/sessions", ann, StatusCode::OK),
    ];
    for (uri, token, status) in reads {
        let (response, statements) = with_statements(&app, Method::GET, uri, token, None).await;
        let who = if token.is_some() { "ann" } else { "anonymous" };
        assert_eq!(response.status, status, "GET {uri} as {who}: {}", response.text);
        assert_eq!(statements.len(), 1, "GET {uri} as {who} ran {statements:?}");
    }
}

/// The counter sees every statement: the checks above could fail.
#[tokio::test]
async fn the_statement_counter_sees_every_statement_of_a_request() {
    let (app, ann) = populated().await;

    // The favorite is written, then the article is read back: two statements.
    let (response, statements) =
        with_statements(&app, Method::POST, "/api/articles/unicorns/favorite", Some(&ann), Some(json!({}))).await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.text);
    assert_eq!(statements.len(), 2, "{statements:?}");

    // Creating an article: the article with its body (one statement), new tags,
    // its tag links, the read back and COMMIT. (sqlx
    // sends BEGIN as a simple query that it does not report; COMMIT it does, so a
    // read wrapped in a transaction would still count more than one.)
    let article = json!({"article": {"title": "Griffins", "description": "d", "body": "b", "tagList": ["griffins"]}});
    let (response, statements) = with_statements(&app, Method::POST, "/api/articles", Some(&ann), Some(article)).await;
    assert_eq!(response.status, StatusCode::CREATED, "{}", response.text);
    assert_eq!(statements.len(), 5, "{statements:?}");
    assert!(statements[0].starts_with("WITH article AS"), "{statements:?}");
    assert_eq!(statements.last().map(String::as_str), Some("COMMIT"));

    // A request rejected before reaching the database runs none.
    let (response, statements) = with_statements(&app, Method::GET, "/api/articles?limit=0", None, None).await;
    assert_eq!(response.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", response.text);
    assert_eq!(statements, Vec::<String>::new());
}
