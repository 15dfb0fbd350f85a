//! Application state and the router: every route and every middleware layer.

use std::{sync::Arc, time::Duration};

use axum::{
    Router,
    extract::{DefaultBodyLimit, FromRef, Request},
    http::{HeaderName, HeaderValue, Method, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use sqlx::PgPool;
use tower::ServiceBuilder;
use tower_http::{
    catch_panic::CatchPanicLayer,
    cors::{AllowOrigin, CorsLayer},
    request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer},
    sensitive_headers::SetSensitiveRequestHeadersLayer,
    timeout::TimeoutLayer,
    trace::TraceLayer,
};
use tracing::Span;
use utoipa::OpenApi as _;
use utoipa_axum::{router::OpenApiRouter, routes};
use utoipa_swagger_ui::{Config as SwaggerConfig, SwaggerUi};

use crate::{
    auth::{JwtKeys, PasswordHasher, Revocations, session::SessionPolicy},
    config::CorsOrigins,
    db::Reads,
    edge::{
        self,
        rate_limit::{RATELIMIT, RATELIMIT_POLICY, RateLimits},
    },
    error::Error,
    extract::{self, Json},
    openapi::ApiDoc,
    routes::{articles, auth, comments, health, profiles, tags, users},
    telemetry::{trace::RequestSpanLayer, traceparent::TRACEPARENT},
};

/// Where the OpenAPI document is served; the interactive docs are at `/docs`.
pub const OPENAPI_PATH: &str = "/api/openapi.json";

/// The request's id: taken from the client when it sends one, made otherwise,
/// and echoed in the response and the logs.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Sent beside `traceparent` by tracing clients; allowed, not read.
const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// Sent by some browser clients (jQuery-era frameworks) on every request.
const X_REQUESTED_WITH: HeaderName = HeaderName::from_static("x-requested-with");

/// The largest request body accepted; more is a 413.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Shared by every handler; cheap to clone. A handler takes the whole state, or
/// any one field (`State<PgPool>`, `State<Reads>`, ...).
#[derive(Debug, Clone, FromRef)]
pub struct AppState {
    /// Writes, and anything that is not a one-statement read.
    pub writes: PgPool,
    /// One-statement reads.
    pub reads: Reads,
    pub jwt: Arc<JwtKeys>,
    /// Deleted accounts and revoked sessions, whose tokens are refused.
    pub revocations: Revocations,
    pub hasher: PasswordHasher,
    /// Whether new passwords on the common lists are refused (`COMMON_PASSWORDS`).
    pub common_passwords: crate::domain::CommonPasswords,
    /// Turned off when the server starts stopping (`/health/ready`).
    pub readiness: health::Readiness,
    /// OpenID Connect providers (none: sign-in with them is off).
    pub oidc: Arc<crate::auth::oidc::Oidc>,
    /// Client addresses and allowed origins for sessions; the router sets it
    /// from its options ([`router_with_limits`]), whatever it was given.
    pub session_policy: SessionPolicy,
}

/// Settings of the HTTP layer.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    pub cors_origins: CorsOrigins,
    pub request_timeout: Duration,
    /// `Strict-Transport-Security`'s `max-age`, when the server is behind TLS.
    pub hsts: Option<Duration>,
}

impl Default for HttpOptions {
    /// The settings of an unconfigured server (see `config::Config`).
    fn default() -> Self {
        Self { cors_origins: CorsOrigins::Any, request_timeout: Duration::from_secs(30), hsts: None }
    }
}

/// Every documented route, with the OpenAPI document built from their annotations.
fn api() -> OpenApiRouter<AppState> {
    let api = OpenApiRouter::new()
        .routes(routes!(users::register))
        .routes(routes!(users::login))
        .routes(routes!(users::current, users::update))
        .routes(routes!(auth::sessions))
        .routes(routes!(auth::revoke_session))
        .routes(routes!(auth::refresh))
        .routes(routes!(auth::logout))
        .routes(routes!(auth::logout_all))
        .routes(routes!(profiles::get))
        .routes(routes!(profiles::follow, profiles::unfollow))
        .routes(routes!(articles::list, articles::create))
        .routes(routes!(articles::feed))
        .routes(routes!(articles::get, articles::update, articles::delete))
        .routes(routes!(articles::favorite, articles::unfavorite))
        .routes(routes!(comments::list, comments::add))
        .routes(routes!(comments::delete))
        .routes(routes!(tags::list))
        .routes(routes!(crate::routes::oidc::start))
        .routes(routes!(crate::routes::oidc::callback))
        .routes(routes!(crate::routes::oidc::exchange));
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .nest("/api", api)
        .routes(routes!(health::live))
        .routes(routes!(health::ready))
}

/// The OpenAPI document of the API, as served at `/api/openapi.json`.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut doc = api().into_openapi();
    crate::openapi::add_common_responses(&mut doc);
    doc
}

/// The whole application, ready to serve, without rate limits (tests that do
/// not ask for them).
pub fn router(state: AppState, options: &HttpOptions) -> Router {
    router_with_limits(state, options, &RateLimits::off())
}

/// The whole application, ready to serve, with `limits`.
pub fn router_with_limits(state: AppState, options: &HttpOptions, limits: &RateLimits) -> Router {
    let session_policy = SessionPolicy { proxies: limits.trusted_proxies(), origins: options.cors_origins.clone() };
    let state = AppState { session_policy, ..state };
    let (routes, mut openapi) = api().split_for_parts();
    crate::openapi::add_common_responses(&mut openapi);
    let openapi = Arc::new(openapi);
    let docs = SwaggerUi::new("/docs").config(
        SwaggerConfig::new([OPENAPI_PATH]).validator_url("none").try_it_out_enabled(true).persist_authorization(false),
    );

    let security_headers = edge::headers::SecurityHeaders::new(options.hsts);
    let layers = ServiceBuilder::new()
        .layer(SetSensitiveRequestHeadersLayer::new([header::AUTHORIZATION, header::COOKIE]))
        .map_request(crate::edge::request_id::drop_unusable)
        .layer(SetRequestIdLayer::new(X_REQUEST_ID, MakeRequestUuid))
        // The request's span, in the trace its `traceparent` names; `traceparent` back.
        .layer(RequestSpanLayer)
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|_: &Request| Span::current())
                .on_request(())
                .on_response(|res: &Response, latency: Duration, span: &Span| {
                    span.record("status", res.status().as_u16());
                    tracing::info!(
                        status = res.status().as_u16(),
                        latency_ms = latency.as_secs_f64() * 1e3,
                        "response"
                    );
                })
                .on_failure(()),
        )
        .layer(PropagateRequestIdLayer::new(X_REQUEST_ID))
        // Outside the limits, error bodies and the timeout: their answers are counted too.
        .layer(crate::telemetry::metrics::HttpMetricsLayer::new())
        // Outside CORS: its preflight answers get them too.
        .map_response(move |response| security_headers.apply(response))
        // Outside the error and timeout layers, so browsers can read those answers too.
        .layer(cors(&options.cors_origins))
        .map_response(error_bodies)
        .layer(CatchPanicLayer::custom(|_| Error::Internal(anyhow::anyhow!("handler panicked")).into_response()))
        .layer(TimeoutLayer::with_status_code(StatusCode::SERVICE_UNAVAILABLE, options.request_timeout))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        // The caller, checked once per request for the extractors and the limits.
        .layer(extract::AuthenticateLayer::new(state.jwt.clone(), state.revocations.clone()))
        // After routing (it reads the matched route) and inside `AuthenticateLayer` (it
        // reads who the caller is).
        .option_layer(limits.layer())
        // With a read replica only: announces each write, for read-your-writes.
        .option_layer(state.reads.replica().map(|replica| {
            let (replica, writes) = (replica.clone(), state.writes.clone());
            axum::middleware::from_fn(move |request, next| {
                crate::db::announce(replica.clone(), writes.clone(), request, next)
            })
        }));

    // One `Router::layer` for the whole stack: axum boxes every route again at
    // each call, and clones a route's boxes for every request.
    routes
        .route(OPENAPI_PATH, get(move || std::future::ready(Json(openapi.clone()))))
        .merge(edge::headers::docs(docs.into()))
        .fallback(|| async { Error::NotFound("route") })
        .method_not_allowed_fallback(|| async {
            Error::request(StatusCode::METHOD_NOT_ALLOWED, "method not allowed on this route")
        })
        .layer(layers)
        .with_state(state)
}

/// Browsers on other origins may call the API. Access tokens travel in a header,
/// not a cookie, so any origin is safe by default. The refresh cookie is sent
/// cross-origin only in credentials mode, which is allowed for the configured
/// origins alone (a browser refuses credentials with `*`, and so does tower-http).
fn cors(origins: &CorsOrigins) -> CorsLayer {
    let (allow_origin, credentials) = match origins {
        CorsOrigins::Any => (AllowOrigin::any(), false),
        CorsOrigins::List(list) => (AllowOrigin::list(list.iter().filter_map(|o| HeaderValue::from_str(o).ok())), true),
    };
    CorsLayer::new()
        .allow_origin(allow_origin)
        .allow_credentials(credentials)
        .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE, Method::OPTIONS])
        // Browser tracing (OpenTelemetry's fetch instrumentation) sends the trace context.
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            X_REQUESTED_WITH,
            TRACEPARENT,
            TRACESTATE,
            crate::auth::session::DELIVERY_HEADER,
        ])
        // A client in the browser reads `WWW-Authenticate` to learn that its token was
        // refused, the rate limits' headers to pace itself, and `traceparent` to join the trace.
        .expose_headers([
            X_REQUEST_ID,
            header::WWW_AUTHENTICATE,
            header::RETRY_AFTER,
            RATELIMIT,
            RATELIMIT_POLICY,
            TRACEPARENT,
        ])
        .max_age(Duration::from_secs(3600))
}

/// Gives error responses produced outside the handlers (timeouts, for example)
/// a body in the API's error format. A function of the response alone: unlike a
/// `from_fn` middleware, it needs no boxed future or service clone per request.
fn error_bodies<B>(response: axum::http::Response<B>) -> Response
where
    B: axum::body::HttpBody<Data = axum::body::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    let response = response.map(axum::body::Body::new);
    let status = response.status();
    if (status.is_client_error() || status.is_server_error()) && !response.headers().contains_key(header::CONTENT_TYPE)
    {
        let error = if status == StatusCode::SERVICE_UNAVAILABLE {
            // The timeout layer's: a handler's own 503 carries its body.
            Error::TimedOut
        } else {
            Error::request(status, status.canonical_reason().unwrap_or("error").to_ascii_lowercase())
        };
        let mut replaced = error.into_response();
        for (name, value) in response.headers().iter().filter(|(name, _)| *name != header::CONTENT_LENGTH) {
            replaced.headers_mut().entry(name).or_insert_with(|| value.clone());
        }
        return replaced;
    }
    response
}
