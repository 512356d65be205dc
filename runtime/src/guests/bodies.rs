//! The bodies between a request and its guest: the request body capped at
//! `--max-body`, the response body with what the guest wrote early, and the
//! flags both sides of a request set for each other.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use super::invoke::GuestBody;

/// What one request's two sides (the guest's task and the HTTP server
/// waiting for the response head) tell each other.
#[derive(Default)]
pub(super) struct Flags {
    /// The epoch callback stopped the guest at the deadline.
    pub(super) timed_out: AtomicBool,
    /// The request body went over `--max-body`.
    pub(super) over_limit: AtomicBool,
    /// The client stopped sending the request body.
    pub(super) stalled: AtomicBool,
    /// The guest set its response head (the server sends it on).
    pub(super) head_sent: AtomicBool,
    /// The guest's run ended in a trap, error or timeout; set before its
    /// store is dropped.
    pub(super) failed: AtomicBool,
    /// Epoch ticks at which the guest yielded its thread.
    pub(super) yields: AtomicU32,
}

/// Body bytes taken from a guest while it ran in the request's task, sent
/// ahead of the rest.
#[derive(Default)]
pub(super) struct Early {
    pub(super) frames: VecDeque<Frame<Bytes>>,
    pub(super) bytes: usize,
    /// The body failed after `frames`.
    pub(super) error: Option<wasmtime_wasi_http::Error>,
    /// The body ended after `frames`.
    pub(super) ended: bool,
}

/// How much body a guest writes in the request's task before the rest is
/// streamed from a task of its own: the server keeps reading this much
/// without a reader on the other end, so no client can stall a guest past
/// its deadline by not reading. The last frame taken may go past it by one
/// write of the guest's (at most wasi:http's chunk size, 1 MiB), which the
/// channel between guest and server would otherwise have held.
const EARLY_BYTES: usize = 64 * 1024;
const EARLY_FRAMES: usize = 64;

impl Early {
    pub(super) fn push(&mut self, frame: Frame<Bytes>) {
        self.bytes += frame.data_ref().map_or(0, Bytes::len);
        self.frames.push_back(frame);
    }

    pub(super) fn full(&self) -> bool {
        self.bytes >= EARLY_BYTES || self.frames.len() >= EARLY_FRAMES
    }
}

/// A guest's response body: first what it wrote while it ran in the
/// request's task, then the rest as it streams. It ends in an error, not a
/// clean end, when the guest failed before finishing it: wasmtime-wasi-http
/// ends the body cleanly when the instance goes away mid-body, and a
/// client would take the truncated body for a whole one; with an error,
/// hyper cuts the connection (HTTP/1.1) or resets the stream (HTTP/2).
pub(super) struct ResponseBody {
    pub(super) early: Early,
    pub(super) inner: GuestBody,
    pub(super) flags: Arc<Flags>,
}

impl ResponseBody {
    fn end(&self) -> Poll<Option<Result<Frame<Bytes>, wasmtime_wasi_http::Error>>> {
        if self.flags.failed.swap(false, Ordering::Acquire) {
            Poll::Ready(Some(Err(wasmtime_wasi_http::Error::HttpProtocolError)))
        } else {
            Poll::Ready(None)
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = wasmtime_wasi_http::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if let Some(frame) = this.early.frames.pop_front() {
            return Poll::Ready(Some(Ok(frame)));
        }
        if let Some(e) = this.early.error.take() {
            this.early.ended = true;
            return Poll::Ready(Some(Err(e)));
        }
        if this.early.ended {
            return this.end();
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(None) => {
                this.early.ended = true;
                this.end()
            }
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        // Only `poll_frame` tells the end: a guest's failure may still
        // have to turn it into an error.
        false
    }

    fn size_hint(&self) -> SizeHint {
        // Unknown, as the guest's own body says: the framing a client
        // sees does not depend on how fast the guest wrote.
        SizeHint::default()
    }
}

/// A request body that stops at `--max-body` and remembers that it did, so
/// the client gets 413 whatever the guest made of the error.
pub(super) struct CappedBody<B> {
    pub(super) inner: B,
    pub(super) left: u64,
    pub(super) limit: u64,
    pub(super) flags: Arc<Flags>,
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
