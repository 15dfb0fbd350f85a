//! The HTTP series: requests by method, matched route template and status
//! class, their latency, and the requests in flight.
//!
//! The route label is the template the router matched (`/api/articles/{slug}`),
//! never the path, and every request that matched no route shares one label,
//! [`UNMATCHED`]: a scan of random paths adds no series.
//!
//! On the hot path the layer looks nothing up in the recorder: each (route,
//! method, class) keeps the handles of its two series, made on its first
//! request, and a request costs one read-locked map lookup, two atomic updates
//! and one histogram sample (a lock-free push). Label values are `'static` or
//! shared, so no request allocates for them.

use std::{
    collections::HashMap,
    future::Future,
    pin::Pin,
    sync::{Arc, OnceLock, PoisonError, RwLock},
    task::{Context, Poll},
    time::Instant,
};

use ::metrics::{Counter, Gauge, Histogram, SharedString, counter, gauge, histogram};
use axum::{
    extract::MatchedPath,
    http::{Method, Request, Response},
};
use tower::{Layer, Service};

use super::{HTTP_DURATION, HTTP_IN_FLIGHT, HTTP_REQUESTS};

/// The route label of requests that matched no route.
pub const UNMATCHED: &str = "<unmatched>";

/// Method labels: the methods the API serves, then one for any other.
const METHODS: [&str; 8] = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "OTHER"];
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Measures every request of the router it wraps. Added with `Router::layer`,
/// it runs after routing, where [`MatchedPath`] is known. Clones share one table.
#[derive(Debug, Clone)]
pub struct HttpMetricsLayer(Arc<Table>);

#[derive(Debug)]
struct Table {
    routes: RwLock<HashMap<Box<str>, Arc<RouteSeries>>>,
    unmatched: Arc<RouteSeries>,
    in_flight: Gauge,
}

/// The series of one route template, made on first use.
#[derive(Debug)]
struct RouteSeries {
    route: SharedString,
    /// Indexed by `method * CLASSES.len() + class`.
    slots: [OnceLock<Series>; METHODS.len() * CLASSES.len()],
}

#[derive(Debug)]
struct Series {
    requests: Counter,
    duration: Histogram,
}

impl HttpMetricsLayer {
    /// Takes its handles from the recorder installed now: install it first
    /// ([`super::install`]), or the layer records nothing.
    pub fn new() -> Self {
        Self(Arc::new(Table {
            routes: RwLock::default(),
            unmatched: Arc::new(RouteSeries::new(SharedString::const_str(UNMATCHED))),
            in_flight: gauge!(HTTP_IN_FLIGHT),
        }))
    }
}

impl Default for HttpMetricsLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl Table {
    fn route(&self, matched: Option<&MatchedPath>) -> Arc<RouteSeries> {
        let Some(path) = matched.map(MatchedPath::as_str) else { return Arc::clone(&self.unmatched) };
        if let Some(series) = self.routes.read().unwrap_or_else(PoisonError::into_inner).get(path) {
            return Arc::clone(series);
        }
        // First request on this route: the templates are the router's, a bounded set.
        let mut routes = self.routes.write().unwrap_or_else(PoisonError::into_inner);
        let series = routes
            .entry(path.into())
            .or_insert_with(|| Arc::new(RouteSeries::new(SharedString::from_owned(path.to_owned()))));
        Arc::clone(series)
    }
}

impl RouteSeries {
    fn new(route: SharedString) -> Self {
        Self { route, slots: std::array::from_fn(|_| OnceLock::new()) }
    }

    fn record(&self, method: usize, status: u16, started: Instant) {
        let class = usize::from(status / 100).clamp(1, CLASSES.len()) - 1;
        let series = self.slots[method * CLASSES.len() + class].get_or_init(|| {
            let labels = || {
                vec![
                    ::metrics::Label::new("method", METHODS[method]),
                    ::metrics::Label::new("route", self.route.clone()),
                    ::metrics::Label::new("status", CLASSES[class]),
                ]
            };
            Series { requests: counter!(HTTP_REQUESTS, labels()), duration: histogram!(HTTP_DURATION, labels()) }
        });
        series.requests.increment(1);
        series.duration.record(started.elapsed());
    }
}

fn method_index(method: &Method) -> usize {
    match *method {
        Method::GET => 0,
        Method::HEAD => 1,
        Method::POST => 2,
        Method::PUT => 3,
        Method::DELETE => 4,
        Method::PATCH => 5,
        Method::OPTIONS => 6,
        _ => 7,
    }
}

impl<S> Layer<S> for HttpMetricsLayer {
    type Service = HttpMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        HttpMetrics { inner, table: Arc::clone(&self.0) }
    }
}

/// The service [`HttpMetricsLayer`] makes.
#[derive(Debug, Clone)]
pub struct HttpMetrics<S> {
    inner: S,
    table: Arc<Table>,
}

impl<S, B, ResBody> Service<Request<B>> for HttpMetrics<S>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let route = self.table.route(request.extensions().get::<MatchedPath>());
        let method = method_index(request.method());
        ResponseFuture {
            inner: self.inner.call(request),
            measure: Some(Measure { route, method, started: Instant::now() }),
            _in_flight: InFlight::enter(&self.table.in_flight),
        }
    }
}

struct Measure {
    route: Arc<RouteSeries>,
    method: usize,
    started: Instant,
}

/// Counts a request in flight until it is answered or dropped (its client left).
struct InFlight(Gauge);

impl InFlight {
    fn enter(gauge: &Gauge) -> Self {
        gauge.increment(1.0);
        Self(gauge.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

pin_project_lite::pin_project! {
    /// Records the request when its response is ready.
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        measure: Option<Measure>,
        _in_flight: InFlight,
    }
}

impl<F, ResBody, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let output = std::task::ready!(this.inner.poll(cx));
        if let (Ok(response), Some(measure)) = (&output, this.measure.take()) {
            measure.route.record(measure.method, response.status().as_u16(), measure.started);
        }
        Poll::Ready(output)
    }
}

impl<F> std::fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_method_and_status_has_its_slot_and_odd_ones_are_bounded() {
        assert_eq!(method_index(&Method::GET), 0);
        assert_eq!(method_index(&Method::from_bytes(b"PROPFIND").expect("method")), METHODS.len() - 1);
        let route = RouteSeries::new(SharedString::const_str("/x"));
        // Without a recorder the handles do nothing; what matters is that no status panics.
        for status in [100, 200, 204, 301, 404, 503, 599] {
            route.record(0, status, Instant::now());
        }
        assert_eq!(route.slots.iter().filter(|slot| slot.get().is_some()).count(), 5);
    }
}
