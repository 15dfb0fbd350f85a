//! The test harness: a fresh database per test, the real router, and helpers to
//! send requests through it with `oneshot`.
//!
//! With `DATABASE_URL` set, the databases are created on that server. Without it,
//! one throwaway PostgreSQL cluster is started from the installed server binaries
//! for the whole test process, and removed when the process ends.
//!
//! The migrations run once per test process, into a template database; each test's
//! database is a copy of it (`CREATE DATABASE … TEMPLATE`), which takes a fraction of
//! the time the migrations do.
//!
//! Several test processes may share a server (a developer's run beside CI's), so
//! every database a process creates is named after a random token of its own:
//! `conduit_template_<token>` and `conduit_test_<token>_<n>`. A test drops its
//! database when it ends, but nothing runs when the test process ends, so the
//! template outlives it (as does the database of a test whose process was killed).
//! A process therefore keeps one session open for as long as it lives, with the
//! template's name as its application name, and the next process to start on the
//! server drops every such database whose session is gone.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use axum::{
    Router,
    body::Body,
    http::{HeaderMap, Method, Request, StatusCode, header},
};
use conduit::{
    app::{self, AppState, HttpOptions},
    auth::{JwtKeys, PasswordHasher, Revocations},
    db::Reads,
    edge::rate_limit::RateLimits,
    embedded_pg::EmbeddedPostgres,
};
use http_body_util::BodyExt as _;
use secrecy::SecretString;
use serde_json::{Value, json};
use sqlx::{Connection as _, PgConnection, PgPool, postgres::PgConnectOptions};
use tokio::sync::OnceCell;
use tower::ServiceExt as _;

/// Random (`openssl rand -base64 32`): a patterned one fails the entropy check.
pub const JWT_SECRET: &str = "Xq3vN8kR0tYb7LmW2cJ9pF5sH1gD6zA4eU+oI/nVwTE=";
pub const PASSWORD: &str = "correct horse battery staple";
/// How long the tests' tokens live.
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(3600);

/// Where test databases are created, and what they are copied from.
#[derive(Debug)]
struct Server {
    /// The admin connection: a database that is neither the template nor a test's.
    admin: PgConnectOptions,
    /// This process's token, in the name of each database it creates.
    token: String,
}

static SERVER: OnceCell<Server> = OnceCell::const_new();
static COUNTER: AtomicU64 = AtomicU64::new(0);

impl Server {
    fn template(&self) -> String {
        format!("conduit_template_{}", self.token)
    }
}

async fn server() -> &'static Server {
    SERVER
        .get_or_init(|| async {
            let admin = admin().await;
            let token = format!("{:016x}", getrandom::u64().expect("OS randomness"));
            let server = Server { admin, token };
            let template = server.template();
            // The session that tells other test processes this one is alive: never
            // closed, it ends with the process.
            let mut alive = PgConnection::connect_with(&server.admin.clone().application_name(&template))
                .await
                .expect("connect to the test server");
            drop_leftovers(&mut alive).await;
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {template}")))
                .execute(&mut alive)
                .await
                .expect("create the template database");
            std::mem::forget(alive);
            // A copy cannot be made while any session is connected to the template:
            // this one is closed before the first copy (PostgreSQL waits a few
            // seconds for a backend that is still exiting).
            let mut conn = PgConnection::connect_with(&server.admin.clone().database(&template))
                .await
                .expect("connect to the template database");
            conduit::db::MIGRATOR.run(&mut conn).await.expect("migrate the template database");
            conn.close().await.expect("disconnect from the template database");
            server
        })
        .await
}

/// Drops the databases of test processes that are gone: those whose template's
/// session (see [`server`]) is no longer connected.
async fn drop_leftovers(conn: &mut PgConnection) {
    let leftovers: Vec<String> = sqlx::query_scalar(
        "SELECT datname FROM pg_database
         WHERE datname ~ '^conduit_(template|test)_[0-9a-f]{16}(_[0-9]+)?$'
           AND 'conduit_template_' || substring(datname FROM '[0-9a-f]{16}') NOT IN (
               SELECT application_name FROM pg_stat_activity WHERE application_name IS NOT NULL)",
    )
    .fetch_all(&mut *conn)
    .await
    .expect("list the databases of earlier test runs");
    for name in leftovers {
        // Another process may be dropping it at the same time.
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")))
            .execute(&mut *conn)
            .await
            .ok();
    }
}

/// The admin connection to the server of `DATABASE_URL`, or else to a throwaway
/// cluster started for this process.
async fn admin() -> PgConnectOptions {
    if let Ok(url) = std::env::var("DATABASE_URL") {
        return url.parse().expect("DATABASE_URL is a valid PostgreSQL URL");
    }
    let dir = tempfile::Builder::new().prefix("conduit-test-pg-").tempdir().expect("temp dir").keep();
    // The cluster may run as the `postgres` user, which must reach the directory.
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
    // The cluster outlives no test process: a watchdog stops it and removes
    // its directory once this process is gone.
    let pg = EmbeddedPostgres::start(&dir).await.expect("start a throwaway PostgreSQL");
    let options = pg.connect_options_for("postgres");
    let script = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 1; done; \
         kill -INT \"$(head -n1 '{dir}/pgdata/postmaster.pid')\" 2>/dev/null; \
         sleep 3; rm -rf '{dir}'",
        pid = std::process::id(),
        dir = dir.display()
    );
    #[allow(clippy::zombie_processes, reason = "the watchdog must outlive this process")]
    let _watchdog = std::process::Command::new("sh")
        .args(["-c", &script])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn the cluster watchdog");
    std::mem::forget(pg);
    options
}

/// One test's application, on its own database, dropped when the test ends.
pub struct TestApp {
    pub router: Router,
    /// The router's state, for more routers on the same database.
    pub state: AppState,
    pub db: PgPool,
    /// The pool of the one-statement reads, as the router has it.
    pub reads: Reads,
    /// The deleted accounts and revoked sessions, as the router's
    /// authentication path knows them.
    pub revocations: Revocations,
    /// The router's readiness (`/health/ready`).
    pub readiness: conduit::routes::health::Readiness,
    /// How to reach this test's database.
    pub options: PgConnectOptions,
    name: String,
    admin: PgConnectOptions,
}

impl TestApp {
    pub async fn new() -> Self {
        Self::with_options(HttpOptions { request_timeout: Duration::from_secs(30), ..Default::default() }).await
    }

    pub async fn with_options(options: HttpOptions) -> Self {
        Self::with_options_and_limits(options, &RateLimits::off()).await
    }

    /// An application whose router applies `limits` (tests/api/rate_limit.rs).
    pub async fn with_limits(limits: &RateLimits) -> Self {
        Self::with_options_and_limits(
            HttpOptions { request_timeout: Duration::from_secs(30), ..Default::default() },
            limits,
        )
        .await
    }

    async fn with_options_and_limits(options: HttpOptions, limits: &RateLimits) -> Self {
        let server = server().await;
        let admin = server.admin.clone();
        let name = format!("conduit_test_{}_{}", server.token, COUNTER.fetch_add(1, Ordering::Relaxed));
        let mut conn = PgConnection::connect_with(&admin).await.expect("connect to the test server");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name} TEMPLATE {}", server.template())))
            .execute(&mut conn)
            .await
            .expect("create test database");
        conn.close().await.ok();
        let options_db = admin.clone().database(&name);
        let (db, reads) =
            conduit::db::open(options_db.clone(), 5, options.request_timeout).await.expect("open the test database");
        let jwt = Arc::new(JwtKeys::new(&SecretString::from(JWT_SECRET), TOKEN_LIFETIME));
        let revocations = Revocations::follow(&options_db, TOKEN_LIFETIME).await.expect("follow revocations");
        let state = AppState {
            writes: db.clone(),
            reads: reads.clone(),
            jwt,
            revocations: revocations.clone(),
            hasher: PasswordHasher::new(2).expect("hasher"),
            common_passwords: Default::default(),
            readiness: Default::default(),
            oidc: Default::default(),
            session_policy: Default::default(),
        };
        let readiness = state.readiness.clone();
        Self {
            router: app::router_with_limits(state.clone(), &options, limits),
            state,
            db,
            reads,
            revocations,
            readiness,
            options: options_db,
            name,
            admin,
        }
    }

    /// Sends one request through the router.
    pub async fn request(&self, method: Method, uri: &str, token: Option<&str>, body: Option<Value>) -> TestResponse {
        let mut builder = Request::builder().method(method).uri(uri);
        if let Some(token) = token {
            builder = builder.header(header::AUTHORIZATION, format!("Token {token}"));
        }
        let body = match body {
            Some(json) => {
                builder = builder.header(header::CONTENT_TYPE, "application/json");
                Body::from(json.to_string())
            }
            None => Body::empty(),
        };
        self.send(builder.body(body).expect("valid request")).await
    }

    /// Sends a hand-built request through the router.
    pub async fn send(&self, request: Request<Body>) -> TestResponse {
        let response = self.router.clone().oneshot(request).await.expect("infallible");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.expect("read body").to_bytes();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let body = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap_or(Value::Null) };
        TestResponse { status, headers, body, text }
    }

    pub async fn get(&self, uri: &str, token: Option<&str>) -> TestResponse {
        self.request(Method::GET, uri, token, None).await
    }

    pub async fn post(&self, uri: &str, token: Option<&str>, body: Value) -> TestResponse {
        self.request(Method::POST, uri, token, Some(body)).await
    }

    pub async fn put(&self, uri: &str, token: Option<&str>, body: Value) -> TestResponse {
        self.request(Method::PUT, uri, token, Some(body)).await
    }

    pub async fn delete(&self, uri: &str, token: Option<&str>) -> TestResponse {
        self.request(Method::DELETE, uri, token, None).await
    }

    /// Registers `username` (email `<username>@example.com`) and returns the token.
    pub async fn register(&self, username: &str) -> String {
        let response = self
            .post(
                "/api/users",
                None,
                json!({"user": {"username": username, "email": format!("{username}@example.com"), "password": PASSWORD}}),
            )
            .await;
        assert_eq!(response.status, StatusCode::CREATED, "register {username}: {}", response.text);
        response.body["user"]["token"].as_str().expect("token").to_owned()
    }

    /// Creates an article and returns its slug.
    pub async fn create_article(&self, token: &str, title: &str, tags: &[&str]) -> String {
        let response = self
            .post(
                "/api/articles",
                Some(token),
                json!({"article": {"title": title, "description": "about it", "body": "the body", "tagList": tags}}),
            )
            .await;
        assert_eq!(response.status, StatusCode::CREATED, "create {title}: {}", response.text);
        response.body["article"]["slug"].as_str().expect("slug").to_owned()
    }

    /// Deletes `username`'s account, as an operator would, and waits until the
    /// router's authentication path has heard of it.
    pub async fn delete_account(&self, username: &str) {
        let id: i64 = sqlx::query_scalar("DELETE FROM users WHERE username = $1 RETURNING id")
            .bind(username)
            .fetch_one(&self.db)
            .await
            .expect("delete the account");
        wait_until_deleted(&self.revocations, id).await;
    }

    /// Number of rows in `table` (to check that nothing was half-written).
    pub async fn count(&self, table: &str) -> i64 {
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
            .fetch_one(&self.db)
            .await
            .expect("count rows")
    }

    /// Makes the owner of `token` follow `username`.
    pub async fn follow(&self, token: &str, username: &str) {
        let response = self.post(&format!("/api/profiles/{username}/follow"), Some(token), json!({})).await;
        assert_eq!(response.status, StatusCode::OK, "follow {username}: {}", response.text);
    }

    /// Makes the owner of `token` favorite the article `slug`.
    pub async fn favorite(&self, token: &str, slug: &str) {
        let response = self.post(&format!("/api/articles/{slug}/favorite"), Some(token), json!({})).await;
        assert_eq!(response.status, StatusCode::OK, "favorite {slug}: {}", response.text);
    }

    /// Comments on the article `slug` and returns the comment's id.
    pub async fn comment(&self, token: &str, slug: &str, body: &str) -> i64 {
        let response =
            self.post(&format!("/api/articles/{slug}/comments"), Some(token), json!({"comment": {"body": body}})).await;
        assert_eq!(response.status, StatusCode::CREATED, "comment on {slug}: {}", response.text);
        response.body["comment"]["id"].as_i64().expect("comment id")
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        let (admin, name) = (self.admin.clone(), self.name.clone());
        // Drop runs outside any async context we may block, so use a thread.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            runtime.block_on(async move {
                let mut conn = PgConnection::connect_with(&admin).await.ok()?;
                sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")))
                    .execute(&mut conn)
                    .await
                    .ok()
            })
        })
        .join();
        let _ = dropped;
    }
}

#[derive(Debug)]
pub struct TestResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    /// The body parsed as JSON (`Null` when empty or not JSON).
    pub body: Value,
    pub text: String,
}

impl TestResponse {
    /// Asserts the status and that the body is in the API's error format with a
    /// message under `field`.
    #[track_caller]
    pub fn assert_error(&self, status: StatusCode, field: &str) {
        assert_eq!(self.status, status, "{}", self.text);
        let messages = &self.body["errors"][field];
        assert!(
            messages.as_array().is_some_and(|m| !m.is_empty() && m.iter().all(Value::is_string)),
            "expected errors.{field} in {}",
            self.text
        );
    }
}

impl TestResponse {
    /// The field names under `errors`, sorted, to check that no other field is blamed.
    pub fn error_fields(&self) -> Vec<String> {
        let mut fields: Vec<String> =
            self.body["errors"].as_object().map(|errors| errors.keys().cloned().collect()).unwrap_or_default();
        fields.sort();
        fields
    }
}

/// A loopback address with a port free when asked (the OS's choice), for a
/// server or a cluster the test starts.
pub fn free_addr() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port")
}

/// Whether `value` is a timestamp like `2026-11-27T16:17:39.120Z`: RFC 3339 in UTC
/// with exactly three fractional digits.
pub fn is_millis_timestamp(value: &Value) -> bool {
    const SHAPE: &str = "0000-00-00T00:00:00.000Z";
    value.as_str().is_some_and(|text| {
        text.len() == SHAPE.len()
            && text.bytes().zip(SHAPE.bytes()).all(|(c, s)| if s == b'0' { c.is_ascii_digit() } else { c == s })
    })
}

/// Waits, up to 10 s, until `accounts` holds `id`.
pub async fn wait_until_deleted(accounts: &Revocations, id: i64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !accounts.account_deleted(id) {
        assert!(tokio::time::Instant::now() < deadline, "account {id}'s deletion was not heard of in 10 s");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The session id (`sid`) an access token names, read without checking the
/// signature (the tests' own tokens).
pub fn session_id(token: &str) -> uuid::Uuid {
    use base64::Engine as _;
    let payload = token.split('.').nth(1).expect("a JWT has a payload");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).expect("base64url");
    let claims: Value = serde_json::from_slice(&bytes).expect("JSON claims");
    claims["sid"].as_str().expect("a sid claim").parse().expect("a uuid")
}
