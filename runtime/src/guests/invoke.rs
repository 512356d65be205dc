//! One HTTP request through one fresh guest instance.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderValue, Request, Response};
use http_body::{Body, Frame, SizeHint};
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
    /// Every instance slot is in use: 503.
    Busy,
}

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
    if let Err(e) = rewrite_uri(&mut req, path_and_query, &guest) {
        return Outcome::Failed(e);
    }
    let over_limit = Arc::new(AtomicBool::new(false));
    let req = req.map(|b| CappedBody {
        inner: b,
        left: limits.max_body,
        limit: limits.max_body,
        over: over_limit.clone(),
    });

    let deadline = Instant::now() + limits.request_timeout;
    let timed_out = Arc::new(AtomicBool::new(false));
    let mut store = Store::new(
        engine.engine(),
        Host::new(
            &guest.config,
            guest.sha256,
            &limits,
            engine.enclave(),
            engine.egress(),
        ),
    );
    store.limiter(|h| &mut h.limits);
    store.set_epoch_deadline(1);
    let flag = timed_out.clone();
    store.epoch_deadline_callback(move |_| {
        if Instant::now() >= deadline {
            flag.store(true, Ordering::Relaxed);
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
        let out = store.data_mut().http().new_response_outparam(tx)?;
        Ok((req, out))
    })();
    let (wasi_req, out) = match prepared {
        Ok(p) => p,
        Err(e) => return Outcome::Failed(format!("request not accepted: {e:#}")),
    };

    let pre = guest.pre.clone();
    // The guest runs in its own task so it can keep streaming the body
    // after the response head is sent; the deadline bounds the whole of it,
    // and dropping the future drops the store, tearing the instance down.
    let task = tokio::spawn(tokio::time::timeout_at(deadline, async move {
        let proxy = pre.instantiate_async(&mut store).await?;
        proxy
            .wasi_http_incoming_handler()
            .call_handle(&mut store, wasi_req, out)
            .await
    }));

    let outcome = match tokio::time::timeout_at(deadline, rx).await {
        Ok(Ok(Ok(resp))) if !over_limit.load(Ordering::Relaxed) => {
            // The head is on its way; the body may still be streaming from
            // the guest. Whatever ends it later is logged and counted here.
            tokio::spawn(async move {
                let why = match task.await {
                    Ok(Ok(Err(e))) => describe(&e),
                    Ok(Err(_elapsed)) => "timed out while streaming its response".into(),
                    Err(e) if e.is_panic() => format!("guest task failed: {e}"),
                    _ => return,
                };
                guest.stats.failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(guest = %guest.config.name, "guest failed after sending its response head: {why}");
            });
            return Outcome::Response(resp);
        }
        Ok(Ok(Ok(_))) => Outcome::BodyTooLarge,
        Ok(Ok(Err(code))) => Outcome::Failed(format!("guest returned error {code:?}")),
        Err(_elapsed) => {
            task.abort();
            Outcome::TimedOut
        }
        // The guest dropped its response-outparam: ask the task why.
        Ok(Err(_)) => match task.await {
            Ok(Ok(Ok(()))) => Outcome::Failed("guest returned without setting a response".into()),
            Ok(Ok(Err(e))) if e.is::<wasmtime::PoolConcurrencyLimitError>() => Outcome::Busy,
            Ok(Ok(Err(_))) if timed_out.load(Ordering::Relaxed) => Outcome::TimedOut,
            Ok(Ok(Err(_))) if over_limit.load(Ordering::Relaxed) => Outcome::BodyTooLarge,
            Ok(Ok(Err(e))) => Outcome::Failed(describe(&e)),
            Ok(Err(_elapsed)) => Outcome::TimedOut,
            Err(e) => Outcome::Failed(format!("guest task failed: {e}")),
        },
    };
    match &outcome {
        Outcome::TimedOut => {
            guest.stats.timeouts.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(guest = %guest.config.name, timeout = ?limits.request_timeout, "guest request timed out; instance stopped");
        }
        Outcome::Failed(why) => {
            guest.stats.failures.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(guest = %guest.config.name, "guest request failed: {why}");
        }
        _ => {}
    }
    outcome
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
    over: Arc<AtomicBool>,
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
                    this.over.store(true, Ordering::Relaxed);
                    return Poll::Ready(Some(Err(wasmtime_wasi_http::Error::HttpRequestBodySize(
                        Some(this.limit),
                    ))));
                }
                this.left -= len;
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
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
