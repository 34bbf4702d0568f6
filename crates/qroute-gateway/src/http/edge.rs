//! The HTTP edge: what a request must get past before any handler runs,
//! and how long a connection may hold a slot.
//!
//! Requests ([`layer`]):
//! - `Host` must be one of `[server] allowed_hosts` when that is set, or the
//!   answer is 421 `host_not_allowed`: a DNS-rebinding page reaches us with
//!   its own name in `Host`, so checking it is what tells it apart.
//! - An unsafe method (POST, DELETE, …) carrying an `Origin` header is
//!   refused with 403 `origin_not_allowed` unless the origin is listed in
//!   `cors_allowed_origins` or is the gateway itself. Browsers send `Origin`
//!   on cross-site POSTs, API clients do not; this covers the endpoints
//!   that take no body (stopping an experiment, a rollback), which the
//!   JSON content-type rule of [`super::errors::ApiJson`] cannot.
//! - CORS headers are sent only to the listed origins, so by default no
//!   web page can read an answer.
//!
//! Connections ([`serve`]): HTTP/1.1 served by hyper directly, because
//! `axum::serve` has no timeouts. Each connection has a watchdog that
//! closes it when its request head is late (`header_read_timeout_ms`),
//! when it sits idle between requests (`idle_timeout_ms`) or when the client
//! stops reading an answer; request bodies carry a deadline
//! (`body_read_timeout_ms`, a 408); and at `max_connections` the accept
//! loop waits for a slot instead of taking sockets it cannot serve.

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::ConnectInfo;
use axum::http::{header, HeaderValue, Method, Request, StatusCode};
use axum::response::Response;
use axum::{BoxError, Router};
use futures_util::future::{self, Either as EitherFuture, Ready};
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tower::util::Either;
use tower::{Layer, Service, ServiceExt};
use tower_http::cors::{AllowHeaders, AllowOrigin, Cors, CorsLayer};

use super::errors::error_response;
use crate::server_config::{normalize_host, ServerConfig};

// ---------------------------------------------------------------- requests

/// The request checks and CORS, as one layer for [`super::router`]. It must
/// stay outside authentication: a CORS preflight carries no credentials.
pub fn layer(cfg: &ServerConfig) -> EdgeLayer {
    let origins: Vec<String> = cfg
        .cors_allowed_origins
        .iter()
        .map(|o| o.to_ascii_lowercase())
        .collect();
    let cors = (!origins.is_empty()).then(|| {
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(
                origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()),
            ))
            .allow_methods([Method::GET, Method::POST, Method::DELETE])
            // Whatever headers a listed origin's page asks for: the browser
            // OpenAI SDK sends `x-stainless-*` headers that change between
            // versions, and the origin list is the boundary, not the headers.
            .allow_headers(AllowHeaders::mirror_request())
            // What a page's script may read: the ids to quote in a bug
            // report, the cache's verdict, the rate limits, the timing.
            .expose_headers(
                [
                    "x-request-id",
                    "x-qroute-cache",
                    "x-process-time",
                    "x-ratelimit-limit-requests",
                    "x-ratelimit-remaining-requests",
                    "retry-after",
                ]
                .map(axum::http::HeaderName::from_static),
            )
            .max_age(Duration::from_secs(600))
    });
    EdgeLayer {
        guard: Arc::new(Guard {
            hosts: cfg.allowed_hosts.iter().map(|h| normalize_host(h)).collect(),
            origins,
        }),
        cors,
    }
}

#[derive(Clone)]
pub struct EdgeLayer {
    guard: Arc<Guard>,
    cors: Option<CorsLayer>,
}

impl<S> Layer<S> for EdgeLayer {
    type Service = Either<Cors<GuardService<S>>, GuardService<S>>;

    fn layer(&self, inner: S) -> Self::Service {
        let guarded = GuardService {
            inner,
            guard: self.guard.clone(),
        };
        match &self.cors {
            // CORS outside the guard, so that the guard's refusals still
            // carry CORS headers for a listed origin and can be read there.
            Some(cors) => Either::Left(cors.layer(guarded)),
            None => Either::Right(guarded),
        }
    }
}

struct Guard {
    /// Normalized (see [`normalize_host`]); empty accepts any host.
    hosts: Vec<String>,
    /// Lower case, as browsers send them.
    origins: Vec<String>,
}

impl Guard {
    fn check<B>(&self, req: &Request<B>) -> Option<Response> {
        let host_header = req.headers().get(header::HOST).and_then(|v| v.to_str().ok());
        if !self.hosts.is_empty() {
            // An absolute-form target names a host too; both must pass.
            let uri_host = req.uri().host();
            let allowed = |h: &str| self.hosts.contains(&normalize_host(h));
            let ok = (host_header.is_some() || uri_host.is_some())
                && host_header.is_none_or(|h| allowed(strip_port(h)))
                && uri_host.is_none_or(allowed);
            if !ok {
                return Some(error_response(
                    StatusCode::MISDIRECTED_REQUEST,
                    "host_not_allowed",
                    "this Host is not served here (see [server] allowed_hosts)",
                ));
            }
        }
        if !is_safe(req.method()) {
            if let Some(origin) = req.headers().get(header::ORIGIN) {
                let origin = origin.to_str().unwrap_or("").to_ascii_lowercase();
                let same_origin = origin
                    .split_once("://")
                    .is_some_and(|(_, authority)| host_header.is_some_and(|h| h.eq_ignore_ascii_case(authority)));
                if !same_origin && !self.origins.contains(&origin) {
                    return Some(error_response(
                        StatusCode::FORBIDDEN,
                        "origin_not_allowed",
                        "cross-site requests are refused unless the origin is listed in [server] cors_allowed_origins",
                    ));
                }
            }
        }
        None
    }
}

fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE)
}

/// `name:port` → `name`; `[v6]:port` → `[v6]`; anything else unchanged.
fn strip_port(authority: &str) -> &str {
    if authority.starts_with('[') {
        return authority.find(']').map_or(authority, |end| &authority[..=end]);
    }
    match authority.rsplit_once(':') {
        Some((name, port)) if !name.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => authority,
    }
}

/// Answers a refused request itself; passes the others on.
#[derive(Clone)]
pub struct GuardService<S> {
    inner: S,
    guard: Arc<Guard>,
}

impl<S, B> Service<Request<B>> for GuardService<S>
where
    S: Service<Request<B>, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = EitherFuture<Ready<Result<Response, S::Error>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        match self.guard.check(&req) {
            Some(refusal) => EitherFuture::Left(future::ready(Ok(refusal))),
            None => EitherFuture::Right(self.inner.call(req)),
        }
    }
}

// ------------------------------------------------------------ request bodies

/// A request body that did not arrive within `body_read_timeout_ms`; it
/// reaches [`super::errors::ApiJson`] as the cause of a body error, which
/// answers 408.
#[derive(Debug)]
pub struct BodyTimeout {
    pub after: Duration,
}

impl fmt::Display for BodyTimeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the request body did not arrive within {} ms (server.body_read_timeout_ms)",
            self.after.as_millis()
        )
    }
}

impl std::error::Error for BodyTimeout {}

/// The [`BodyTimeout`] in an error's chain of causes, if any.
pub fn body_timeout_in<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a BodyTimeout> {
    let mut cause = Some(err);
    while let Some(e) = cause {
        if let Some(t) = e.downcast_ref::<BodyTimeout>() {
            return Some(t);
        }
        cause = e.source();
    }
    None
}

/// A body that fails with [`BodyTimeout`] once its deadline passes: the
/// whole body must arrive by then, however it trickles in.
struct DeadlineBody<B> {
    inner: B,
    deadline: Instant,
    after: Duration,
    /// Made on the first wait only: most bodies arrive with the head.
    sleep: Option<Pin<Box<Sleep>>>,
}

impl<B> http_body::Body for DeadlineBody<B>
where
    B: http_body::Body + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = B::Data;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<B::Data>, BoxError>>> {
        let this = self.get_mut();
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        let deadline = this.deadline;
        let sleep = this
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        ready!(sleep.as_mut().poll(cx));
        Poll::Ready(Some(Err(Box::new(BodyTimeout { after: this.after }))))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

// ------------------------------------------------------------- connections

/// Serves `app` on `listener` until `shutdown` resolves, then stops
/// accepting, lets in-flight requests finish and returns when every
/// connection has closed.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    cfg: &ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let limits = Limits {
        header_ms: cfg.header_read_timeout_ms,
        idle_ms: cfg.idle_timeout_ms,
        body: cfg.body_read_timeout(),
    };
    let slots = Arc::new(Semaphore::new(connection_capacity(cfg.max_connections)));
    // Connections hold a receiver: `true` asks them to finish, and the
    // sender sees them all gone through `closed()`.
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut shutdown = pin!(shutdown);
    loop {
        // Take a slot before accepting: at the limit, new connections wait
        // in the kernel's backlog rather than being accepted and starved.
        let slot = tokio::select! {
            biased;
            () = &mut shutdown => break,
            slot = slots.clone().acquire_owned() => slot,
        };
        let Ok(slot) = slot else { break };
        let (stream, remote) = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
        };
        // A streamed answer is many small writes: without this, Nagle's
        // algorithm holds each behind the client's delayed ACK of the
        // last (40 ms on Linux), and the first token waits for it.
        let _ = stream.set_nodelay(true);
        tokio::spawn(connection(stream, remote, app.clone(), limits, stop_rx.clone(), slot));
    }
    drop(listener);
    drop(stop_rx);
    let _ = stop_tx.send(true);
    stop_tx.closed().await;
    Ok(())
}

async fn accept_failed(e: io::Error) {
    if matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionRefused
    ) {
        return;
    }
    // Most likely out of file handles: pause rather than spin, and let the
    // watchdogs free some.
    tracing::warn!(error = %e, "accepting a connection failed; retrying shortly");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// File handles kept for everything but connections: the store's files,
/// logs, the listener.
const FILES_RESERVED: u64 = 128;

/// How many connections to serve at once: `max_connections`, unless the
/// open-file limit cannot carry that many. The soft limit is first raised as
/// far as the hard limit allows (as Go's runtime does at start-up: the
/// default soft limit is often 1,024). Each connection may need an upstream
/// connection as well, so two handles are counted per connection. Serving
/// fewer and leaving the rest in the backlog beats running out of handles:
/// then accepting fails, and so do the upstream calls of requests already
/// accepted.
fn connection_capacity(max_connections: usize) -> usize {
    let wanted = (max_connections as u64)
        .saturating_mul(2)
        .saturating_add(FILES_RESERVED);
    let limit = match rlimit::increase_nofile_limit(wanted) {
        Ok(limit) => limit,
        Err(e) => {
            tracing::debug!(error = %e, "reading the open-file limit failed");
            return max_connections;
        }
    };
    if limit >= wanted {
        return max_connections;
    }
    let fit = usize::try_from(limit.saturating_sub(FILES_RESERVED) / 2)
        .unwrap_or(max_connections)
        .clamp(1, max_connections);
    tracing::warn!(
        max_connections,
        serving = fit,
        open_file_limit = limit,
        "the open-file limit (ulimit -n) cannot carry server.max_connections (two handles each); \
         serving fewer at once"
    );
    fit
}

#[derive(Clone, Copy)]
struct Limits {
    header_ms: u64,
    idle_ms: u64,
    body: Duration,
}

async fn connection(
    stream: TcpStream,
    remote: SocketAddr,
    app: Router,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
    _slot: OwnedSemaphorePermit,
) {
    let state = Arc::new(ConnState::new());
    let io = TokioIo::new(WatchedIo {
        inner: stream,
        state: state.clone(),
    });
    let service = ConnService {
        app,
        remote,
        state: state.clone(),
        body_timeout: limits.body,
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    // The watchdog times request heads. hyper's own header timeout starts
    // as soon as a keep-alive connection waits for its next request, so it
    // would also cut every idle connection short.
    builder.header_read_timeout(None::<Duration>);
    let mut conn = pin!(builder.serve_connection(io, service));
    let mut stopping = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(%remote, error = %e, "connection ended with an error");
                }
                break;
            }
            _ = stop.wait_for(|stop| *stop), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
            verdict = state.watch(limits) => match verdict {
                Verdict::Drain => conn.as_mut().graceful_shutdown(),
                Verdict::Close => {
                    tracing::debug!(%remote, "closing a stalled connection");
                    break;
                }
            },
        }
    }
}

/// Sentinel for "not set" in the millisecond fields of [`ConnState`].
const NONE: u64 = u64::MAX;

/// What the watchdog knows of one connection, in milliseconds since it was
/// accepted. Everything runs on the connection's task, so relaxed atomics
/// suffice; they are atomics only because the state is shared.
struct ConnState {
    born: Instant,
    /// The last byte read or written, or the end of the last answer.
    last_activity: AtomicU64,
    /// When the pending request head began (accept, or the first byte after
    /// an answer); NONE once it has been parsed.
    head_since: AtomicU64,
    /// When a write first found the socket full; NONE while writes flow.
    write_blocked_since: AtomicU64,
    /// When the watchdog asked the idle connection to close.
    drain_since: AtomicU64,
    /// Requests whose answer has not been fully handed to hyper.
    in_flight: AtomicUsize,
    /// Wakes the watchdog when a deadline may have moved earlier.
    notify: Notify,
}

enum Verdict {
    /// Close after the request in progress, if any (a graceful shutdown).
    Drain,
    /// Drop the connection now.
    Close,
}

enum Check {
    Now(Verdict),
    At(u64),
    Never,
}

impl ConnState {
    fn new() -> Self {
        ConnState {
            born: Instant::now(),
            last_activity: AtomicU64::new(0),
            head_since: AtomicU64::new(0),
            write_blocked_since: AtomicU64::new(NONE),
            drain_since: AtomicU64::new(NONE),
            in_flight: AtomicUsize::new(0),
            notify: Notify::new(),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.born.elapsed().as_millis()).unwrap_or(NONE - 1)
    }

    fn on_read(&self) {
        let now = self.now_ms();
        self.last_activity.store(now, Ordering::Relaxed);
        if self.in_flight.load(Ordering::Relaxed) == 0
            && self
                .head_since
                .compare_exchange(NONE, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.notify.notify_one();
        }
    }

    fn on_write<T>(&self, poll: &Poll<io::Result<T>>, wrote: bool) {
        match poll {
            Poll::Ready(Ok(_)) if wrote => {
                self.last_activity.store(self.now_ms(), Ordering::Relaxed);
                self.write_blocked_since.store(NONE, Ordering::Relaxed);
            }
            Poll::Pending => {
                let now = self.now_ms();
                if self
                    .write_blocked_since
                    .compare_exchange(NONE, now, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
                {
                    self.notify.notify_one();
                }
            }
            Poll::Ready(_) => {}
        }
    }

    fn request_started(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.head_since.store(NONE, Ordering::Relaxed);
        InFlight(self.clone())
    }

    fn check(&self, limits: Limits) -> Check {
        let now = self.now_ms();
        let mut next = NONE;
        let mut due = |since: u64, after: u64| {
            let at = since.saturating_add(after);
            next = next.min(at);
            now >= at
        };
        // A client that stops reading its answer holds the connection for
        // ever otherwise; it gets as long as an idle one.
        let blocked = self.write_blocked_since.load(Ordering::Relaxed);
        if blocked != NONE && due(blocked, limits.idle_ms) {
            return Check::Now(Verdict::Close);
        }
        // While a request is being handled its own deadlines apply (the
        // body's, the engine's); the connection's start when it is done.
        if self.in_flight.load(Ordering::Relaxed) == 0 {
            let head = self.head_since.load(Ordering::Relaxed);
            let drain = self.drain_since.load(Ordering::Relaxed);
            if head != NONE {
                if due(head, limits.header_ms) {
                    return Check::Now(Verdict::Close);
                }
            } else if drain != NONE {
                // Asked to close but still open: no longer ask.
                if due(drain, limits.header_ms) {
                    return Check::Now(Verdict::Close);
                }
            } else if due(self.last_activity.load(Ordering::Relaxed), limits.idle_ms) {
                self.drain_since.store(now, Ordering::Relaxed);
                return Check::Now(Verdict::Drain);
            }
        }
        if next == NONE {
            Check::Never
        } else {
            Check::At(next)
        }
    }

    /// Resolves when the connection should go; cancel-safe, so it can be
    /// dropped and called again.
    async fn watch(&self, limits: Limits) -> Verdict {
        loop {
            let woken = self.notify.notified();
            match self.check(limits) {
                Check::Now(verdict) => return verdict,
                Check::At(at) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(self.born + Duration::from_millis(at)) => {}
                        () = woken => {}
                    }
                }
                Check::Never => woken.await,
            }
        }
    }
}

/// Counts a request as in flight until its answer has been handed over.
struct InFlight(Arc<ConnState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let state = &self.0;
        state.last_activity.store(state.now_ms(), Ordering::Relaxed);
        if state.in_flight.fetch_sub(1, Ordering::Relaxed) == 1 {
            state.notify.notify_one();
        }
    }
}

/// The socket, reporting reads and writes to its [`ConnState`].
struct WatchedIo {
    inner: TcpStream,
    state: Arc<ConnState>,
}

impl AsyncRead for WatchedIo {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let poll = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(poll, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.state.on_read();
        }
        poll
    }
}

impl AsyncWrite for WatchedIo {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.state.on_write(&poll, matches!(poll, Poll::Ready(Ok(n)) if n > 0));
        poll
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.state.on_write(&poll, matches!(poll, Poll::Ready(Ok(n)) if n > 0));
        poll
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// The router as hyper calls it on one connection: the body gets its
/// deadline, the request its peer address (for `ConnectInfo`), and the
/// answer an [`InFlight`] guard that lasts until its body is sent.
struct ConnService {
    app: Router,
    remote: SocketAddr,
    state: Arc<ConnState>,
    body_timeout: Duration,
}

impl hyper::service::Service<Request<Incoming>> for ConnService {
    type Response = Response<GuardedBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let guard = self.state.request_started();
        let mut req = req.map(|inner| {
            Body::new(DeadlineBody {
                inner,
                deadline: Instant::now() + self.body_timeout,
                after: self.body_timeout,
                sleep: None,
            })
        });
        req.extensions_mut().insert(ConnectInfo(self.remote));
        let app = self.app.clone();
        Box::pin(async move {
            let response = app.oneshot(req).await?;
            Ok(response.map(|inner| GuardedBody { inner, _guard: guard }))
        })
    }
}

/// A response body holding its request's [`InFlight`] guard.
struct GuardedBody {
    inner: Body,
    _guard: InFlight,
}

impl http_body::Body for GuardedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_stripped() {
        assert_eq!(strip_port("localhost:8080"), "localhost");
        assert_eq!(strip_port("localhost"), "localhost");
        assert_eq!(strip_port("[::1]:8080"), "[::1]");
        assert_eq!(strip_port("[::1]"), "[::1]");
        assert_eq!(strip_port("::1"), "::1");
    }

    fn guard(hosts: &[&str], origins: &[&str]) -> Guard {
        Guard {
            hosts: hosts.iter().map(|h| normalize_host(h)).collect(),
            origins: origins.iter().map(|o| o.to_string()).collect(),
        }
    }

    fn req(method: Method, headers: &[(&str, &str)]) -> Request<()> {
        let mut r = Request::builder().method(method).uri("/v1/execute");
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        r.body(()).unwrap()
    }

    #[test]
    fn hosts_are_checked_without_port_and_case() {
        let g = guard(&["gw.example.com", "[::1]"], &[]);
        let status = |h: &[(&str, &str)]| g.check(&req(Method::GET, h)).map(|r| r.status().as_u16());
        assert_eq!(status(&[("host", "GW.example.com:8080")]), None);
        assert_eq!(status(&[("host", "[::1]:8080")]), None);
        assert_eq!(status(&[("host", "evil.example:8080")]), Some(421));
        assert_eq!(status(&[]), Some(421), "no Host at all");
        assert_eq!(
            guard(&[], &[])
                .check(&req(Method::GET, &[("host", "anything")]))
                .map(|r| r.status()),
            None
        );
    }

    #[test]
    fn unsafe_cross_site_methods_need_a_listed_origin() {
        let g = guard(&[], &["https://app.example"]);
        let status = |m: Method, h: &[(&str, &str)]| g.check(&req(m, h)).map(|r| r.status().as_u16());
        let host = ("host", "127.0.0.1:8080");
        assert_eq!(status(Method::POST, &[host]), None, "no Origin: an API client");
        assert_eq!(status(Method::POST, &[host, ("origin", "https://app.example")]), None);
        assert_eq!(
            status(Method::POST, &[host, ("origin", "http://127.0.0.1:8080")]),
            None,
            "same origin"
        );
        assert_eq!(
            status(Method::POST, &[host, ("origin", "https://evil.example")]),
            Some(403)
        );
        assert_eq!(status(Method::POST, &[host, ("origin", "null")]), Some(403));
        assert_eq!(
            status(Method::DELETE, &[host, ("origin", "https://evil.example")]),
            Some(403)
        );
        assert_eq!(status(Method::GET, &[host, ("origin", "https://evil.example")]), None);
    }

    #[test]
    fn capacity_never_exceeds_the_configured_limit() {
        assert_eq!(connection_capacity(5), 5, "a handful always fits");
        let big = connection_capacity(1_000_000);
        assert!((1..=1_000_000).contains(&big), "{big}");
    }

    #[test]
    fn body_timeouts_are_found_in_a_chain() {
        #[derive(Debug)]
        struct Wrapper(BodyTimeout);
        impl fmt::Display for Wrapper {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "wrapped")
            }
        }
        impl std::error::Error for Wrapper {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let e = Wrapper(BodyTimeout {
            after: Duration::from_millis(5),
        });
        assert_eq!(body_timeout_in(&e).map(|t| t.after.as_millis()), Some(5));
        assert!(body_timeout_in(&io::Error::other("x")).is_none());
    }
}
