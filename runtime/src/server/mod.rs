//! Serving a [`Handler`] on a listener: accept, TLS handshake, then HTTP/2
//! when the client chose `h2` by ALPN and HTTP/1.1 otherwise.
//!
//! Every phase of a connection has a deadline, `--client-timeout`: the TLS
//! handshake, the first request and every request head after it, the gaps
//! in a request body while it is awaited ([`body::RequestBody`]), and any
//! time the connection has no request in flight (HTTP/1.1 keep-alive,
//! HTTP/2 with no open stream). A client that goes silent in any of them
//! is let go, so silent clients cannot fill the connection cap.

mod body;
mod lanes;

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use nacre_transport::{Listener, Stream};
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use body::{BodyError, RequestBody, Tracked};

use crate::http::{ResponseBody, error};

/// Connections served at once; further clients wait in the kernel backlog.
const MAX_CONNECTIONS: usize = 4096;
/// How long shutdown waits for requests in flight.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a connection closed for idleness may take to say goodbye
/// (HTTP/2's GOAWAY and PING) before it is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(2);
/// The most of a refused request head read and thrown away after the
/// answer ([`linger`]): a head is over [`MAX_HEAD`] by then, so this is
/// about thirty times that.
const LINGER_BYTES: usize = 1 << 20;
/// The longest that takes (nginx's `lingering_timeout`).
const LINGER_TIME: Duration = Duration::from_secs(5);
/// A request head in all (request line and headers), as nginx allows by
/// default (`large_client_header_buffers 4 8k`); past it, 431.
pub const MAX_HEAD: usize = 32 << 10;
/// One header line, or the request target; past it, 431 (414 for the
/// target).
pub const MAX_HEADER_LINE: usize = 8 << 10;

/// Live connection counters, shown in `/enclave/debug`.
#[derive(Debug, Default, serde::Serialize)]
pub struct ConnStats {
    /// Connections accepted so far.
    pub accepted: AtomicU64,
    /// Connections open now.
    pub open: AtomicU64,
    /// Connections dropped during the TLS handshake (garbage, stalls).
    pub failed_handshakes: AtomicU64,
    /// Connections closed after `--client-timeout` with nothing in flight.
    pub closed_idle: AtomicU64,
}

/// What a listener serves: one answer for each request. The router of the
/// public listener is one; the sync and metrics listeners will be others,
/// all on the same accept loop, limits and deadlines.
pub trait Handler: Send + Sync + 'static {
    /// Answers `req`.
    fn handle(
        &self,
        req: Request<RequestBody>,
    ) -> impl Future<Output = Response<ResponseBody>> + Send;
}

/// How a listener's connections begin.
#[derive(Clone)]
pub enum Security {
    /// A TLS handshake with this config, then HTTP/2 if the client chose
    /// `h2` by ALPN, else HTTP/1.1.
    Tls(Arc<ServerConfig>),
    /// Plain HTTP/1.1 (a listener whose bytes are no secret, such as
    /// metrics).
    Plain,
}

/// Limits every connection of a listener gets.
#[derive(Debug, Clone)]
pub struct Options {
    /// `--client-timeout`: the deadline of every phase of a connection.
    pub client_timeout: Duration,
    /// Connections served at once; further clients wait in the kernel's
    /// backlog.
    pub max_connections: usize,
    /// Draw connections from these slots, shared with other listeners,
    /// in place of `max_connections` of this listener's own: clients'
    /// HTTPS and TCP guests' connections count in one total
    /// (`--max-connections`).
    pub shared_slots: Option<Arc<tokio::sync::Semaphore>>,
    /// Threads of their own serving the connections ([`lanes`]), or 0 to
    /// serve them as tasks of the runtime that calls [`serve`].
    pub lanes: usize,
}

impl Options {
    /// The defaults with this client timeout.
    pub fn new(client_timeout: Duration) -> Options {
        Options {
            client_timeout,
            max_connections: MAX_CONNECTIONS,
            shared_slots: None,
            lanes: 0,
        }
    }

    /// These options with connections drawn from `slots`, shared with
    /// other listeners.
    pub fn sharing(self, slots: Arc<tokio::sync::Semaphore>) -> Options {
        Options {
            shared_slots: Some(slots),
            ..self
        }
    }

    /// These options with connections served on `n` threads of their own,
    /// one per core being the usual choice ([`lanes`]).
    pub fn with_lanes(self, n: usize) -> Options {
        Options { lanes: n, ..self }
    }
}

/// The two HTTP versions, as one future that can be asked to wind down.
enum Conn<I, S>
where
    S: hyper::service::HttpService<Incoming>,
{
    H1(Pin<Box<http1::Connection<TokioIo<I>, S>>>),
    H2(Pin<Box<http2::Connection<TokioIo<I>, S, Exec>>>),
}

impl<I, S> Conn<I, S>
where
    I: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    S: hyper::service::HttpService<Incoming, ResBody = Tracked<ResponseBody>>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::Future: Send + 'static,
{
    fn graceful_shutdown(&mut self) {
        match self {
            Conn::H1(c) => c.as_mut().graceful_shutdown(),
            Conn::H2(c) => c.as_mut().graceful_shutdown(),
        }
    }

    /// The stream of an HTTP/1.1 connection hyper is done with.
    fn into_h1_io(self) -> Option<I>
    where
        S: Unpin,
    {
        match self {
            Conn::H1(c) => Some(Pin::into_inner(c).into_parts().io.into_inner()),
            Conn::H2(_) => None,
        }
    }
}

impl<I, S> Future for Conn<I, S>
where
    I: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    S: hyper::service::HttpService<Incoming, ResBody = Tracked<ResponseBody>>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::Future: Send + 'static,
{
    type Output = hyper::Result<()>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            Conn::H1(c) => c.as_mut().poll(cx),
            Conn::H2(c) => c.as_mut().poll(cx),
        }
    }
}

/// How many requests a connection has in flight, and since when it has
/// had none: what the idle deadline is measured from.
struct Activity {
    opened: Instant,
    in_flight: AtomicUsize,
    /// Milliseconds after `opened` when the last request finished.
    idle_since_ms: AtomicU64,
}

/// One request in flight on a connection; it ends when dropped.
pub struct InFlight(Arc<Activity>);

impl Activity {
    fn new() -> Arc<Activity> {
        Arc::new(Activity {
            opened: Instant::now(),
            in_flight: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(0),
        })
    }

    fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(self.clone())
    }

    /// Resolves once the connection has had nothing in flight for `limit`.
    async fn idle_for(&self, limit: Duration) {
        loop {
            let wait = if self.in_flight.load(Ordering::Acquire) > 0 {
                limit
            } else {
                let since = Duration::from_millis(self.idle_since_ms.load(Ordering::Acquire));
                let deadline = since + limit;
                match deadline.checked_sub(self.opened.elapsed()) {
                    Some(left) if !left.is_zero() => left,
                    _ => return,
                }
            };
            tokio::time::sleep(wait).await;
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let a = &self.0;
        let ms = u64::try_from(a.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        a.idle_since_ms.store(ms, Ordering::Release);
        a.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Where an HTTP/2 connection's streams run: tasks of the runtime serving
/// it, or near its lane ([`lanes::Lanes::spawn_near`]).
#[derive(Clone)]
enum Exec {
    Tokio(TokioExecutor),
    Lanes(Arc<lanes::Lanes>),
}

impl<F> hyper::rt::Executor<F> for Exec
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, fut: F) {
        match self {
            Exec::Tokio(e) => e.execute(fut),
            Exec::Lanes(l) => l.spawn_near(fut),
        }
    }
}

/// The HTTP settings every connection gets.
struct Protocols {
    h1: http1::Builder,
    h2: http2::Builder<Exec>,
    client_timeout: Duration,
}

impl Protocols {
    fn new(client_timeout: Duration, exec: Exec) -> Protocols {
        let mut h1 = http1::Builder::new();
        h1.timer(TokioTimer::new())
            // hyper starts this clock when it starts waiting for a head,
            // so it also bounds a keep-alive connection between requests.
            .header_read_timeout(client_timeout)
            .max_header_size(MAX_HEAD)
            .keep_alive(true);
        let mut h2 = http2::Builder::new(exec);
        h2.timer(TokioTimer::new())
            .keep_alive_interval(Some(Duration::from_secs(30)))
            .keep_alive_timeout(Duration::from_secs(20))
            .max_concurrent_streams(256)
            .max_header_list_size(MAX_HEAD as u32);
        Protocols {
            h1,
            h2,
            client_timeout,
        }
    }
}

/// What every connection task of one listener shares.
struct Shared<H> {
    handler: Arc<H>,
    security: Security,
    protocols: Protocols,
    stats: Arc<ConnStats>,
    stop: CancellationToken,
}

/// Serves `handler` on `listener` until `shutdown` resolves, then lets the
/// requests in flight finish (for at most ten seconds).
pub async fn serve<H: Handler>(
    listener: Listener,
    security: Security,
    handler: Arc<H>,
    options: Options,
    stats: Arc<ConnStats>,
    shutdown: impl Future<Output = ()>,
) {
    let slots = options
        .shared_slots
        .clone()
        .unwrap_or_else(|| Arc::new(tokio::sync::Semaphore::new(options.max_connections)));
    let lanes = match options.lanes {
        0 => None,
        n => match lanes::Lanes::start(n, "nacre-conn").await {
            Ok(l) => Some(Arc::new(l)),
            Err(e) => {
                tracing::error!(error = %e, "cannot start serving threads; serving on the main runtime");
                None
            }
        },
    };
    let exec = match &lanes {
        Some(l) => Exec::Lanes(l.clone()),
        None => Exec::Tokio(TokioExecutor::new()),
    };
    let shared = Arc::new(Shared {
        handler,
        security,
        protocols: Protocols::new(options.client_timeout, exec),
        stats,
        stop: CancellationToken::new(),
    });
    let tasks = TaskTracker::new();
    tokio::pin!(shutdown);

    loop {
        let (stream, peer) = tokio::select! {
            c = listener.accept() => c,
            _ = &mut shutdown => break,
        };
        // Taken after the accept, so that an idle listener holds no slot
        // that others sharing them (TCP guests) could use; while none is
        // free this connection waits unserved, and the next ones in the
        // kernel's backlog.
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = &mut shutdown => break,
        };
        shared.stats.accepted.fetch_add(1, Ordering::Relaxed);
        shared.stats.open.fetch_add(1, Ordering::Relaxed);
        let shared = shared.clone();
        let Some(lanes) = &lanes else {
            tasks.spawn(async move {
                let _permit = permit;
                connection(stream, &peer, &shared).await;
                shared.stats.open.fetch_sub(1, Ordering::Relaxed);
            });
            continue;
        };
        let detached = stream.detach();
        lanes.run(tasks.track_future(async move {
            let _permit = permit;
            match detached.and_then(|d| d.attach()) {
                Ok(stream) => connection(stream, &peer, &shared).await,
                Err(e) => tracing::warn!(%peer, error = %e, "cannot hand a connection to a serving thread"),
            }
            shared.stats.open.fetch_sub(1, Ordering::Relaxed);
        }));
    }
    drop(listener);
    tracing::info!("listener closed; draining open connections");
    shared.stop.cancel();
    tasks.close();
    if tokio::time::timeout(DRAIN_TIMEOUT, tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after {DRAIN_TIMEOUT:?}; closing them");
    }
    // The connections' tasks hold the lanes too (the HTTP/2 executor):
    // stop them here rather than when the last reference goes.
    if let Some(lanes) = &lanes {
        lanes.stop();
    }
}

/// One connection, from its first byte to its close.
async fn connection<H: Handler>(stream: Stream, peer: &str, shared: &Shared<H>) {
    let config = match &shared.security {
        Security::Plain => return http(stream, false, peer, shared).await,
        Security::Tls(config) => config.clone(),
    };
    let stats = &shared.stats;
    let limit = shared.protocols.client_timeout;
    let accepted = tokio::time::timeout(limit, TlsAcceptor::from(config).accept(stream)).await;
    let tls = match accepted {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            stats.failed_handshakes.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            stats.failed_handshakes.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%peer, "TLS handshake timed out");
            return;
        }
    };
    let alpn = tls.get_ref().1.alpn_protocol();
    if alpn == Some(crate::tls::ACME_TLS_ALPN) {
        // TLS-ALPN-01 validation ends with the handshake (RFC 8737 §3): no
        // HTTP on such a connection.
        let mut tls = tls;
        let _ = tokio::io::AsyncWriteExt::shutdown(&mut tls).await;
        return;
    }
    let h2 = alpn == Some(b"h2");
    http(tls, h2, peer, shared).await;
}

/// HTTP on an established stream, until the client or a deadline ends it.
async fn http<I, H>(io: I, h2: bool, peer: &str, shared: &Shared<H>)
where
    I: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    H: Handler,
{
    let limit = shared.protocols.client_timeout;
    let activity = Activity::new();
    let svc_activity = activity.clone();
    let handler = shared.handler.clone();
    let svc = service_fn(move |req: Request<Incoming>| {
        let in_flight = svc_activity.begin();
        let handler = handler.clone();
        async move {
            let expects_continue = req
                .headers()
                .get(http::header::EXPECT)
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
            // Wrapped before the head is judged, so a body refused with
            // the head is discarded like any unread body.
            let req = req.map(|b| RequestBody::new(b, limit, expects_continue));
            let response = match head_too_large(&req) {
                Some(r) => r,
                None => handler.handle(req).await,
            };
            Ok::<_, Infallible>(response.map(|b| Tracked::new(b, in_flight)))
        }
    });
    let io = TokioIo::new(io);
    let protocols = &shared.protocols;
    let mut conn = if h2 {
        Conn::H2(Box::pin(protocols.h2.serve_connection(io, svc)))
    } else {
        Conn::H1(Box::pin(protocols.h1.serve_connection(io, svc)))
    };
    let grace = tokio::select! {
        ended = &mut conn => {
            if let Err(e) = ended {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
                // A head hyper refused (431 past MAX_HEAD, 400): it has
                // answered and shut down its side, but the rest of the
                // head may still be arriving.
                if e.is_parse()
                    && let Some(io) = conn.into_h1_io()
                {
                    linger(io).await;
                }
            }
            return;
        }
        () = activity.idle_for(limit) => {
            shared.stats.closed_idle.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%peer, "closing a connection with nothing in flight for {limit:?}");
            CLOSE_GRACE
        }
        () = shared.stop.cancelled() => DRAIN_TIMEOUT,
    };
    conn.graceful_shutdown();
    // A client that does not play along (a silent one never answers
    // HTTP/2's closing PING) is dropped all the same.
    let _ = tokio::time::timeout(grace, conn).await;
}

/// Reads and drops what the client still sends on a connection whose
/// answer is written and whose sending side is shut down, until the client
/// closes, [`LINGER_BYTES`] or [`LINGER_TIME`]. Closed with unread bytes,
/// the kernel would reset the connection and the client could lose the
/// answer (curl's status 000 instead of 431), as it could for unread
/// bodies ([`body`]).
async fn linger<I: AsyncRead + Unpin>(mut io: I) {
    let until = tokio::time::Instant::now() + LINGER_TIME;
    let mut left = LINGER_BYTES;
    let mut buf = vec![0u8; 16 << 10];
    while left > 0 {
        match tokio::time::timeout_at(until, io.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => left = left.saturating_sub(n),
            _ => return,
        }
    }
}

/// A request head over nginx's default limits: one header line or the
/// target over [`MAX_HEADER_LINE`]. (The whole head is held to
/// [`MAX_HEAD`] by hyper itself: 431 over HTTP/1.1, and over HTTP/2 by the
/// advertised `SETTINGS_MAX_HEADER_LIST_SIZE`.)
fn head_too_large<B>(req: &Request<B>) -> Option<Response<ResponseBody>> {
    let target = req.uri().path_and_query().map_or(0, |pq| pq.as_str().len());
    if target > MAX_HEADER_LINE {
        return Some(error(
            StatusCode::URI_TOO_LONG,
            &format!("the request target is {target} bytes; the limit is {MAX_HEADER_LINE}"),
        ));
    }
    let long = req
        .headers()
        .iter()
        .find(|(name, value)| name.as_str().len() + 2 + value.len() > MAX_HEADER_LINE)?;
    Some(error(
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        &format!(
            "header {} is {} bytes; one header line may take {MAX_HEADER_LINE} bytes, and a request head {MAX_HEAD}",
            long.0,
            long.0.as_str().len() + 2 + long.1.len()
        ),
    ))
}
