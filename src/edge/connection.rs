//! One client connection: HTTP/1.1 served by hyper, watched for the three ways a
//! client can hold a connection without using it.
//!
//! - Dribbling a request head: the head must be complete within the
//!   header-read timeout of the connection's opening, or of the first byte of
//!   a later request.
//! - Stalling a request body: a request whose body the application waits for
//!   gets no byte of it for the header-read timeout: the connection is closed.
//! - Idling between requests: a keep-alive connection with no byte of a new
//!   request for the keep-alive timeout is closed.
//!
//! hyper's own `header_read_timeout` cannot tell these apart (its timer starts
//! as soon as a connection goes idle, and it has none for bodies), so the
//! connection keeps a little state of its own (`Progress`): whether a request
//! is being answered, since when the connection waits, when the first byte of
//! the next head came, and since when the application waits for body bytes.
//! Keeping it costs a few relaxed atomic operations per request, one
//! `Instant::now` per request head and per response, and one each time the
//! application finds a request body's next bytes not there yet; the timer is one
//! per connection, re-armed only when it fires.
//!
//! The same state decides what a stop does to the connection ([`Stage`]).
//! When the drain starts, an idle keep-alive connection is closed (its client
//! reconnects while the server still accepts) and one answering a request is
//! closed after its response. When the server stops accepting, a request being
//! answered is finished (with `Connection: close`), an idle keep-alive
//! connection is closed at once, and one whose request is not whole yet (head or
//! body) is closed unless it comes whole within [`HEAD_WAIT_ON_STOP`] (a request
//! already in the socket's buffer is served).

use std::{
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use axum::{
    Router,
    body::Body,
    extract::ConnectInfo,
    http::{HeaderValue, Request, Response, header},
};
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::TokioIo;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
    sync::watch,
};
use tower::ServiceExt as _;

/// Where the server is in its life, as every connection sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Serving normally.
    Serving,
    /// Stopping soon: responses carry `Connection: close`, so that clients open
    /// their next connection elsewhere, and idle keep-alive connections are
    /// closed; connections are otherwise served as usual.
    Draining,
    /// Stopped accepting: a request being answered is finished, one not whole
    /// yet has [`HEAD_WAIT_ON_STOP`] to come whole, any other connection is closed.
    Closing,
    /// The grace period is over: every connection is closed.
    Aborting,
}

/// How long a connection may take to send a request head, and to start the
/// next one.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub header_read: Duration,
    pub keep_alive: Duration,
}

/// When the server stops accepting, how long a connection that has not sent a
/// whole request yet (its head, or a body the application waits for) may still
/// take to do so.
pub const HEAD_WAIT_ON_STOP: Duration = Duration::from_millis(500);

/// Serves one accepted connection until it ends, times out, or the server stops.
pub async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    timeouts: Timeouts,
    mut stage: watch::Receiver<Stage>,
) {
    // Responses are written whole or streamed in pieces: Nagle's algorithm would
    // hold a piece back until the previous one is acknowledged.
    let _ = stream.set_nodelay(true);
    let progress = Arc::new(Progress::new());
    let draining = Arc::new(AtomicBool::new(*stage.borrow() != Stage::Serving));
    let io = TokioIo::new(Watched { stream, progress: progress.clone() });
    let service = Service { app, peer, progress: progress.clone(), draining: draining.clone() };
    let connection = hyper::server::conn::http1::Builder::new().serve_connection(io, service);
    tokio::pin!(connection);

    let check = tokio::time::sleep(timeouts.header_read);
    tokio::pin!(check);
    // Once the server stops accepting: when a connection whose request is not
    // whole yet is closed.
    let mut closing_at: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            ended = connection.as_mut() => {
                if let Err(err) = ended {
                    tracing::debug!(%peer, error = %err, "connection ended with an error");
                }
                return;
            }
            () = check.as_mut() => {
                let now = tokio::time::Instant::now();
                match progress.deadline(timeouts) {
                    Some(deadline) => {
                        let deadline = closing_at.map_or(deadline, |closing| deadline.min(closing));
                        if deadline <= now {
                            tracing::debug!(%peer, "connection closed: its client sent too little, too slowly");
                            return;
                        }
                        check.as_mut().reset(deadline);
                    }
                    // A request is being answered, and its body (if any) is not
                    // awaited: the request timeout bounds it. During a stop, check
                    // often whether it starts waiting for its client.
                    None => check.as_mut().reset(now + closing_at.map_or(timeouts.header_read, |_| HEAD_WAIT_ON_STOP)),
                }
            }
            changed = stage.changed() => {
                let now = if changed.is_ok() { *stage.borrow_and_update() } else { Stage::Aborting };
                match now {
                    Stage::Serving => {}
                    Stage::Draining => {
                        draining.store(true, Ordering::Relaxed);
                        // Closes an idle keep-alive connection at once (its client
                        // opens the next one while the server still accepts), and one
                        // answering a request after its response, even if that
                        // response was made before the drain began. Not a connection
                        // whose request is on its way: hyper would close it at once
                        // too; its response will say `Connection: close`.
                        if progress.is_idle() || progress.is_answering() {
                            connection.as_mut().graceful_shutdown();
                        }
                    }
                    Stage::Closing => {
                        draining.store(true, Ordering::Relaxed);
                        if progress.is_idle() || progress.is_answering() {
                            connection.as_mut().graceful_shutdown();
                        }
                        if !progress.is_idle() {
                            // A request whose head or body is not whole yet has a
                            // moment to come whole (it may be in the socket's buffer,
                            // and is then answered with `Connection: close`); one
                            // still incomplete then is not waited for.
                            let at = tokio::time::Instant::now() + HEAD_WAIT_ON_STOP;
                            closing_at = Some(at);
                            check.as_mut().reset(at);
                        }
                    }
                    Stage::Aborting => return,
                }
            }
        }
    }
}

/// What a connection has been doing, for its timeouts and for a stop.
#[derive(Debug)]
struct Progress {
    opened: Instant,
    /// A request's head came and its response is not yet complete.
    answering: AtomicBool,
    /// Whether any request's head has come.
    had_request: AtomicBool,
    /// Milliseconds after `opened` when the connection last went idle (0: since it opened).
    idle_since: AtomicU64,
    /// Milliseconds after `opened` + 1 when the first byte came since it went
    /// idle; 0 when none has.
    first_byte: AtomicU64,
    /// Milliseconds after `opened` + 1 since when the application waits for
    /// request body bytes that have not come; 0 when it does not wait.
    body_wait: AtomicU64,
}

impl Progress {
    fn new() -> Self {
        Self {
            opened: Instant::now(),
            answering: AtomicBool::new(false),
            had_request: AtomicBool::new(false),
            idle_since: AtomicU64::new(0),
            first_byte: AtomicU64::new(0),
            body_wait: AtomicU64::new(0),
        }
    }

    fn millis(&self) -> u64 {
        u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX - 1)
    }

    /// Bytes were read: the first since the connection went idle starts the
    /// header-read timeout. Bytes read while a request is answered are its body
    /// (or a pipelined request, which is then given the keep-alive timeout).
    fn on_read(&self) {
        if self.first_byte.load(Ordering::Relaxed) == 0 && !self.answering.load(Ordering::Relaxed) {
            self.first_byte.store(self.millis() + 1, Ordering::Relaxed);
        }
    }

    fn on_request(&self) {
        self.answering.store(true, Ordering::Relaxed);
        self.had_request.store(true, Ordering::Relaxed);
    }

    fn on_response_done(&self) {
        self.idle_since.store(self.millis(), Ordering::Relaxed);
        self.first_byte.store(0, Ordering::Relaxed);
        self.body_wait.store(0, Ordering::Relaxed);
        self.answering.store(false, Ordering::Relaxed);
    }

    /// The application found no body bytes to read: the request waits for its client.
    fn on_body_wait(&self) {
        if self.body_wait.load(Ordering::Relaxed) == 0 {
            self.body_wait.store(self.millis() + 1, Ordering::Relaxed);
        }
    }

    /// Body bytes (or the body's end) came, or the body was dropped.
    fn on_body_read(&self) {
        if self.body_wait.load(Ordering::Relaxed) != 0 {
            self.body_wait.store(0, Ordering::Relaxed);
        }
    }

    fn never_answered(&self) -> bool {
        !self.had_request.load(Ordering::Relaxed)
    }

    fn is_answering(&self) -> bool {
        self.answering.load(Ordering::Relaxed)
    }

    /// A keep-alive connection between requests, with no byte of the next one.
    fn is_idle(&self) -> bool {
        !self.never_answered() && !self.is_answering() && self.first_byte.load(Ordering::Relaxed) == 0
    }

    /// When the connection must be closed if nothing changes; `None` while a
    /// request is answered and does not wait for its body.
    fn deadline(&self, timeouts: Timeouts) -> Option<tokio::time::Instant> {
        let at = |millis: u64, timeout: Duration| {
            tokio::time::Instant::from_std(self.opened + Duration::from_millis(millis) + timeout)
        };
        if self.is_answering() {
            return match self.body_wait.load(Ordering::Relaxed) {
                0 => None,
                since => Some(at(since - 1, timeouts.header_read)),
            };
        }
        Some(match self.first_byte.load(Ordering::Relaxed) {
            // A request head is on its way (the first one counts from the opening).
            0 if self.never_answered() => at(0, timeouts.header_read),
            0 => at(self.idle_since.load(Ordering::Relaxed), timeouts.keep_alive),
            first => at(first - 1, timeouts.header_read),
        })
    }
}

/// The socket, noting when bytes arrive.
struct Watched {
    stream: TcpStream,
    progress: Arc<Progress>,
}

impl AsyncRead for Watched {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.progress.on_read();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// The router as hyper calls it: each request gets the peer's address
/// (`ConnectInfo<SocketAddr>`, as axum's `into_make_service_with_connect_info`
/// would give it), and its response body reports when it is complete.
#[derive(Clone)]
struct Service {
    app: Router,
    peer: SocketAddr,
    progress: Arc<Progress>,
    draining: Arc<AtomicBool>,
}

impl hyper::service::Service<Request<Incoming>> for Service {
    type Response = Response<Tracked>;
    type Error = std::convert::Infallible;
    type Future = Answer;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        self.progress.on_request();
        // A body to come is watched for stalls; most requests have none.
        let mut request = if hyper::body::Body::is_end_stream(request.body()) {
            request.map(Body::new)
        } else {
            let progress = self.progress.clone();
            request.map(|body| Body::new(RequestBody { body, progress }))
        };
        request.extensions_mut().insert(ConnectInfo(self.peer));
        Answer {
            inner: self.app.clone().oneshot(request),
            progress: Some(self.progress.clone()),
            draining: self.draining.clone(),
        }
    }
}

/// A request body, noting when the application waits for bytes of it that the
/// client has not sent.
struct RequestBody {
    body: Incoming,
    progress: Arc<Progress>,
}

impl hyper::body::Body for RequestBody {
    type Data = axum::body::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        if polled.is_pending() {
            self.progress.on_body_wait();
        } else {
            self.progress.on_body_read();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for RequestBody {
    fn drop(&mut self) {
        self.progress.on_body_read();
    }
}

pin_project_lite::pin_project! {
    /// The router's answer, with its body tracked.
    struct Answer {
        #[pin]
        inner: tower::util::Oneshot<Router, Request<Body>>,
        progress: Option<Arc<Progress>>,
        draining: Arc<AtomicBool>,
    }
}

impl Future for Answer {
    type Output = Result<Response<Tracked>, std::convert::Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Ok(mut response) = std::task::ready!(this.inner.poll(cx));
        if this.draining.load(Ordering::Relaxed) {
            response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        let done = Done(this.progress.take());
        Poll::Ready(Ok(response.map(|body| Tracked { body, _done: done })))
    }
}

/// A response body that marks its connection idle once written (or dropped).
#[derive(Debug)]
pub struct Tracked {
    body: Body,
    _done: Done,
}

#[derive(Debug)]
struct Done(Option<Arc<Progress>>);

impl Drop for Done {
    fn drop(&mut self) {
        if let Some(progress) = &self.0 {
            progress.on_response_done();
        }
    }
}

impl hyper::body::Body for Tracked {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUTS: Timeouts = Timeouts { header_read: Duration::from_secs(10), keep_alive: Duration::from_secs(30) };

    fn after(progress: &Progress, deadline: Option<tokio::time::Instant>) -> Option<Duration> {
        deadline.map(|d| d.into_std().duration_since(progress.opened))
    }

    #[test]
    fn a_new_connection_has_the_header_read_timeout_for_its_first_request() {
        let progress = Progress::new();
        assert_eq!(after(&progress, progress.deadline(TIMEOUTS)), Some(Duration::from_secs(10)));
        progress.on_read();
        assert_eq!(after(&progress, progress.deadline(TIMEOUTS)), Some(Duration::from_secs(10)));
        assert!(progress.never_answered());
    }

    #[test]
    fn a_request_being_answered_has_no_deadline_of_the_connection() {
        let progress = Progress::new();
        progress.on_request();
        progress.on_read();
        assert_eq!(progress.deadline(TIMEOUTS), None);
        assert!(!progress.never_answered());
    }

    #[test]
    fn an_idle_connection_has_the_keep_alive_timeout_until_a_byte_comes() {
        let progress = Progress::new();
        progress.on_request();
        progress.on_response_done();
        let idle = after(&progress, progress.deadline(TIMEOUTS)).expect("a deadline");
        assert!(idle >= Duration::from_secs(30) && idle < Duration::from_secs(31), "{idle:?}");
        progress.on_read();
        let head = after(&progress, progress.deadline(TIMEOUTS)).expect("a deadline");
        assert!(head >= Duration::from_secs(10) && head < Duration::from_secs(11), "{head:?}");
        assert!(!progress.is_idle(), "the next request has begun");
    }

    #[test]
    fn a_request_waiting_for_its_body_has_the_header_read_timeout_from_when_it_began_waiting() {
        let progress = Progress::new();
        progress.on_request();
        progress.on_body_wait();
        let stalled = after(&progress, progress.deadline(TIMEOUTS)).expect("a deadline");
        assert!(stalled >= Duration::from_secs(10) && stalled < Duration::from_secs(11), "{stalled:?}");
        progress.on_body_read();
        assert_eq!(progress.deadline(TIMEOUTS), None);
        assert!(!progress.is_idle());
    }
}
