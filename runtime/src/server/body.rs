//! Request bodies as the runtime's handlers and guests read them, and the
//! response body that tells the connection a request is done.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

use super::InFlight;

/// The most of an unread request body read and thrown away after the
/// answer, so the client receives that answer rather than a reset.
const DISCARD_BYTES: usize = 64 << 20;
/// The longest that takes (nginx's `lingering_time` is 30 s).
const DISCARD_TIME: Duration = Duration::from_secs(30);

/// Why a request body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The client's connection failed or the stream was reset.
    #[error("request body: {0}")]
    Client(#[from] hyper::Error),
    /// The client sent nothing for this long while the body was awaited.
    #[error("the request body stopped arriving for {0:?} (--client-timeout)")]
    Stalled(Duration),
}

impl From<BodyError> for wasmtime_wasi_http::Error {
    fn from(e: BodyError) -> Self {
        match e {
            BodyError::Client(e) => wasmtime_wasi_http::Error::Hyper(e),
            // What the guest is told (wasi:http takes only an error code);
            // the runtime records the stall itself, by this type, before
            // the conversion (guests/bodies.rs), and answers 408.
            BodyError::Stalled(_) => wasmtime_wasi_http::Error::ConnectionReadTimeout,
        }
    }
}

/// A request body with two duties hyper leaves to its user.
///
/// - A client that stops sending while someone waits for the body gets an
///   error after `gap`, not an instance held until the request timeout.
///   The clock runs only while the body is awaited, so a guest that reads
///   slowly is not blamed on the client.
/// - Dropped unfinished (an answer given before the body was read: 401,
///   413, or a guest that ignores it), the rest is read and thrown away in
///   the background, within bounds, as nginx does. Closing with unread
///   bytes would make the kernel reset the connection, and the client
///   would lose the answer (curl shows HTTP/1.1 status 000, or an HTTP/2
///   stream error, instead of the 401 or 413).
pub struct RequestBody {
    inner: Option<Incoming>,
    gap: Duration,
    timer: Option<Pin<Box<Sleep>>>,
    waiting: bool,
    polled: bool,
    failed: bool,
    /// `Expect: 100-continue`: until the body is asked for, the client
    /// sends none of it, so there is nothing to discard.
    expects_continue: bool,
}

impl RequestBody {
    /// Wraps `inner`; `gap` is `--client-timeout`.
    pub fn new(inner: Incoming, gap: Duration, expects_continue: bool) -> RequestBody {
        RequestBody {
            inner: Some(inner),
            gap,
            timer: None,
            waiting: false,
            polled: false,
            failed: false,
            expects_continue,
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        this.polled = true;
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.waiting = false;
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.failed = true;
                Poll::Ready(Some(Err(BodyError::Client(e))))
            }
            Poll::Ready(None) => {
                this.inner = None;
                Poll::Ready(None)
            }
            Poll::Pending => {
                let deadline = Instant::now() + this.gap;
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if !this.waiting {
                    this.waiting = true;
                    timer.as_mut().reset(deadline);
                }
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        this.failed = true;
                        Poll::Ready(Some(Err(BodyError::Stalled(this.gap))))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}

impl Drop for RequestBody {
    fn drop(&mut self) {
        let Some(body) = self.inner.take() else {
            return;
        };
        if self.failed || body.is_end_stream() || (self.expects_continue && !self.polled) {
            return;
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(discard(body, self.gap));
        }
    }
}

/// Reads what is left of `body` and drops it: at most [`DISCARD_BYTES`]
/// within [`DISCARD_TIME`], and no longer than `gap` between frames.
async fn discard(mut body: Incoming, gap: Duration) {
    let until = Instant::now() + DISCARD_TIME;
    let mut left = DISCARD_BYTES;
    loop {
        let next = (Instant::now() + gap).min(until);
        match tokio::time::timeout_at(next, body.frame()).await {
            Ok(Some(Ok(frame))) => {
                let n = frame.data_ref().map_or(0, Bytes::len);
                match left.checked_sub(n) {
                    Some(l) => left = l,
                    None => return,
                }
            }
            _ => return,
        }
    }
}

/// A response body that holds its request's place in the connection's
/// count of requests in flight until it is done with (sent or dropped).
pub struct Tracked<B> {
    inner: B,
    _in_flight: InFlight,
}

impl<B> Tracked<B> {
    pub(super) fn new(inner: B, in_flight: InFlight) -> Tracked<B> {
        Tracked {
            inner,
            _in_flight: in_flight,
        }
    }
}

impl<B: Body + Unpin> Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
