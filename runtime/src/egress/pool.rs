//! The runtime's own outbound HTTPS to a few busy targets (peers' sync
//! listeners): one persistent HTTP/2 connection per target, through one
//! `CONNECT` tunnel of the host proxy, shared by every request to it.
//!
//! [`Outbound`](super::Outbound) opens a tunnel, a TLS session and an
//! HTTP/1.1 connection per request, which is right for a rare ACME or KMS
//! call but far too costly for Raft's heartbeats (every ~50 ms) and an
//! append per write. Here:
//!
//! - requests to one target are multiplexed as HTTP/2 streams over one
//!   connection, kept alive by pings so a tunnel the host dropped silently
//!   is noticed within [`KEEP_ALIVE_INTERVAL`] + [`KEEP_ALIVE_TIMEOUT`];
//! - a connection that ends is forgotten and the next request opens
//!   another; only one attempt per target runs at a time, and concurrent
//!   callers wait for it instead of opening a tunnel each;
//! - a failed attempt is remembered for a backoff (200 ms, doubling to
//!   2 s) during which requests fail at once as unreachable, so a peer
//!   that is down costs neither tunnels nor callers' time;
//! - at most [`MAX_TARGETS`] targets are kept; the least recently used one
//!   is let go (its connection closes) to make room.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, Uri, Version};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::client::conn::http2::{self, SendRequest};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use nacre_transport::Address;
use nacre_transport::tunnel::Target;
use tokio::sync::watch;
use tokio::time::Instant;

use super::OnceError;
use super::io::Lenient;
use super::once::{ConnectError, tls_tunnel, with_alpn};

/// Targets kept at most; past it the least recently used one is dropped.
const MAX_TARGETS: usize = 64;
/// Tunnel, TLS and HTTP/2 handshakes together. An attempt runs on its own
/// (callers that give up early do not cancel it), so it needs its own end.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Silence on a connection after which it is pinged, requests in flight
/// or not: Raft's callers give up after a few seconds, so a dead tunnel
/// must be noticed in about that time.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(1);
/// How long a ping may go unanswered before the connection is dropped.
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(2);
/// The backoff after the first failed attempt; it doubles per failure.
const BACKOFF_FIRST: Duration = Duration::from_millis(200);
/// The longest backoff.
const BACKOFF_MAX: Duration = Duration::from_secs(2);

type Sender = SendRequest<Full<Bytes>>;

/// A client keeping one HTTP/2 connection per target, through the host
/// proxy, with TLS inside the enclave.
pub struct Pooled {
    proxy: Address,
    tls: Arc<rustls::ClientConfig>,
    slots: Mutex<HashMap<Key, Arc<Slot>>>,
}

/// A target as a map key (host, port): [`Target`] is not `Hash`.
type Key = (String, u16);

/// One target's connection, or why there is none.
#[derive(Default)]
struct Slot {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    link: Link,
    /// Attempts failed in a row (and connections that ended before any
    /// answer); what the backoff grows with.
    failures: u32,
    /// Bumped per connection, so a connection that ends clears only its
    /// own `Link::Up`, never a newer one.
    generation: u64,
    /// Whether the current connection gave an answer yet.
    answered: bool,
    used: Option<Instant>,
}

#[derive(Default)]
enum Link {
    /// Nothing open and no reason to wait: the next request connects.
    #[default]
    Idle,
    /// An attempt is under way; the channel closes when it settles.
    Connecting(watch::Receiver<()>),
    /// An open connection.
    Up { sender: Sender, generation: u64 },
    /// The last attempt failed; requests fail at once until `until`.
    Down {
        until: Instant,
        why: String,
        unanswered: bool,
    },
}

impl Slot {
    /// The state; a lock poisoned by a panic elsewhere still holds a
    /// consistent state (every change is a single assignment).
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Pooled {
    /// Connections go through the host proxy at `proxy` (`--egress`) and
    /// check the target's certificate with `tls`; ALPN is set to `h2`
    /// only, so a target that cannot speak HTTP/2 is refused.
    pub fn new(proxy: Address, tls: rustls::ClientConfig) -> Pooled {
        Pooled {
            proxy,
            tls: with_alpn(tls, b"h2"),
            slots: Mutex::new(HashMap::new()),
        }
    }

    /// Sends `request` (origin-form URI: path and query) to `target` and
    /// reads an answer of at most `max_answer` bytes, all within `timeout`,
    /// connecting first if no connection is open.
    pub async fn request(
        &self,
        target: &Target,
        request: Request<Bytes>,
        max_answer: usize,
        timeout: Duration,
    ) -> Result<Response<Bytes>, OnceError> {
        let request = h2_request(target, request)?;
        let slot = self.slot(target);
        tokio::time::timeout(timeout, self.exchange(&slot, target, request, max_answer))
            .await
            .map_err(|_| failure(target, format!("no answer within {timeout:?}"), true))?
    }

    /// The targets kept now (at most [`MAX_TARGETS`]).
    pub fn targets(&self) -> usize {
        self.slots().len()
    }

    fn slots(&self) -> MutexGuard<'_, HashMap<Key, Arc<Slot>>> {
        self.slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// `target`'s slot, made (and room made for it) if it has none.
    fn slot(&self, target: &Target) -> Arc<Slot> {
        let key = (target.host.clone(), target.port);
        let mut slots = self.slots();
        if let Some(slot) = slots.get(&key) {
            return slot.clone();
        }
        if slots.len() >= MAX_TARGETS {
            // Requests still holding the evicted slot finish on it; its
            // connection closes once the last of them lets go.
            let oldest = slots
                .iter()
                .min_by_key(|(_, s)| s.lock().used)
                .map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                tracing::debug!(host = %oldest.0, port = oldest.1, "pooled connection evicted");
                slots.remove(&oldest);
            }
        }
        let slot = Arc::new(Slot::default());
        slots.insert(key, slot.clone());
        slot
    }

    /// Sends on the target's connection. A request the connection handed
    /// back unsent (it closed before taking it) is sent once more on a new
    /// one: nothing of it reached the target, so it cannot run twice.
    async fn exchange(
        &self,
        slot: &Arc<Slot>,
        target: &Target,
        request: Request<Full<Bytes>>,
        max_answer: usize,
    ) -> Result<Response<Bytes>, OnceError> {
        let mut sender = self.sender(slot, target).await?;
        let response = match sender.try_send_request(request).await {
            Ok(r) => r,
            Err(mut e) => match e.take_message() {
                Some(request) => {
                    let mut sender = self.sender(slot, target).await?;
                    sender
                        .send_request(request)
                        .await
                        .map_err(|e| failure(target, e.to_string(), true))?
                }
                None => return Err(failure(target, e.into_error().to_string(), true)),
            },
        };
        slot.lock().answered = true;
        let (parts, body) = response.into_parts();
        let body = Limited::new(body, max_answer)
            .collect()
            .await
            .map_err(|e| {
                let why = if e.downcast_ref::<LengthLimitError>().is_some() {
                    format!("the answer is over {max_answer} bytes")
                } else {
                    format!("the answer: {e}")
                };
                failure(target, why, false)
            })?
            .to_bytes();
        Ok(Response::from_parts(parts, body))
    }

    /// The open connection to `target`, after waiting for (or starting)
    /// an attempt if there is none; at once an error while a failed
    /// attempt's backoff lasts.
    async fn sender(&self, slot: &Arc<Slot>, target: &Target) -> Result<Sender, OnceError> {
        let mut waited = false;
        loop {
            let mut settled = {
                let mut state = slot.lock();
                let now = Instant::now();
                state.used = Some(now);
                match &state.link {
                    Link::Up { sender, .. } if !sender.is_closed() => return Ok(sender.clone()),
                    Link::Down {
                        until,
                        why,
                        unanswered,
                    } if now < *until => {
                        let left = until.saturating_duration_since(now).as_millis();
                        let why = format!("unreachable for another {left} ms: {why}");
                        return Err(failure(target, why, *unanswered));
                    }
                    // Once is enough: the attempt waited for gave nothing
                    // usable (its connection already ended), and trying
                    // again here could loop for the caller's whole timeout.
                    _ if waited => {
                        let why = "unreachable: the connection ended as it opened".to_string();
                        return Err(failure(target, why, true));
                    }
                    // A channel whose sender is gone without a settled
                    // state means the attempt's task died: start anew.
                    Link::Connecting(rx) if rx.has_changed().is_ok() => rx.clone(),
                    _ => self.start(slot, &mut state, target),
                }
            };
            waited = true;
            // Err once the attempt's task drops its end: it has settled.
            let _ = settled.changed().await;
        }
    }

    /// Starts an attempt in a task of its own, so a caller that gives up
    /// does not cancel it for the callers waiting on it.
    fn start(&self, slot: &Arc<Slot>, state: &mut State, target: &Target) -> watch::Receiver<()> {
        let (done, settled) = watch::channel(());
        state.link = Link::Connecting(settled.clone());
        let (proxy, tls, slot, target) = (
            self.proxy.clone(),
            self.tls.clone(),
            slot.clone(),
            target.clone(),
        );
        tokio::spawn(async move {
            let attempt = tokio::time::timeout(CONNECT_TIMEOUT, connect(&proxy, tls, &target));
            let outcome = attempt.await.unwrap_or_else(|_| {
                Err(ConnectError {
                    why: format!("no connection within {CONNECT_TIMEOUT:?}"),
                    unanswered: true,
                })
            });
            settle(&slot, &target, outcome);
            drop(done);
        });
        settled
    }
}

/// Records an attempt's outcome; on success, drives the connection in a
/// task that clears the slot when the connection ends.
fn settle(slot: &Arc<Slot>, target: &Target, outcome: Result<(Sender, Connection), ConnectError>) {
    let mut state = slot.lock();
    match outcome {
        Ok((sender, conn)) => {
            state.generation += 1;
            state.answered = false;
            let generation = state.generation;
            state.link = Link::Up { sender, generation };
            tracing::debug!(%target, "pooled connection open");
            // Weak: the slot holds the connection's sender, and a strong
            // reference here would keep both alive after eviction.
            let slot = Arc::downgrade(slot);
            tokio::spawn(drive(conn, slot, target.clone(), generation));
        }
        Err(e) => {
            state.failures = state.failures.saturating_add(1);
            let backoff = backoff(state.failures);
            tracing::debug!(%target, error = %e.why, ?backoff, "pooled connection failed");
            state.link = Link::Down {
                until: Instant::now() + backoff,
                why: e.why,
                unanswered: e.unanswered,
            };
        }
    }
}

/// Runs the connection until it ends, then forgets it. One that never
/// answered counts as a failed attempt, so a target that accepts and
/// drops every connection is backed off like one that refuses them.
async fn drive(conn: Connection, slot: Weak<Slot>, target: Target, generation: u64) {
    let ended = conn.await;
    let Some(slot) = slot.upgrade() else { return };
    let mut state = slot.lock();
    if !matches!(state.link, Link::Up { generation: g, .. } if g == generation) {
        return;
    }
    let why = match ended {
        Ok(()) => "the connection closed".to_string(),
        Err(e) => format!("the connection failed: {e}"),
    };
    tracing::debug!(%target, %why, "pooled connection ended");
    if state.answered {
        state.failures = 0;
        state.link = Link::Idle;
    } else {
        state.failures = state.failures.saturating_add(1);
        state.link = Link::Down {
            until: Instant::now() + backoff(state.failures),
            why,
            unanswered: true,
        };
    }
}

/// The stream under a pooled connection.
type Io = TokioIo<Lenient<tokio_rustls::client::TlsStream<nacre_transport::Stream>>>;
/// What drives a pooled connection: polled by [`drive`] until it ends.
type Connection = http2::Connection<Io, Full<Bytes>, TokioExecutor>;

/// `CONNECT` through the host proxy, TLS with ALPN `h2`, the HTTP/2
/// handshake.
async fn connect(
    proxy: &Address,
    tls: Arc<rustls::ClientConfig>,
    target: &Target,
) -> Result<(Sender, Connection), ConnectError> {
    let tls = tls_tunnel(proxy, tls, target).await?;
    if tls.get_ref().1.alpn_protocol() != Some(b"h2") {
        return Err(ConnectError {
            why: "the target does not speak HTTP/2 (ALPN h2)".into(),
            unanswered: false,
        });
    }
    let mut builder = http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .keep_alive_interval(KEEP_ALIVE_INTERVAL)
        .keep_alive_timeout(KEEP_ALIVE_TIMEOUT)
        // Idle too: a tunnel that died between requests is then found
        // before a request is lost to it.
        .keep_alive_while_idle(true);
    builder
        .handshake(TokioIo::new(Lenient(tls)))
        .await
        .map_err(|e| ConnectError {
            why: format!("HTTP/2: {e}"),
            unanswered: true,
        })
}

/// The request as HTTP/2 wants it: an absolute URI (`:scheme` and
/// `:authority`, the authority being the caller's `Host` if it set one,
/// else the target) and no `Host` header beside it, which servers such as
/// nginx refuse as a duplicate.
fn h2_request(target: &Target, request: Request<Bytes>) -> Result<Request<Full<Bytes>>, OnceError> {
    let (mut parts, body) = request.into_parts();
    let host = parts.headers.remove(http::header::HOST);
    if parts.uri.scheme().is_none() {
        let authority = match &host {
            Some(h) => h
                .to_str()
                .map_err(|_| failure(target, "the Host header is not text".into(), false))?
                .to_string(),
            None => target.to_string(),
        };
        let path = match parts.uri.path_and_query() {
            Some(pq) if pq.as_str().starts_with('/') => pq.to_string(),
            // A query with an empty path is still a request for "/".
            Some(pq) => format!("/{pq}"),
            None => "/".to_string(),
        };
        parts.uri = format!("https://{authority}{path}")
            .parse::<Uri>()
            .map_err(|e| failure(target, format!("the request's URI: {e}"), false))?;
    }
    parts.version = Version::HTTP_2;
    Ok(Request::from_parts(parts, Full::new(body)))
}

/// The wait after `failures` failed attempts in a row.
fn backoff(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    BACKOFF_FIRST
        .saturating_mul(1 << doublings)
        .min(BACKOFF_MAX)
}

fn failure(target: &Target, why: String, unanswered: bool) -> OnceError {
    OnceError {
        target: target.to_string(),
        why,
        unanswered,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> Target {
        Target {
            host: "peer.test".into(),
            port: 8444,
        }
    }

    #[test]
    fn the_backoff_doubles_from_200_ms_to_2_s() {
        let ms = |n| backoff(n).as_millis();
        assert_eq!(
            [ms(1), ms(2), ms(3), ms(4), ms(5)],
            [200, 400, 800, 1600, 2000]
        );
        assert_eq!(ms(u32::MAX), 2000);
    }

    #[test]
    fn requests_get_an_absolute_uri_and_no_host_header() {
        let request = Request::post("/enclave/sync?x=1")
            .body(Bytes::from_static(b"{}"))
            .unwrap();
        let r = h2_request(&target(), request).unwrap();
        assert_eq!(r.uri(), "https://peer.test:8444/enclave/sync?x=1");
        assert_eq!(r.version(), Version::HTTP_2);
        let request = Request::get("/")
            .header(http::header::HOST, "other.test")
            .body(Bytes::new())
            .unwrap();
        let r = h2_request(&target(), request).unwrap();
        assert_eq!(r.uri(), "https://other.test/");
        assert!(r.headers().get(http::header::HOST).is_none());
        let v6 = Target {
            host: "::1".into(),
            port: 9,
        };
        let r = h2_request(&v6, Request::new(Bytes::new())).unwrap();
        assert_eq!(r.uri(), "https://[::1]:9/");
    }
}
