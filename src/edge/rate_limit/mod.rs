//! Rate limits: a tower layer on every route that charges each request to a
//! budget (GCRA, see [`gcra`]) and answers `429` when it is spent.
//!
//! Policies (quotas in [`config::Policies`], documented in `docs/operations/rate-limits.md`):
//!
//! - `anon`: a request without a valid token, per client address
//!   ([`crate::edge::client_ip`]); an IPv6 address counts by its /64.
//! - `user`: a request with a valid token, per user, wherever it comes from.
//! - `login` (`POST /api/users/login`) and `register` (`POST /api/users`): per
//!   client address, instead of `anon` / `user`.
//! - `login-account`: a login is also charged to the account its email names,
//!   so that an attacker spread over many addresses is still held to a few
//!   guesses per account; but an address that logged into that account in the
//!   last `RATE_LIMIT_KNOWN_ADDRESS_DAYS` is exempt, so that such an attacker
//!   cannot lock the account's owner out from the places they use.
//! - `/health/*` is exempt: probes must not be refused while the service is flooded.
//!
//! On top of the budgets, failed logins slow down per address and per account
//! ([`throttle`], `LOGIN_THROTTLE`), under the same known-address rule.
//!
//! Every answer of a route under a policy, `429` included, carries
//! `RateLimit-Policy` and `RateLimit` (draft-ietf-httpapi-ratelimit-headers-11,
//! the same syntax as -08 and -09); a `429` also carries `Retry-After`.
//!
//! The layer sits inside `extract::authenticate` (it reads who the caller is)
//! and after routing (it reads the matched route), so a `429` still passes the
//! logging, CORS and error-body layers.

pub mod config;
pub mod gcra;
mod redis;
pub mod store;
pub mod throttle;

use std::{
    convert::Infallible,
    net::IpAddr,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use axum::{
    body::Body,
    extract::{MatchedPath, Request},
    http::{HeaderName, HeaderValue, Method, StatusCode},
    response::{IntoResponse as _, Response},
};
use http_body_util::BodyExt as _;
use tower::{Layer, Service};

pub use self::config::RateLimitConfig;
use self::{
    config::Policies,
    gcra::{Decision, Rate},
    store::{AccountId, LocalStore, Store, Subject},
    throttle::{Throttle, ThrottleKey},
};
use crate::{edge::client_ip::TrustedProxies, error::Error, extract::caller_id};

/// `RateLimit-Policy`: the quotas that apply to the request.
pub const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
/// `RateLimit`: what is left of them.
pub const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// A budget's kind; its name is the policy's identifier in the headers and the
/// `policy` label of `conduit_rate_limit_rejections_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Policy {
    Anonymous,
    User,
    Login,
    LoginAccount,
    Register,
}

impl Policy {
    const ALL: [Self; 5] = [Self::Anonymous, Self::User, Self::Login, Self::LoginAccount, Self::Register];

    pub fn name(self) -> &'static str {
        match self {
            Self::Anonymous => "anon",
            Self::User => "user",
            Self::Login => "login",
            Self::LoginAccount => "login-account",
            Self::Register => "register",
        }
    }

    fn rate(self, policies: &Policies) -> Rate {
        match self {
            Self::Anonymous => policies.anonymous,
            Self::User => policies.user,
            Self::Login => policies.login,
            Self::LoginAccount => policies.login_account,
            Self::Register => policies.register,
        }
    }
}

/// The rate limiter of a router, built once from its configuration; cheap to
/// clone. Off: no layer at all.
#[derive(Debug, Clone)]
pub struct RateLimits(Option<Arc<Limiter>>);

impl RateLimits {
    /// Builds the limiter (and, with `REDIS_URL`, prepares its connection: call it
    /// within a Tokio runtime).
    pub fn new(config: &RateLimitConfig) -> anyhow::Result<Self> {
        if !config.enabled {
            return Ok(Self::off());
        }
        let redis = config.redis.as_ref().map(redis::RedisStore::new).transpose()?;
        let policy_header = |policies: &[Policy]| {
            let items: Vec<String> = policies
                .iter()
                .map(|p| {
                    let rate = p.rate(&config.policies);
                    format!("\"{}\";q={};w={}", p.name(), rate.quota, rate.window_secs)
                })
                .collect();
            HeaderValue::try_from(items.join(", ")).unwrap_or_else(|_| unreachable!("ASCII digits and names"))
        };
        let headers = PolicyHeaders {
            anonymous: policy_header(&[Policy::Anonymous]),
            user: policy_header(&[Policy::User]),
            login: policy_header(&[Policy::Login, Policy::LoginAccount]),
            register: policy_header(&[Policy::Register]),
        };
        Ok(Self(Some(Arc::new(Limiter {
            trusted_proxies: config.trusted_proxies.clone(),
            policies: config.policies,
            known_address_ttl: config.known_address_ttl,
            login_throttle: config.login_throttle,
            store: Store::new(LocalStore::default(), redis),
            headers,
            // The recorder is installed before the router is built, so these are its
            // handles (no registry lookup per refusal).
            rejections: Policy::ALL
                .map(|policy| metrics::counter!("conduit_rate_limit_rejections_total", "policy" => policy.name())),
            throttled: [
                metrics::counter!("conduit_login_throttled_total", "by" => "address"),
                metrics::counter!("conduit_login_throttled_total", "by" => "account"),
            ],
            warned_no_peer: AtomicBool::new(false),
        }))))
    }

    pub fn off() -> Self {
        Self(None)
    }

    /// The layer to put on the router, `None` when limiting is off.
    pub fn layer(&self) -> Option<RateLimitLayer> {
        self.0.clone().map(|limiter| RateLimitLayer { limiter })
    }

    /// The proxies trusted to name the client (`TRUSTED_PROXIES`); none when
    /// limiting is off (the peer is then the client: sessions record it).
    pub fn trusted_proxies(&self) -> crate::edge::client_ip::TrustedProxies {
        self.0.as_ref().map(|limiter| limiter.trusted_proxies.clone()).unwrap_or_default()
    }

    /// Keys held by the in-process store (for tests of its bound).
    pub fn local_keys(&self) -> usize {
        self.0.as_ref().map_or(0, |limiter| limiter.store.local.len())
    }
}

#[derive(Debug)]
struct PolicyHeaders {
    anonymous: HeaderValue,
    user: HeaderValue,
    login: HeaderValue,
    register: HeaderValue,
}

#[derive(Debug)]
struct Limiter {
    trusted_proxies: TrustedProxies,
    policies: Policies,
    known_address_ttl: Duration,
    login_throttle: Option<Throttle>,
    store: Store,
    headers: PolicyHeaders,
    /// `conduit_rate_limit_rejections_total`, by [`Policy`] in `Policy::ALL`'s order.
    rejections: [metrics::Counter; 5],
    /// `conduit_login_throttled_total`, by the counter that refused: the address's, the account's.
    throttled: [metrics::Counter; 2],
    warned_no_peer: AtomicBool,
}

/// What a route is limited by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Exempt,
    General,
    Login,
    Register,
}

fn route_of(method: &Method, matched: Option<&str>) -> Route {
    match (matched, *method == Method::POST) {
        (Some("/api/users/login"), true) => Route::Login,
        (Some("/api/users"), true) => Route::Register,
        (Some(path), _) if path.starts_with("/health/") => Route::Exempt,
        _ => Route::General,
    }
}

impl Limiter {
    fn client_address(&self, request: &Request) -> Subject {
        let ip: Option<IpAddr> = self.trusted_proxies.client_of(request);
        if ip.is_none() && !self.warned_no_peer.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "a request came without its peer address (ConnectInfo): requests without one share one budget"
            );
        }
        Subject::address(ip)
    }

    /// The request's route, and the budget it is charged to (`None`: exempt).
    fn budget(&self, request: &Request) -> (Route, Option<(Policy, Subject, &HeaderValue)>) {
        let route = route_of(request.method(), request.extensions().get::<MatchedPath>().map(MatchedPath::as_str));
        let budget = match route {
            Route::Exempt => None,
            Route::Login => Some((Policy::Login, self.client_address(request), &self.headers.login)),
            Route::Register => Some((Policy::Register, self.client_address(request), &self.headers.register)),
            Route::General => Some(match caller_id(request.extensions()) {
                Some(id) => (Policy::User, Subject::User(id), &self.headers.user),
                None => (Policy::Anonymous, self.client_address(request), &self.headers.anonymous),
            }),
        };
        (route, budget)
    }

    /// The in-process decision for a request that is not a login or a
    /// registration, as [`Limiter::handle`] makes it: `Some(None)` for an exempt
    /// route, `Some(Some(..))` with the budget charged; `None` for a login or a
    /// registration (left to `handle`).
    fn decide_locally(&self, request: &Request) -> Option<Option<(Policy, Decision, &HeaderValue)>> {
        match self.budget(request) {
            (Route::Login | Route::Register, _) => None,
            (_, None) => Some(None),
            (_, Some((policy, subject, policy_header))) => {
                let decision = self.store.local.check(policy, subject, policy.rate(&self.policies));
                Some(Some((policy, decision, policy_header)))
            }
        }
    }

    async fn handle<S>(&self, request: Request, mut inner: S) -> Response
    where
        S: Service<Request, Response = Response, Error = Infallible>,
    {
        let (route, Some((policy, subject, policy_header))) = self.budget(&request) else {
            return call(&mut inner, request).await;
        };
        let decision = self.store.check(policy, subject, policy.rate(&self.policies)).await;
        if !decision.allowed {
            return self.refuse(policy_header, &[(policy, decision)], policy);
        }
        if route != Route::Login {
            let mut response = call(&mut inner, request).await;
            annotate(&mut response, policy_header, &[(policy, decision)]);
            return response;
        }

        // A login: its account's budget too, which needs the email from the body.
        let (parts, body) = request.into_parts();
        let bytes = match http_body_util::Limited::new(body, crate::app::MAX_BODY_BYTES).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(err) => {
                let error = if err.is::<http_body_util::LengthLimitError>() {
                    Error::request(StatusCode::PAYLOAD_TOO_LARGE, "the request body is too large")
                } else {
                    Error::request(StatusCode::BAD_REQUEST, "the request body could not be read")
                };
                let mut response = error.into_response();
                annotate(&mut response, policy_header, &[(policy, decision)]);
                return response;
            }
        };
        let account = login_account(&bytes);
        let account_decision = match account {
            Some(account) => self.store.check_account(account, subject, self.policies.login_account).await,
            None => None,
        };
        let decisions = [(policy, decision), (Policy::LoginAccount, account_decision.unwrap_or(decision))];
        let decisions = if account_decision.is_some() { &decisions[..] } else { &decisions[..1] };
        if account_decision.is_some_and(|d| !d.allowed) {
            return self.refuse(policy_header, decisions, Policy::LoginAccount);
        }
        if let Some(throttle) = &self.login_throttle
            && let Some(wait_us) = self.throttle(throttle, subject, account).await
        {
            let mut response =
                Error::TooManyRequests { retry_after_secs: wait_us.div_ceil(1_000_000).max(1) }.into_response();
            annotate(&mut response, policy_header, decisions);
            return response;
        }
        let mut response = call(&mut inner, Request::from_parts(parts, Body::from(bytes))).await;
        if response.status() == StatusCode::OK {
            if self.login_throttle.is_some() {
                self.store.reset_throttle(ThrottleKey::Address(subject)).await;
            }
            if let Some(account) = account {
                if self.login_throttle.is_some() {
                    self.store.reset_throttle(ThrottleKey::Account(account)).await;
                }
                self.store.remember(account, subject, self.known_address_ttl).await;
            }
        }
        annotate(&mut response, policy_header, decisions);
        response
    }

    /// Counts a login attempt against the address's throttle and, unless the
    /// address is known for it, the account's: `Some(µs to wait)` when either
    /// refuses. The same for an email that names no account: the answer must not
    /// tell. The address's counter is charged even when the account's refuses.
    async fn throttle(&self, throttle: &Throttle, address: Subject, account: Option<AccountId>) -> Option<u64> {
        let by_address = self.store.throttle(ThrottleKey::Address(address), None, throttle).await;
        let by_account = match account {
            Some(account) => {
                self.store.throttle(ThrottleKey::Account(account), Some((account, address)), throttle).await
            }
            None => None,
        };
        let waits = [by_address, by_account].map(|outcome| outcome.and_then(Result::err));
        for (counter, wait) in self.throttled.iter().zip(&waits) {
            if wait.is_some() {
                counter.increment(1);
            }
        }
        waits.into_iter().flatten().max()
    }

    /// The 429, with the headers of every policy that was checked.
    fn refuse(&self, policy_header: &HeaderValue, decisions: &[(Policy, Decision)], refused_by: Policy) -> Response {
        self.rejections[refused_by as usize].increment(1);
        let retry_after = decisions.iter().filter(|(_, d)| !d.allowed).map(|(_, d)| d.wait_secs()).max().unwrap_or(1);
        let mut response = Error::TooManyRequests { retry_after_secs: retry_after.max(1) }.into_response();
        annotate(&mut response, policy_header, decisions);
        response
    }
}

async fn call<S>(inner: &mut S, request: Request) -> Response
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    match inner.call(request).await {
        Ok(response) => response,
        Err(never) => match never {},
    }
}

/// The account a login body names, read as the handler will read it: parsed as
/// a JSON value first, as the handler's extractor does, so a repeated key means
/// its last value here too. `None` when the handler will refuse the body anyway
/// (no password is checked then).
fn login_account(body: &[u8]) -> Option<AccountId> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let email = value.get("user")?.get("email")?.as_str()?.trim();
    (!email.is_empty()).then(|| AccountId::of_email(email))
}

/// Adds `RateLimit-Policy` (built once per route) and `RateLimit`, e.g.
/// `"anon";r=599;t=1`, written into a buffer on the stack: the header value's own
/// copy is the only allocation.
fn annotate(response: &mut Response, policy_header: &HeaderValue, decisions: &[(Policy, Decision)]) {
    let mut value = HeaderBuf::default();
    for (i, (policy, decision)) in decisions.iter().enumerate() {
        if i > 0 {
            value.push(b", ");
        }
        value.push(b"\"");
        value.push(policy.name().as_bytes());
        value.push(b"\";r=");
        value.push(itoa::Buffer::new().format(decision.remaining).as_bytes());
        value.push(b";t=");
        value.push(itoa::Buffer::new().format(decision.wait_secs()).as_bytes());
    }
    let headers = response.headers_mut();
    headers.insert(RATELIMIT_POLICY, policy_header.clone());
    if let Ok(value) = HeaderValue::from_bytes(value.as_bytes()) {
        headers.insert(RATELIMIT, value);
    }
}

/// Room for two items of the longest policy name with 20-digit numbers.
#[derive(Debug)]
struct HeaderBuf {
    bytes: [u8; 128],
    len: usize,
}

impl Default for HeaderBuf {
    fn default() -> Self {
        Self { bytes: [0; 128], len: 0 }
    }
}

impl HeaderBuf {
    /// Appends `part`; what does not fit is cut off (never with the sizes above).
    fn push(&mut self, part: &[u8]) {
        let end = (self.len + part.len()).min(self.bytes.len());
        self.bytes[self.len..end].copy_from_slice(&part[..end - self.len]);
        self.len = end;
    }

    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// The layer of [`RateLimits`].
#[derive(Debug, Clone)]
pub struct RateLimitLayer {
    limiter: Arc<Limiter>,
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimit { inner, limiter: self.limiter.clone() }
    }
}

/// The service of [`RateLimitLayer`].
#[derive(Debug, Clone)]
pub struct RateLimit<S> {
    inner: S,
    limiter: Arc<Limiter>,
}

impl<S> Service<Request> for RateLimit<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send,
{
    type Response = Response;
    type Error = Infallible;
    type Future = RateLimitFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        // Without Redis, a request that is not a login is decided here, at once,
        // and its answer annotated as it passes: no boxed future and no clone of
        // the inner service per request. `Limiter::handle` does the same, slower.
        if self.limiter.store.redis.is_none()
            && let Some(decided) = self.limiter.decide_locally(&request)
        {
            return match decided {
                Some((policy, decision, header)) if !decision.allowed => RateLimitFuture::Boxed {
                    inner: Box::pin(std::future::ready(Ok(self.limiter.refuse(header, &[(policy, decision)], policy)))),
                },
                annotation => RateLimitFuture::Direct {
                    inner: self.inner.call(request),
                    annotation: annotation.map(|(policy, decision, header)| (policy, decision, header.clone())),
                },
            };
        }
        // The clone that was polled ready serves this request (tower's rule).
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let limiter = self.limiter.clone();
        RateLimitFuture::Boxed { inner: Box::pin(async move { Ok(limiter.handle(request, inner).await) }) }
    }
}

pin_project_lite::pin_project! {
    /// The answer of [`RateLimit`]: the inner service's, annotated, or a boxed one
    /// (a login, a refusal, or any request when the store is Redis).
    #[project = RateLimitFutureProj]
    pub enum RateLimitFuture<F> {
        Direct {
            #[pin]
            inner: F,
            annotation: Option<(Policy, Decision, HeaderValue)>,
        },
        Boxed {
            inner: Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>,
        },
    }
}

impl<F> Future for RateLimitFuture<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            RateLimitFutureProj::Direct { inner, annotation } => {
                let mut response = std::task::ready!(inner.poll(cx))?;
                if let Some((policy, decision, header)) = annotation.take() {
                    annotate(&mut response, &header, &[(policy, decision)]);
                }
                Poll::Ready(Ok(response))
            }
            RateLimitFutureProj::Boxed { inner } => inner.as_mut().poll(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_matched_by_template_and_method() {
        assert_eq!(route_of(&Method::POST, Some("/api/users/login")), Route::Login);
        assert_eq!(route_of(&Method::POST, Some("/api/users")), Route::Register);
        assert_eq!(route_of(&Method::GET, Some("/api/users/login")), Route::General);
        assert_eq!(route_of(&Method::GET, Some("/health/ready")), Route::Exempt);
        assert_eq!(route_of(&Method::GET, Some("/api/articles/{slug}")), Route::General);
        assert_eq!(route_of(&Method::GET, None), Route::General);
    }

    #[test]
    fn policies_index_their_counters_in_order() {
        for (i, policy) in Policy::ALL.into_iter().enumerate() {
            assert_eq!(policy as usize, i, "{policy:?}");
        }
    }

    #[test]
    fn the_ratelimit_header_lists_each_budget_charged() {
        let decision = |remaining, wait_us| Decision { allowed: true, remaining, wait_us };
        let mut response = Response::new(Body::empty());
        let policy = HeaderValue::from_static("\"p\";q=1;w=1");
        let longest = [(Policy::LoginAccount, decision(u64::MAX, u64::MAX)); 2];
        annotate(&mut response, &policy, &longest);
        let max = u64::MAX.div_ceil(1_000_000);
        assert_eq!(
            response.headers()[RATELIMIT],
            format!("\"login-account\";r={};t={max}, \"login-account\";r={};t={max}", u64::MAX, u64::MAX).as_str()
        );
        annotate(&mut response, &policy, &[(Policy::Anonymous, decision(599, 1))]);
        assert_eq!(response.headers()[RATELIMIT], "\"anon\";r=599;t=1");
        assert_eq!(response.headers()[RATELIMIT_POLICY], policy);
    }

    #[test]
    fn the_login_account_is_read_as_the_handler_reads_it() {
        let account = Some(AccountId::of_email("a@b.c"));
        assert_eq!(login_account(br#"{"user":{"email":" A@b.c ","password":"x"}}"#), account);
        assert_eq!(login_account(br#"{"user":{"email":"x@y.z","email":"a@b.c"}}"#), account, "the last key wins");
        assert_eq!(login_account(br#"{"user":{"email":"\u0061@b.c"}}"#), account, "escapes are read");
        for body in
            [&b""[..], b"{", b"[]", br#"{"user":{"email":" "}}"#, br#"{"user":{"email":7}}"#, br#"{"user":null}"#]
        {
            assert_eq!(login_account(body), None, "{body:?}");
        }
    }
}
