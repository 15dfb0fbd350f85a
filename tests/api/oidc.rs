//! OpenID Connect sign-in against a test provider on a real loopback socket:
//! discovery, key set and token endpoint served by a small axum app; its ID
//! tokens are signed with RSA keys generated for the test process (openssl).
//! The provider's authorization screen is not needed: the tests take `state`,
//! `nonce` and the PKCE challenge from `start`'s redirect, as the provider would.
//! The real provider is driven through its screens by scripts/oidc-e2e.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{
    Form, Router,
    body::Body,
    extract::State,
    http::{HeaderMap, Request, StatusCode, header},
    routing::{get, post},
};
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use conduit::{
    app::{self, HttpOptions},
    auth::oidc::{CacheSettings, Oidc, OidcConfig, ProviderConfig},
};
use jsonwebtoken::{Algorithm, EncodingKey, Header, jwk::Jwk};
use secrecy::SecretString;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use crate::support::{PASSWORD, TestApp, TestResponse};

const CLIENT_ID: &str = "conduit-test-client";
const CLIENT_SECRET: &str = "conduit-test-secret";
const FRONTEND: &str = "http://localhost:4200/#/oidc";

/// An RSA key generated for this test process, with its public JWK.
struct TestKey {
    kid: String,
    encoding: EncodingKey,
    jwk: Value,
}

/// Three keys: the provider's, its next one (rotation), and one it never publishes.
fn keys() -> &'static [TestKey; 3] {
    static KEYS: OnceLock<[TestKey; 3]> = OnceLock::new();
    KEYS.get_or_init(|| ["key-1", "key-2", "key-never-published"].map(generate_key))
}

fn generate_key(kid: &str) -> TestKey {
    // PKCS#1 DER, what `EncodingKey::from_rsa_der` reads.
    let output = std::process::Command::new("sh")
        .args([
            "-c",
            "openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 | openssl rsa -traditional -outform DER",
        ])
        .output()
        .expect("openssl (the tests need the openssl command)");
    assert!(output.status.success(), "openssl: {}", String::from_utf8_lossy(&output.stderr));
    let encoding = EncodingKey::from_rsa_der(&output.stdout);
    let mut jwk = Jwk::from_encoding_key(&encoding, Algorithm::RS256).expect("its JWK");
    jwk.common.key_id = Some(kid.to_owned());
    TestKey { kid: kid.to_owned(), encoding, jwk: serde_json::to_value(jwk).expect("JWK as JSON") }
}

/// The test provider's state: the keys it publishes, the ID token to answer
/// each code with (and the PKCE challenge it was issued for).
#[derive(Default)]
struct ProviderState {
    published: Mutex<Vec<Value>>,
    codes: Mutex<HashMap<String, (String, String)>>,
    jwks_fetches: AtomicUsize,
    issuer: OnceLock<String>,
    /// The provider authenticates clients by `client_secret_post` only.
    secret_in_body: std::sync::atomic::AtomicBool,
}

struct TestProvider {
    state: Arc<ProviderState>,
    issuer: String,
}

impl TestProvider {
    async fn start() -> Self {
        let state = Arc::new(ProviderState::default());
        state.published.lock().expect("lock").push(keys()[0].jwk.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let issuer = format!("http://{}", listener.local_addr().expect("addr"));
        state.issuer.set(issuer.clone()).ok();
        let app = Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/jwks", get(jwks))
            .route("/token", post(token))
            .with_state(Arc::clone(&state));
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { state, issuer }
    }

    /// The provider will answer `code` with `id_token`, for the PKCE `challenge`.
    fn issue(&self, code: &str, challenge: &str, id_token: String) {
        self.state.codes.lock().expect("lock").insert(code.to_owned(), (challenge.to_owned(), id_token));
    }

    fn publish(&self, keys: &[&TestKey]) {
        *self.state.published.lock().expect("lock") = keys.iter().map(|k| k.jwk.clone()).collect();
    }

    fn jwks_fetches(&self) -> usize {
        self.state.jwks_fetches.load(Ordering::SeqCst)
    }

    /// Valid claims for `flow`'s sign-in.
    fn claims(&self, flow: &Flow, sub: &str, email: &str, verified: bool) -> Value {
        let now = jsonwebtoken::get_current_timestamp();
        json!({
            "iss": self.issuer, "aud": CLIENT_ID, "sub": sub, "iat": now, "exp": now + 300,
            "nonce": flow.nonce, "email": email, "email_verified": verified,
            "preferred_username": sub,
        })
    }
}

async fn discovery(State(state): State<Arc<ProviderState>>) -> axum::Json<Value> {
    let issuer = state.issuer.get().expect("issuer");
    axum::Json(json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}/authorize"),
        "token_endpoint": format!("{issuer}/token"),
        "jwks_uri": format!("{issuer}/jwks"),
        "token_endpoint_auth_methods_supported":
            [if state.secret_in_body.load(Ordering::SeqCst) { "client_secret_post" } else { "client_secret_basic" }],
    }))
}

async fn jwks(State(state): State<Arc<ProviderState>>) -> axum::Json<Value> {
    state.jwks_fetches.fetch_add(1, Ordering::SeqCst);
    axum::Json(json!({"keys": *state.published.lock().expect("lock")}))
}

/// The token endpoint: the client's Basic credentials, a code issued once, and
/// the verifier of its challenge, or `invalid_grant` / `invalid_client`.
async fn token(
    State(state): State<Arc<ProviderState>>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> (StatusCode, axum::Json<Value>) {
    let basic =
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{CLIENT_ID}:{CLIENT_SECRET}")));
    let authenticated = if state.secret_in_body.load(Ordering::SeqCst) {
        !headers.contains_key(header::AUTHORIZATION)
            && form.get("client_id").map(String::as_str) == Some(CLIENT_ID)
            && form.get("client_secret").map(String::as_str) == Some(CLIENT_SECRET)
    } else {
        headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) == Some(basic.as_str())
    };
    if !authenticated {
        return (StatusCode::UNAUTHORIZED, axum::Json(json!({"error": "invalid_client"})));
    }
    let grant = form.get("code").and_then(|code| state.codes.lock().expect("lock").remove(code));
    let verifier_ok = |challenge: &str| {
        form.get("code_verifier").is_some_and(|v| URL_SAFE_NO_PAD.encode(Sha256::digest(v.as_bytes())) == challenge)
    };
    match grant {
        Some((challenge, id_token))
            if verifier_ok(&challenge) && form.get("grant_type").map(String::as_str) == Some("authorization_code") =>
        {
            (StatusCode::OK, axum::Json(json!({"access_token": "at", "token_type": "Bearer", "id_token": id_token})))
        }
        _ => (StatusCode::BAD_REQUEST, axum::Json(json!({"error": "invalid_grant"}))),
    }
}

fn mint(key: &TestKey, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(key.kid.clone());
    jsonwebtoken::encode(&header, claims, &key.encoding).expect("sign")
}

/// A started sign-in, as the provider sees it.
#[derive(Debug, Clone)]
struct Flow {
    state: String,
    nonce: String,
    challenge: String,
    /// `name=value` of the binding cookie.
    cookie: String,
}

/// An application whose `test` provider is `provider`.
async fn app_with(provider: &TestProvider, cache: CacheSettings) -> TestApp {
    let mut app = TestApp::new().await;
    let config = OidcConfig {
        providers: vec![ProviderConfig {
            name: "test".to_owned(),
            issuer: provider.issuer.clone(),
            client_id: CLIENT_ID.to_owned(),
            client_secret: SecretString::from(CLIENT_SECRET),
            redirect_url: "http://127.0.0.1:8080/api/auth/oidc/test/callback".to_owned(),
        }],
        frontend_url: Some(FRONTEND.to_owned()),
    };
    app.state.oidc = Arc::new(Oidc::new(&config, cache).expect("providers"));
    app.router = app::router(app.state.clone(), &HttpOptions::default());
    app
}

async fn setup() -> (TestProvider, TestApp) {
    let provider = TestProvider::start().await;
    let app = app_with(&provider, CacheSettings::default()).await;
    (provider, app)
}

async fn start(app: &TestApp) -> Flow {
    let response = app.get("/api/auth/oidc/test/start", None).await;
    assert_eq!(response.status, StatusCode::SEE_OTHER, "{}", response.text);
    let location = response.headers[header::LOCATION].to_str().expect("ascii");
    let url = url::Url::parse(location).expect("a URL");
    let query: HashMap<String, String> = url.query_pairs().into_owned().collect();
    assert_eq!(query["response_type"], "code");
    assert_eq!(query["client_id"], CLIENT_ID);
    assert_eq!(query["scope"], "openid email profile");
    assert_eq!(query["code_challenge_method"], "S256");
    let cookie = response.headers[header::SET_COOKIE].to_str().expect("ascii");
    for attribute in ["HttpOnly", "Secure", "SameSite=Lax", "Path=/", "Max-Age=600"] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    Flow {
        state: query["state"].clone(),
        nonce: query["nonce"].clone(),
        challenge: query["code_challenge"].clone(),
        cookie: cookie.split(';').next().expect("name=value").to_owned(),
    }
}

async fn callback(app: &TestApp, query: &str, cookie: Option<&str>) -> TestResponse {
    let mut request = Request::get(format!("/api/auth/oidc/test/callback?{query}"));
    if let Some(cookie) = cookie {
        request = request.header(header::COOKIE, cookie);
    }
    app.send(request.body(Body::empty()).expect("request")).await
}

/// Runs `flow`'s callback with a code the provider answers with `id_token`.
async fn finish(app: &TestApp, provider: &TestProvider, flow: &Flow, id_token: String) -> TestResponse {
    let code = format!("code-{}", flow.state);
    provider.issue(&code, &flow.challenge, id_token);
    callback(app, &format!("code={code}&state={}", flow.state), Some(&flow.cookie)).await
}

/// The one-time code in the callback's redirect to the frontend.
fn handoff_code(response: &TestResponse) -> String {
    assert_eq!(response.status, StatusCode::SEE_OTHER, "{}", response.text);
    let location = response.headers[header::LOCATION].to_str().expect("ascii");
    let code = location.strip_prefix(&format!("{FRONTEND}?code=")).expect("the frontend URL with the code");
    assert!(response.headers[header::SET_COOKIE].to_str().expect("ascii").contains("Max-Age=0"));
    code.to_owned()
}

async fn exchange(app: &TestApp, code: &str) -> TestResponse {
    app.post("/api/auth/oidc/exchange", None, json!({"handoff": {"code": code}})).await
}

/// Signs in end to end; the user object.
async fn sign_in(app: &TestApp, provider: &TestProvider, sub: &str, email: &str, verified: bool) -> Value {
    let flow = start(app).await;
    let response = finish(app, provider, &flow, mint(&keys()[0], &provider.claims(&flow, sub, email, verified))).await;
    let exchanged = exchange(app, &handoff_code(&response)).await;
    assert_eq!(exchanged.status, StatusCode::OK, "{}", exchanged.text);
    exchanged.body["user"].clone()
}

/// Rows that a refused sign-in must not have written.
async fn written(app: &TestApp) -> (i64, i64, i64) {
    (app.count("users").await, app.count("user_identities").await, app.count("oidc_handoffs").await)
}

#[tokio::test]
async fn a_new_user_signs_in_gets_a_token_that_works_and_the_code_works_once() {
    let (provider, app) = setup().await;
    let flow = start(&app).await;
    let response =
        finish(&app, &provider, &flow, mint(&keys()[0], &provider.claims(&flow, "alice", "alice@example.com", true)))
            .await;
    let code = handoff_code(&response);
    // No token in any URL: the redirect carries only the one-time code.
    assert!(!response.headers[header::LOCATION].to_str().expect("ascii").contains("token"));

    let exchanged = exchange(&app, &code).await;
    assert_eq!(exchanged.status, StatusCode::OK, "{}", exchanged.text);
    assert_eq!(exchanged.body["user"]["username"], "alice");
    assert_eq!(exchanged.body["user"]["email"], "alice@example.com");
    let token = exchanged.body["user"]["token"].as_str().expect("token");
    let current = app.get("/api/user", Some(token)).await;
    assert_eq!(current.status, StatusCode::OK, "{}", current.text);
    assert_eq!(current.body["user"]["username"], "alice");

    exchange(&app, &code).await.assert_error(StatusCode::BAD_REQUEST, "code");
    exchange(&app, "made-up").await.assert_error(StatusCode::BAD_REQUEST, "code");
    assert_eq!(written(&app).await, (1, 1, 0));
    assert_eq!(app.count("oidc_logins").await, 0, "the sign-in's state is consumed");
}

#[tokio::test]
async fn an_account_made_by_a_sign_in_has_no_password_that_logs_in() {
    let (provider, app) = setup().await;
    sign_in(&app, &provider, "carol", "carol@example.com", true).await;
    for password in [PASSWORD, "", "x"] {
        let login = app
            .post("/api/users/login", None, json!({"user": {"email": "carol@example.com", "password": password}}))
            .await;
        assert!(matches!(login.status, StatusCode::UNAUTHORIZED | StatusCode::UNPROCESSABLE_ENTITY), "{}", login.text);
    }
}

#[tokio::test]
async fn a_taken_username_gets_a_numeric_suffix() {
    let (provider, app) = setup().await;
    app.register("dave").await;
    let user = sign_in(&app, &provider, "dave", "dave@corp.example", true).await;
    assert_eq!(user["username"], "dave2");
    let user = sign_in(&app, &provider, "Dave", "dave.other@corp.example", false).await;
    assert_eq!(user["username"], "Dave3");
}

#[tokio::test]
async fn a_verified_email_links_the_password_account_and_the_next_sign_in_finds_the_identity() {
    let (provider, app) = setup().await;
    app.register("erin").await;
    let user = sign_in(&app, &provider, "erin-at-provider", "ERIN@example.com", true).await;
    assert_eq!(user["username"], "erin");
    assert_eq!(written(&app).await, (1, 1, 0));
    // The identity, not the email, finds the account next time.
    let user = sign_in(&app, &provider, "erin-at-provider", "erin.new@example.org", false).await;
    assert_eq!(user["username"], "erin");
    assert_eq!(written(&app).await, (1, 1, 0));
}

#[tokio::test]
async fn an_unverified_email_of_an_existing_account_never_takes_it_over() {
    let (provider, app) = setup().await;
    app.register("frank").await;
    let flow = start(&app).await;
    let response = finish(
        &app,
        &provider,
        &flow,
        mint(&keys()[0], &provider.claims(&flow, "mallory", "frank@example.com", false)),
    )
    .await;
    response.assert_error(StatusCode::CONFLICT, "email");
    assert_eq!(written(&app).await, (1, 0, 0));
}

#[tokio::test]
async fn a_sign_in_without_an_email_is_refused() {
    let (provider, app) = setup().await;
    let flow = start(&app).await;
    let mut claims = provider.claims(&flow, "ghost", "x@example.com", true);
    claims.as_object_mut().expect("object").remove("email");
    finish(&app, &provider, &flow, mint(&keys()[0], &claims))
        .await
        .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "email");
    assert_eq!(written(&app).await, (0, 0, 0));
}

#[tokio::test]
async fn the_state_must_be_present_known_unused_and_from_the_browser_that_started() {
    let (provider, app) = setup().await;
    let flow = start(&app).await;
    let code = "the-code";
    provider.issue(code, &flow.challenge, mint(&keys()[0], &provider.claims(&flow, "hank", "hank@example.com", true)));

    callback(&app, &format!("code={code}"), Some(&flow.cookie)).await.assert_error(StatusCode::BAD_REQUEST, "state");
    callback(&app, &format!("code={code}&state=wrong"), Some(&flow.cookie))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "state");
    let query = format!("code={code}&state={}", flow.state);
    callback(&app, &query, None).await.assert_error(StatusCode::BAD_REQUEST, "state");
    let other_browser = format!("{}=someone-elses", conduit::auth::oidc::BINDING_COOKIE);
    callback(&app, &query, Some(&other_browser)).await.assert_error(StatusCode::BAD_REQUEST, "state");
    assert_eq!(written(&app).await, (0, 0, 0));

    // None of those spent the sign-in: the browser that started it finishes it, once.
    handoff_code(&callback(&app, &query, Some(&flow.cookie)).await);
    callback(&app, &query, Some(&flow.cookie)).await.assert_error(StatusCode::BAD_REQUEST, "state");
    assert_eq!(written(&app).await, (1, 1, 1));
}

#[tokio::test]
async fn a_code_the_provider_refuses_and_a_provider_error_end_the_sign_in() {
    let (_provider, app) = setup().await;
    let flow = start(&app).await;
    // Never issued (or replayed at the provider): `invalid_grant`.
    callback(&app, &format!("code=replayed&state={}", flow.state), Some(&flow.cookie))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "code");
    let flow = start(&app).await;
    callback(&app, &format!("error=access_denied&state={}", flow.state), Some(&flow.cookie))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "provider");
    assert_eq!(app.count("oidc_logins").await, 0);
    assert_eq!(written(&app).await, (0, 0, 0));
}

#[tokio::test]
async fn id_tokens_that_fail_any_check_are_refused_and_sign_no_one_in() {
    let (provider, app) = setup().await;
    let now = jsonwebtoken::get_current_timestamp();
    type Change = fn(&mut Value, u64);
    let cases: [(&str, Change); 9] = [
        ("nonce mismatch", |c, _| c["nonce"] = json!("another-nonce")),
        ("another issuer", |c, _| c["iss"] = json!("https://evil.example")),
        ("another audience", |c, _| c["aud"] = json!("another-client")),
        ("expired", |c, now| {
            c["exp"] = json!(now - 120);
            c["iat"] = json!(now - 400);
        }),
        ("issued in the future", |c, now| c["iat"] = json!(now + 600)),
        ("issued long ago", |c, now| c["iat"] = json!(now - 7200)),
        ("another azp", |c, _| c["azp"] = json!("another-client")),
        ("several audiences, no azp", |c, _| c["aud"] = json!([CLIENT_ID, "another-client"])),
        ("no subject", |c, _| {
            c.as_object_mut().expect("object").remove("sub");
        }),
    ];
    for (case, change) in cases {
        let flow = start(&app).await;
        let mut claims = provider.claims(&flow, "ivan", "ivan@example.com", true);
        change(&mut claims, now);
        finish(&app, &provider, &flow, mint(&keys()[0], &claims))
            .await
            .assert_error(StatusCode::BAD_REQUEST, "id_token");
        assert_eq!(written(&app).await, (0, 0, 0), "{case}");
    }

    // Unsigned, HMAC-"signed" with a public value, and signed by a key never published.
    let flow = start(&app).await;
    let claims = provider.claims(&flow, "ivan", "ivan@example.com", true);
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    let none = format!("{}.{payload}.", URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#));
    finish(&app, &provider, &flow, none).await.assert_error(StatusCode::BAD_REQUEST, "id_token");

    let flow = start(&app).await;
    let claims = provider.claims(&flow, "ivan", "ivan@example.com", true);
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(keys()[0].kid.clone());
    let hmac =
        jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(CLIENT_SECRET.as_bytes())).expect("sign");
    finish(&app, &provider, &flow, hmac).await.assert_error(StatusCode::BAD_REQUEST, "id_token");

    let flow = start(&app).await;
    let claims = provider.claims(&flow, "ivan", "ivan@example.com", true);
    finish(&app, &provider, &flow, mint(&keys()[2], &claims)).await.assert_error(StatusCode::BAD_REQUEST, "id_token");

    // A published key's kid on a token signed by another key.
    let flow = start(&app).await;
    let claims = provider.claims(&flow, "ivan", "ivan@example.com", true);
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(keys()[0].kid.clone());
    let forged = jsonwebtoken::encode(&header, &claims, &keys()[2].encoding).expect("sign");
    finish(&app, &provider, &flow, forged).await.assert_error(StatusCode::BAD_REQUEST, "id_token");

    assert_eq!(written(&app).await, (0, 0, 0));
}

#[tokio::test]
async fn a_rotated_key_is_fetched_when_a_token_names_it() {
    let provider = TestProvider::start().await;
    let cache = CacheSettings { jwks_min_refetch: Duration::ZERO, ..CacheSettings::default() };
    let app = app_with(&provider, cache).await;
    sign_in(&app, &provider, "judy", "judy@example.com", true).await;
    assert_eq!(provider.jwks_fetches(), 1);

    provider.publish(&[&keys()[1]]);
    let flow = start(&app).await;
    let response =
        finish(&app, &provider, &flow, mint(&keys()[1], &provider.claims(&flow, "judy", "judy@example.com", true)))
            .await;
    let user = exchange(&app, &handoff_code(&response)).await;
    assert_eq!(user.body["user"]["username"], "judy", "{}", user.text);
    assert_eq!(provider.jwks_fetches(), 2);

    // The retired key's tokens are refused now.
    let flow = start(&app).await;
    finish(&app, &provider, &flow, mint(&keys()[0], &provider.claims(&flow, "judy", "judy@example.com", true)))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "id_token");
}

#[tokio::test]
async fn tokens_naming_unknown_keys_refetch_the_key_set_at_most_once_per_interval() {
    let (provider, app) = setup().await;
    sign_in(&app, &provider, "kim", "kim@example.com", true).await;
    for _ in 0..5 {
        let flow = start(&app).await;
        let claims = provider.claims(&flow, "kim", "kim@example.com", true);
        finish(&app, &provider, &flow, mint(&keys()[2], &claims))
            .await
            .assert_error(StatusCode::BAD_REQUEST, "id_token");
    }
    assert_eq!(provider.jwks_fetches(), 1, "within the interval, the cached key set answers");
}

#[tokio::test]
async fn unknown_providers_are_404_and_a_server_without_providers_has_none() {
    let (_provider, app) = setup().await;
    app.get("/api/auth/oidc/nope/start", None).await.assert_error(StatusCode::NOT_FOUND, "provider");
    app.get("/api/auth/oidc/nope/callback?code=a&state=b", None).await.assert_error(StatusCode::NOT_FOUND, "provider");
    let plain = TestApp::new().await;
    plain.get("/api/auth/oidc/test/start", None).await.assert_error(StatusCode::NOT_FOUND, "provider");
    exchange(&plain, "anything").await.assert_error(StatusCode::BAD_REQUEST, "code");
}

#[tokio::test]
async fn a_provider_that_cannot_be_reached_is_a_502_not_a_500() {
    // A provider that takes the connection (the kernel's backlog) and never answers:
    // the first sign-in waits out the time limit.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let issuer = format!("http://{}", silent.local_addr().expect("addr"));
    let provider = TestProvider { state: Arc::default(), issuer };
    let cache = CacheSettings { http_timeout: Duration::from_secs(2), ..CacheSettings::default() };
    let app = app_with(&provider, cache).await;
    let first = std::time::Instant::now();
    app.get("/api/auth/oidc/test/start", None).await.assert_error(StatusCode::BAD_GATEWAY, "provider");
    assert!(first.elapsed() >= Duration::from_secs(2), "waited for the provider: {:?}", first.elapsed());
    // Within a few seconds of a failure, sign-ins fail at once, without waiting again.
    let again = std::time::Instant::now();
    app.get("/api/auth/oidc/test/start", None).await.assert_error(StatusCode::BAD_GATEWAY, "provider");
    assert!(again.elapsed() < Duration::from_secs(1), "failed at once: {:?}", again.elapsed());
    drop(silent);
    assert_eq!(app.count("oidc_logins").await, 0);
}

#[tokio::test]
async fn a_discovery_document_naming_another_issuer_is_refused() {
    let real = TestProvider::start().await;
    // The same server, configured with an issuer spelled differently (a trailing slash).
    let provider = TestProvider { state: Arc::clone(&real.state), issuer: format!("{}/", real.issuer) };
    let app = app_with(&provider, CacheSettings::default()).await;
    app.get("/api/auth/oidc/test/start", None).await.assert_error(StatusCode::BAD_GATEWAY, "provider");
}

#[tokio::test]
async fn an_answer_naming_another_issuer_is_refused_as_a_mix_up() {
    let (provider, app) = setup().await;
    let flow = start(&app).await;
    provider.issue("c", &flow.challenge, mint(&keys()[0], &provider.claims(&flow, "lena", "lena@example.com", true)));
    callback(&app, &format!("code=c&state={}&iss=https%3A%2F%2Fevil.example", flow.state), Some(&flow.cookie))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "iss");
    assert_eq!(written(&app).await, (0, 0, 0));
    let iss: String = url::form_urlencoded::byte_serialize(provider.issuer.as_bytes()).collect();
    handoff_code(&callback(&app, &format!("code=c&state={}&iss={iss}", flow.state), Some(&flow.cookie)).await);
}

#[tokio::test]
async fn a_provider_that_takes_the_client_secret_in_the_body_gets_it_there() {
    let provider = TestProvider::start().await;
    provider.state.secret_in_body.store(true, Ordering::SeqCst);
    let app = app_with(&provider, CacheSettings::default()).await;
    let user = sign_in(&app, &provider, "mona", "mona@example.com", true).await;
    assert_eq!(user["username"], "mona");
}
