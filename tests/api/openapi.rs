//! The published OpenAPI document and the docs page, as clients fetch them, and
//! the limits it states against the domain types' and the database's.

use std::collections::{BTreeMap, BTreeSet};

use axum::http::StatusCode;
use conduit::domain::{
    ArticleBody, Bio, CommentBody, Description, Email, ImageUrl, Password, TagList, Title, Username,
};
use serde_json::{Value, json};

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
    let cookie = &doc["components"]["securitySchemes"]["RefreshCookie"];
    assert_eq!(
        (&cookie["type"], &cookie["in"], &cookie["name"]),
        (&json!("apiKey"), &json!("cookie"), &json!("__Host-conduit-refresh"))
    );
}

#[tokio::test]
async fn the_document_matches_the_router() {
    let app = TestApp::new().await;
    let doc = app.get("/api/openapi.json", None).await.body;
    let paths = doc["paths"].as_object().expect("paths");
    let operations: usize = paths.values().map(|item| item.as_object().map_or(0, serde_json::Map::len)).sum();
    assert_eq!(
        operations, 29,
        "19 RealWorld operations, 5 of sessions, 3 of OpenID Connect sign-in and 2 health probes"
    );
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

/// A required text field refuses blank input, so it has at least one character.
const NOT_BLANK: usize = 1;

/// The limits a schema states, by keyword (`items.` before those of an array's items).
type Limits = BTreeMap<String, u64>;

fn limits(entries: &[(&str, usize)]) -> Limits {
    entries.iter().map(|(keyword, limit)| ((*keyword).to_owned(), *limit as u64)).collect()
}

/// Every property of every request body, by schema and name, with the limits of
/// the domain type that parses it.
fn domain_limits() -> BTreeMap<(&'static str, &'static str), Limits> {
    let text = |max| limits(&[("minLength", NOT_BLANK), ("maxLength", max)]);
    // `""` (or `null`) clears a bio or an image.
    let clearable = |max| limits(&[("maxLength", max)]);
    let password = limits(&[("minLength", Password::MIN_CHARS), ("maxLength", Password::MAX_CHARS)]);
    // A login is not parsed into domain values: it only looks an account up.
    let login = limits(&[("minLength", NOT_BLANK)]);
    let tags = limits(&[
        ("maxItems", TagList::MAX_TAGS),
        ("items.minLength", NOT_BLANK),
        ("items.maxLength", TagList::MAX_CHARS),
    ]);
    BTreeMap::from([
        (("NewUser", "username"), text(Username::MAX_CHARS)),
        (("NewUser", "email"), text(Email::MAX_CHARS)),
        (("NewUser", "password"), password.clone()),
        (("LoginUser", "email"), login.clone()),
        (("LoginUser", "password"), login),
        (("UpdateUser", "username"), text(Username::MAX_CHARS)),
        (("UpdateUser", "email"), text(Email::MAX_CHARS)),
        (("UpdateUser", "password"), password),
        (("UpdateUser", "bio"), clearable(Bio::MAX_CHARS)),
        (("UpdateUser", "image"), clearable(ImageUrl::MAX_CHARS)),
        (("NewArticle", "title"), text(Title::MAX_CHARS)),
        (("NewArticle", "description"), text(Description::MAX_CHARS)),
        (("NewArticle", "body"), text(ArticleBody::MAX_CHARS)),
        (("NewArticle", "tagList"), tags.clone()),
        (("UpdateArticle", "title"), text(Title::MAX_CHARS)),
        (("UpdateArticle", "description"), text(Description::MAX_CHARS)),
        (("UpdateArticle", "body"), text(ArticleBody::MAX_CHARS)),
        (("UpdateArticle", "tagList"), tags),
        (("NewComment", "body"), text(CommentBody::MAX_CHARS)),
        // Not parsed either: its hash is looked up.
        (("Handoff", "code"), limits(&[("minLength", NOT_BLANK), ("maxLength", 256)])),
    ])
}

/// The length and item limits `schema` states, and those of its items.
fn stated_limits(schema: &Value) -> Limits {
    const KEYWORDS: [&str; 4] = ["minLength", "maxLength", "minItems", "maxItems"];
    let mut found = Limits::new();
    for (prefix, schema) in [("", Some(schema)), ("items.", schema.get("items"))] {
        for keyword in KEYWORDS {
            if let Some(limit) = schema.and_then(|schema| schema.get(keyword)) {
                let limit = limit.as_u64().unwrap_or_else(|| panic!("{keyword} {limit} is not a count"));
                found.insert(format!("{prefix}{keyword}"), limit);
            }
        }
    }
    found
}

/// A `$ref` to a component schema: its name and the schema.
fn component<'a>(doc: &'a Value, reference: &'a Value) -> (&'a str, &'a Value) {
    let target = reference["$ref"].as_str().unwrap_or_else(|| panic!("{reference} is not a $ref"));
    let name = target.strip_prefix("#/components/schemas/").unwrap_or_else(|| panic!("{target} is not a schema"));
    (name, &doc["components"]["schemas"][name])
}

/// Each length CHECK of the migrated schema, by table and column: its lower and
/// upper bound.
async fn length_checks(app: &TestApp) -> BTreeMap<(String, String), (usize, usize)> {
    let definitions: Vec<(String, String)> = sqlx::query_as(
        "SELECT conrelid::regclass::text, pg_get_constraintdef(oid) FROM pg_constraint
         WHERE contype = 'c' AND connamespace = 'public'::regnamespace",
    )
    .fetch_all(&app.db)
    .await
    .expect("read the CHECK constraints");
    let mut checks = BTreeMap::new();
    for (table, definition) in definitions {
        // `CHECK (((char_length(name) >= 1) AND (char_length(name) <= 40)))`
        let mut bounds = BTreeMap::new();
        for term in definition.split("char_length(").skip(1) {
            let (column, rest) = term.split_once(") ").unwrap_or_else(|| panic!("unexpected CHECK {definition}"));
            let (operator, rest) = rest.split_once(' ').unwrap_or_else(|| panic!("unexpected CHECK {definition}"));
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            let bound: usize = digits.parse().unwrap_or_else(|_| panic!("unexpected CHECK {definition}"));
            assert!(matches!(operator, ">=" | "<="), "only >= and <= are read, not {operator}: {definition}");
            bounds.insert((column.to_owned(), operator.to_owned()), bound);
        }
        let columns: BTreeSet<String> = bounds.keys().map(|(column, _)| column.clone()).collect();
        for column in columns {
            let bound = |operator: &str| {
                bounds.get(&(column.clone(), operator.to_owned())).copied().unwrap_or_else(|| {
                    panic!("{table}.{column}: a length CHECK needs both bounds to be compared: {definition}")
                })
            };
            checks.insert((table.clone(), column.clone()), (bound(">="), bound("<=")));
        }
    }
    checks
}

/// A column whose length the database checks, and the domain type stored there.
struct Stored {
    max_chars: usize,
    accepts: fn(&str) -> bool,
}

/// Every column with a length CHECK, by table and column.
fn stored_columns() -> BTreeMap<(&'static str, &'static str), Stored> {
    BTreeMap::from([
        (("users", "username"), Stored { max_chars: Username::MAX_CHARS, accepts: |s| Username::parse(s).is_ok() }),
        (("users", "email"), Stored { max_chars: Email::MAX_CHARS, accepts: |s| Email::parse(s).is_ok() }),
        (
            ("tags", "name"),
            Stored { max_chars: TagList::MAX_CHARS, accepts: |s| TagList::parse(&[s.to_owned()]).is_ok() },
        ),
    ])
}

/// Every string shorter than `len` characters made of those of an email's shape.
fn shorter_than(len: usize) -> Vec<String> {
    const ALPHABET: [char; 3] = ['a', '@', '.'];
    let (mut all, mut longest) = (Vec::new(), vec![String::new()]);
    for _ in 0..len {
        all.extend(longest.iter().cloned());
        longest = longest.iter().flat_map(|s| ALPHABET.map(|c| format!("{s}{c}"))).collect();
    }
    all
}

/// Where the document's request limits differ from the domain types'.
fn document_differences(doc: &Value) -> Vec<String> {
    let mut expected = domain_limits();
    let mut wrong = Vec::new();
    let operations =
        doc["paths"].as_object().expect("paths").values().filter_map(Value::as_object).flat_map(|item| item.values());
    for operation in operations {
        let Some(body) = operation.pointer("/requestBody/content/application~1json/schema") else { continue };
        // An optional body (`POST /api/auth/refresh`) is `oneOf` its schema and `null`.
        let body =
            body["oneOf"].as_array().and_then(|one_of| one_of.iter().find(|s| s.get("$ref").is_some())).unwrap_or(body);
        let (_, wrapper) = component(doc, body);
        // `{"user": {...}}`: one property, the request's fields.
        for inner in wrapper["properties"].as_object().expect("a wrapper object").values() {
            // A bare opaque value (`{"refreshToken": "..."}`) is no domain type's.
            if inner.get("$ref").is_none() {
                continue;
            }
            let (name, schema) = component(doc, inner);
            for (property, property_schema) in schema["properties"].as_object().expect("properties") {
                let Some(limits) = expected.remove(&(name, property.as_str())) else {
                    wrong.push(format!("{name}.{property}: no row in domain_limits(); which domain type parses it?"));
                    continue;
                };
                let stated = stated_limits(property_schema);
                if stated != limits {
                    wrong.push(format!("{name}.{property}: the document states {stated:?}, the domain {limits:?}"));
                }
            }
        }
    }
    wrong.extend(expected.keys().map(|(name, property)| format!("{name}.{property}: in no request body")));
    wrong
}

/// Where the database's length CHECKs differ from the domain types'.
async fn database_differences(app: &TestApp) -> Vec<String> {
    let mut checks = length_checks(app).await;
    let mut wrong = Vec::new();
    for ((table, column), domain) in stored_columns() {
        let Some((min, max)) = checks.remove(&(table.to_owned(), column.to_owned())) else {
            wrong.push(format!("{table}.{column}: has no length CHECK"));
            continue;
        };
        if max != domain.max_chars {
            wrong.push(format!("{table}.{column}: the CHECK's maximum is {max}, the domain's {}", domain.max_chars));
        }
        // Whatever the CHECK refuses as too short, the domain must refuse first:
        // a valid request that breaks a CHECK is a 500.
        if let Some(short) = shorter_than(min).into_iter().find(|short| (domain.accepts)(short)) {
            wrong.push(format!("{table}.{column}: {short:?} is valid but shorter than the CHECK's minimum {min}"));
        }
    }
    wrong.extend(checks.keys().map(|(table, column)| {
        format!("{table}.{column}: no row in stored_columns(); which domain type is stored there?")
    }));
    wrong
}

/// utoipa takes only literals in `#[schema(max_length = ...)]`, so each limit is
/// written beside its DTO as well as in its domain type, and in the migrations
/// when the database checks it: this test keeps the three the same.
#[tokio::test]
async fn request_limits_in_the_document_and_the_database_are_the_domain_types() {
    let doc = serde_json::to_value(conduit::app::openapi()).expect("serialises");
    let app = TestApp::new().await;
    let mut wrong = document_differences(&doc);
    wrong.extend(database_differences(&app).await);
    assert!(wrong.is_empty(), "limits that differ from the domain types':\n{}", wrong.join("\n"));
}
