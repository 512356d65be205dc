//! One HTTP request through one fresh guest instance.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderValue, Request, Response};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::time::Instant;
use wasmtime::{Store, UpdateDeadline};
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;

use super::host::Host;
use super::{Guest, GuestEngine};

/// Response bodies as the HTTP server sends them.
pub type GuestBody = wasmtime_wasi_http::p2::body::HyperOutgoingBody;

/// How a guest request ended.
pub enum Outcome {
    /// The guest answered (its body may still be streaming).
    Response(Response<GuestBody>),
    /// The guest trapped, returned an error or never answered: 500.
    Failed(String),
    /// The request ran past `--request-timeout`: 504.
    TimedOut,
    /// The request body is over `--max-body`: 413.
    BodyTooLarge,
    /// The client stopped sending the request body while the guest waited
    /// for it: 408.
    BodyStalled,
    /// No instance could be had now (the guest's share, the process's
    /// slots or memory are all in use): 503, with the reason.
    Busy(String),
}

/// How long a request waits for one of its guest's instances when the
/// guest is at its `--guest-instances` limit, before 503.
const SHARE_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// Runs `req` on a fresh instance of `guest`. `path_and_query` is what the
/// guest sees (its route prefix already removed).
pub async fn invoke<B>(
    engine: &GuestEngine,
    guest: Arc<Guest>,
    mut req: Request<B>,
    path_and_query: &str,
) -> Outcome
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<wasmtime_wasi_http::Error>,
{
    let limits = engine.limits();
    guest.stats.requests.fetch_add(1, Ordering::Relaxed);
    if req.body().size_hint().lower() > limits.max_body {
        return Outcome::BodyTooLarge;
    }
    // The guest's share of instances, held until its instance is gone: a
    // guest whose requests stall or pile up waits on its own share only.
    let share = guest.share.instances.clone();
    let permit = match share.clone().try_acquire_owned() {
        Ok(p) => p,
        Err(_) => match tokio::time::timeout(SHARE_WAIT, share.acquire_owned()).await {
            Ok(Ok(p)) => p,
            _ => {
                return Outcome::Busy(format!(
                    "guest {} is running its limit of {} instances at once (--guest-instances); retry shortly",
                    guest.config.name, guest.share.max_instances
                ));
            }
        },
    };
    if let Err(e) = rewrite_uri(&mut req, path_and_query, &guest) {
        return failed(&guest, e);
    }
    let flags = Arc::new(Flags::default());
    let req = req.map(|b| CappedBody {
        inner: b,
        left: limits.max_body,
        limit: limits.max_body,
        flags: flags.clone(),
    });

    let deadline = Instant::now() + limits.request_timeout;
    let mut store = Store::new(
        engine.engine(),
        Host::new(
            &guest.config,
            guest.sha256,
            &limits,
            (engine.memory(), guest.share.clone()),
            engine.enclave(),
            engine.egress(),
            guest.stats.clone(),
        ),
    );
    store.limiter(|h| &mut h.limits);
    store.set_epoch_deadline(1);
    let epoch_flags = flags.clone();
    store.epoch_deadline_callback(move |_| {
        if Instant::now() >= deadline {
            epoch_flags.timed_out.store(true, Ordering::Relaxed);
            Err(wasmtime::Error::msg("request timeout"))
        } else {
            // Yield at every tick: a spinning guest shares its thread.
            Ok(UpdateDeadline::Yield(1))
        }
    });

    let (tx, rx) = tokio::sync::oneshot::channel();
    let prepared = (|| -> wasmtime::Result<_> {
        let req = store
            .data_mut()
            .http()
            .new_incoming_request(Scheme::Https, req)?;
        let head_flags = flags.clone();
        let out = store
            .data_mut()
            .http()
            .new_response_outparam_from_callback(move |head| {
                // Noted while the guest is still in `set`: whatever fails
                // from here on fails after the head, whichever side of the
                // request notices first.
                if head.is_ok() {
                    head_flags.head_sent.store(true, Ordering::Relaxed);
                }
                let _ = tx.send(head);
            })?;
        Ok((req, out))
    })();
    let (wasi_req, out) = match prepared {
        Ok(p) => p,
        Err(e) => return failed(&guest, format!("request not accepted: {e:#}")),
    };

    let pre = guest.pre.clone();
    let task_guest = guest.clone();
    let task_flags = flags.clone();
    // The guest runs in its own task so it can keep streaming the body
    // after the response head is sent. The deadline bounds the whole of
    // it: past it the future is dropped, and with it the store, which
    // tears the instance down and drops the response outparam, so the
    // side waiting for the head below always hears back. The task reports
    // its own failures; nothing has to wait for it once the head is out.
    let task = tokio::spawn(async move {
        let _permit = permit;
        let run = async {
            let proxy = pre
                .instantiate_async(&mut store)
                .await
                .map_err(|e| (Stage::Start, e))?;
            proxy
                .wasi_http_incoming_handler()
                .call_handle(&mut store, wasi_req, out)
                .await
                .map_err(|e| (Stage::Run, e))
        };
        let ran = tokio::time::timeout_at(deadline, run).await;
        let ended = Ended::classify(ran, &task_flags, store.data().limits.starved);
        if !matches!(ended, Ended::Done) {
            task_flags.failed.store(true, Ordering::Release);
        }
        // Only now may the instance go: a response body still streaming
        // ends when it does, and `ResponseBody` must already know how.
        drop(store);
        ended.report(&task_guest, &task_flags, limits.request_timeout);
        ended
    });

    match rx.await {
        // Whatever the guest made of a body over the limit or cut short
        // by the client, the client hears what went wrong with its body.
        Ok(_) if flags.over_limit.load(Ordering::Relaxed) => Outcome::BodyTooLarge,
        Ok(_) if flags.stalled.load(Ordering::Relaxed) => Outcome::BodyStalled,
        Ok(Ok(resp)) => {
            Outcome::Response(resp.map(|inner| ResponseBody { inner, flags }.boxed_unsync()))
        }
        Ok(Err(code)) => failed(&guest, format!("guest returned error {code:?}")),
        // The instance is gone without answering; its task says why (and
        // has logged it).
        Err(_) => match task.await {
            Ok(Ended::Done) => failed(&guest, "guest returned without setting a response".into()),
            Ok(Ended::Busy(why)) => Outcome::Busy(why.into()),
            Ok(Ended::TimedOut) => Outcome::TimedOut,
            Ok(Ended::BodyTooLarge) => Outcome::BodyTooLarge,
            Ok(Ended::BodyStalled) => Outcome::BodyStalled,
            Ok(Ended::Failed(why)) => Outcome::Failed(why),
            Err(e) => failed(&guest, format!("guest task failed: {e}")),
        },
    }
}

/// Counts and logs a failure seen before the guest's task could.
fn failed(guest: &Guest, why: String) -> Outcome {
    count_failure(guest, &why);
    Outcome::Failed(why)
}

/// The one place a failed request (500) is counted and logged.
fn count_failure(guest: &Guest, why: &str) {
    guest.stats.traps.fetch_add(1, Ordering::Relaxed);
    tracing::warn!(guest = %guest.config.name, "guest request failed: {why}");
}

/// What one request's two sides (the guest's task and the HTTP server
/// waiting for the response head) tell each other.
#[derive(Default)]
struct Flags {
    /// The epoch callback stopped the guest at the deadline.
    timed_out: AtomicBool,
    /// The request body went over `--max-body`.
    over_limit: AtomicBool,
    /// The client stopped sending the request body.
    stalled: AtomicBool,
    /// The guest set its response head (the server sends it on).
    head_sent: AtomicBool,
    /// The guest's run ended in a trap, error or timeout; set before its
    /// store is dropped.
    failed: AtomicBool,
}

/// A guest's response body that ends in an error, not a clean end, when
/// the guest failed before finishing it. wasmtime-wasi-http ends the body
/// cleanly when the instance goes away mid-body, and a client would take
/// the truncated body for a whole one; with an error, hyper cuts the
/// connection (HTTP/1.1) or resets the stream (HTTP/2) instead.
struct ResponseBody {
    inner: GuestBody,
    flags: Arc<Flags>,
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = wasmtime_wasi_http::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(None) if self.flags.failed.swap(false, Ordering::Acquire) => {
                Poll::Ready(Some(Err(wasmtime_wasi_http::Error::HttpProtocolError)))
            }
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// How a guest's task ended.
enum Ended {
    /// The handler returned.
    Done,
    /// No instance could be had: the process's slots or memory are in use.
    Busy(&'static str),
    /// Stopped at the deadline.
    TimedOut,
    /// The request body went over `--max-body`.
    BodyTooLarge,
    /// The client stopped sending the request body.
    BodyStalled,
    /// Trapped or failed otherwise.
    Failed(String),
}

/// Where a guest's run failed.
enum Stage {
    /// Making the instance.
    Start,
    /// Running the handler.
    Run,
}

impl Ended {
    fn classify(
        ran: Result<Result<(), (Stage, wasmtime::Error)>, tokio::time::error::Elapsed>,
        flags: &Flags,
        starved: bool,
    ) -> Ended {
        match ran {
            Ok(Ok(())) => Ended::Done,
            Ok(Err((Stage::Start, e))) if e.is::<wasmtime::PoolConcurrencyLimitError>() => {
                Ended::Busy("all guest instance slots are busy; retry shortly")
            }
            Ok(Err((Stage::Start, _))) if starved => Ended::Busy(
                "guest memory is all in use (--guest-memory-total and each guest's share of it); retry shortly",
            ),
            Ok(Err(_)) if flags.timed_out.load(Ordering::Relaxed) => Ended::TimedOut,
            Ok(Err(_)) if flags.over_limit.load(Ordering::Relaxed) => Ended::BodyTooLarge,
            Ok(Err(_)) if flags.stalled.load(Ordering::Relaxed) => Ended::BodyStalled,
            Ok(Err((_, e))) => Ended::Failed(describe(&e)),
            Err(_elapsed) => Ended::TimedOut,
        }
    }

    /// Logs and counts a timeout or failure: before the head as the
    /// request's 504 or 500, after it as a body cut short.
    fn report(&self, guest: &Guest, flags: &Flags, timeout: std::time::Duration) {
        let name = &guest.config.name;
        let stats = &guest.stats;
        if flags.head_sent.load(Ordering::Relaxed) {
            let why = match self {
                Ended::Done | Ended::Busy(_) | Ended::BodyTooLarge | Ended::BodyStalled => return,
                Ended::TimedOut => "timed out while streaming its response",
                Ended::Failed(why) => why,
            };
            stats.traps.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(guest = %name, "guest failed after sending its response head: {why}");
            return;
        }
        match self {
            Ended::TimedOut => {
                stats.timeouts.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(guest = %name, timeout = ?timeout, "guest request timed out; instance stopped");
            }
            Ended::Failed(why) => count_failure(guest, why),
            Ended::Done | Ended::Busy(_) | Ended::BodyTooLarge | Ended::BodyStalled => {}
        }
    }
}

/// The trap reason first (the wasm backtrace only at debug level): what an
/// operator reading the log needs to tell a bug from an attack.
fn describe(e: &wasmtime::Error) -> String {
    if let Some(bt) = e.downcast_ref::<wasmtime::WasmBacktrace>() {
        tracing::debug!("guest backtrace:\n{bt}");
    }
    match e.downcast_ref::<wasmtime::Trap>() {
        Some(trap) => format!("trap: {trap}"),
        None => format!("{e:#}"),
    }
}

/// Gives the guest the path below its route, keeping the query, and says
/// which prefix was removed.
fn rewrite_uri<B>(req: &mut Request<B>, path_and_query: &str, guest: &Guest) -> Result<(), String> {
    let mut parts = req.uri().clone().into_parts();
    parts.path_and_query = Some(
        path_and_query
            .parse()
            .map_err(|e| format!("bad path {path_and_query:?}: {e}"))?,
    );
    *req.uri_mut() = http::Uri::from_parts(parts).map_err(|e| format!("bad URI: {e}"))?;
    let prefix = HeaderValue::from_str(guest.config.route.as_str()).map_err(|e| e.to_string())?;
    req.headers_mut().insert("x-forwarded-prefix", prefix);
    Ok(())
}

/// A request body that stops at `--max-body` and remembers that it did, so
/// the client gets 413 whatever the guest made of the error.
struct CappedBody<B> {
    inner: B,
    left: u64,
    limit: u64,
    flags: Arc<Flags>,
}

impl<B> Body for CappedBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<wasmtime_wasi_http::Error>,
{
    type Data = Bytes;
    type Error = wasmtime_wasi_http::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let len = frame.data_ref().map_or(0, |d| d.len() as u64);
                if len > this.left {
                    this.flags.over_limit.store(true, Ordering::Relaxed);
                    return Poll::Ready(Some(Err(wasmtime_wasi_http::Error::HttpRequestBodySize(
                        Some(this.limit),
                    ))));
                }
                this.left -= len;
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                let e = e.into();
                // Only the server's stall deadline reports this code on a
                // request body (see `server::BodyError`).
                if matches!(e, wasmtime_wasi_http::Error::ConnectionReadTimeout) {
                    this.flags.stalled.store(true, Ordering::Relaxed);
                }
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
