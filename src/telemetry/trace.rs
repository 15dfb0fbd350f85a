//! Each request's span, in the trace its `traceparent` names.
//!
//! [`RequestSpanLayer`] makes the `request` span (method, matched route, request
//! id, trace id, status): in the caller's trace when the request carries a valid
//! `traceparent`, in a new trace otherwise; and returns `traceparent` with our
//! span's id on every response. Every log line of the request is inside that span,
//! so it carries the trace id.
//!
//! Ids come from one place per process. Without OTLP export we make them (a
//! random span id, and a random trace id for a new trace). With export, the
//! OpenTelemetry SDK makes them while it starts the exported span, the caller's
//! span its parent, and we read them back: the ids in the logs, in the response
//! and in the exported trace are then the same.
//!
//! `tracestate` is not read: we make no outgoing call to pass it on to, and the
//! response carries only `traceparent`.

use std::{
    future::Future,
    pin::Pin,
    sync::atomic::{AtomicBool, Ordering},
    task::{Context, Poll, ready},
};

use axum::{
    extract::MatchedPath,
    http::{Request, Response},
};
use tower::{Layer, Service};
use tracing::{Span, field::Empty};

use super::traceparent::{TRACEPARENT, TraceParent};

/// Set once at start-up when spans are exported (see [`super::otel`]).
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// Spans are exported from now on: take the ids from the OpenTelemetry SDK.
pub(super) fn set_exporting() {
    EXPORTING.store(true, Ordering::Relaxed);
}

/// Makes the `request` span and answers `traceparent`; `tower_http`'s
/// `TraceLayer` inside it takes the span as its own (`Span::current()`).
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestSpanLayer;

impl<S> Layer<S> for RequestSpanLayer {
    type Service = RequestSpan<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestSpan { inner }
    }
}

#[derive(Debug, Clone)]
pub struct RequestSpan<S> {
    inner: S,
}

impl<S, B, R> Service<Request<B>> for RequestSpan<S>
where
    S: Service<Request<B>, Response = Response<R>>,
{
    type Response = Response<R>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let parent = TraceParent::from_headers(request.headers());
        let (span, ours) = if EXPORTING.load(Ordering::Relaxed) {
            exported_span(&request, parent)
        } else {
            let ours = TraceParent::child_of(parent);
            (request_span(&request, Some(ours)), ours)
        };
        let inner = span.in_scope(|| self.inner.call(request));
        ResponseFuture { inner, ours }
    }
}

/// The span, with the trace id when it is known before the span starts (it is
/// recorded at creation: recording it later would make the JSON log format
/// re-serialise the span's fields).
fn request_span<B>(request: &Request<B>, ours: Option<TraceParent>) -> Span {
    let route = request.extensions().get::<MatchedPath>().map_or("<unmatched>", MatchedPath::as_str);
    let request_id = request.headers().get(crate::app::X_REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("");
    tracing::info_span!(
        "request",
        method = %request.method(),
        route,
        request_id,
        trace_id = ours.map(|ours| tracing::field::display(ours.trace_id)),
        status = Empty,
    )
}

/// With OTLP export: the SDK starts the span under the caller's, which gives our
/// ids; ours are made only if the span is disabled.
fn exported_span<B>(request: &Request<B>, parent: Option<TraceParent>) -> (Span, TraceParent) {
    let span = request_span(request, None);
    let ours = super::otel::start_request_span(&span, parent).unwrap_or_else(|| TraceParent::child_of(parent));
    span.record("trace_id", tracing::field::display(ours.trace_id));
    (span, ours)
}

pin_project_lite::pin_project! {
    /// The inner service's response, with `traceparent` added.
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        ours: TraceParent,
    }
}

impl<F, R, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<R>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut response = ready!(this.inner.poll(cx))?;
        response.headers_mut().insert(TRACEPARENT, this.ours.to_header_value());
        Poll::Ready(Ok(response))
    }
}
