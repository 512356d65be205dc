//! The bodies between a request and its guest: the request body capped at
//! `--max-body`, and the response body with what the guest wrote early.
//! Both tell the request's [`Record`] what they saw.

use std::any::Any;
use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use super::record::{Cause, Record};
use crate::server::BodyError;

/// Response bodies as the HTTP server sends them.
pub type GuestBody = wasmtime_wasi_http::p2::body::HyperOutgoingBody;

/// Body bytes taken from a guest while it ran in the request's task, sent
/// ahead of the rest.
#[derive(Default)]
pub(super) struct Early {
    frames: VecDeque<Frame<Bytes>>,
    bytes: usize,
    /// The body failed after `frames`.
    error: Option<wasmtime_wasi_http::Error>,
    /// The body ended after `frames`.
    ended: bool,
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
    /// Whether as much as the server reads ahead has been taken.
    pub(super) fn full(&self) -> bool {
        self.bytes >= EARLY_BYTES || self.frames.len() >= EARLY_FRAMES
    }

    /// Takes the next frame of `body` if the guest has written one: true
    /// if it had, so the guest, its stream freed, may go on. False once the
    /// body failed or ended, or when the guest waits on something else (a
    /// timer, an outbound call, its request body): then the response goes
    /// out with what it wrote so far.
    pub(super) fn take_frame(&mut self, body: &mut GuestBody, cx: &mut Context<'_>) -> bool {
        match Pin::new(body).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                self.bytes += frame.data_ref().map_or(0, Bytes::len);
                self.frames.push_back(frame);
                true
            }
            Poll::Ready(Some(Err(e))) => {
                self.error = Some(e);
                false
            }
            Poll::Ready(None) => {
                self.ended = true;
                false
            }
            Poll::Pending => false,
        }
    }
}

/// A guest's response body: first what it wrote while it ran in the
/// request's task, then the rest as it streams. It ends in an error, not a
/// clean end, when the guest failed before finishing it: wasmtime-wasi-http
/// ends the body cleanly when the instance goes away mid-body, and a
/// client would take the truncated body for a whole one; with an error,
/// hyper cuts the connection (HTTP/1.1) or resets the stream (HTTP/2).
pub(super) struct ResponseBody {
    /// What the guest wrote while it ran in the request's task.
    pub(super) early: Early,
    /// The rest, as the guest writes it.
    pub(super) inner: GuestBody,
    /// Tells whether the guest's run failed.
    pub(super) record: Arc<Record>,
}

impl ResponseBody {
    fn end(&self) -> Poll<Option<Result<Frame<Bytes>, wasmtime_wasi_http::Error>>> {
        if self.record.take_run_failed() {
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

/// A request body that stops at `--max-body` and records that it did, so
/// the client gets 413 whatever the guest made of the error; and records a
/// client that stopped sending it, for a 408.
pub(super) struct CappedBody<B> {
    inner: B,
    left: u64,
    limit: u64,
    record: Arc<Record>,
}

impl<B> CappedBody<B> {
    /// `inner`, cut at `limit` bytes, recording into `record`.
    pub(super) fn new(inner: B, limit: u64, record: Arc<Record>) -> CappedBody<B> {
        CappedBody {
            inner,
            left: limit,
            limit,
            record,
        }
    }
}

/// Whether `e` is the server's request body giving up on a client that
/// stopped sending ([`BodyError::Stalled`]), told by its type. Any other
/// body (a test's, the benchmark's) has no such error.
fn is_stall<E: 'static>(e: &E) -> bool {
    matches!(
        (e as &dyn Any).downcast_ref::<BodyError>(),
        Some(BodyError::Stalled(_))
    )
}

impl<B> Body for CappedBody<B>
where
    B: Body<Data = Bytes> + Unpin + 'static,
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
                    this.record.record(Cause::BodyTooLarge);
                    return Poll::Ready(Some(Err(wasmtime_wasi_http::Error::HttpRequestBodySize(
                        Some(this.limit),
                    ))));
                }
                this.left -= len;
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                // Recorded from the server's own error, before it becomes
                // what the guest is told: wasi:http gives a guest an
                // `error-code`, never the runtime's error, and the server
                // maps a stall to `connection-read-timeout`. Which code the
                // guest got decides nothing; the record does.
                if is_stall(&e) {
                    this.record.record(Cause::BodyStalled);
                }
                Poll::Ready(Some(Err(e.into())))
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use http_body_util::{BodyExt, Empty, StreamBody};

    use super::*;
    use crate::guests::record::At;

    type Frames<E> = StreamBody<futures::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, E>>>>;

    fn body<E>(frames: Vec<Result<Frame<Bytes>, E>>) -> Frames<E> {
        StreamBody::new(futures::stream::iter(frames))
    }

    fn data(bytes: &'static [u8]) -> Frame<Bytes> {
        Frame::data(Bytes::from_static(bytes))
    }

    /// One poll of a body's next frame.
    type Polled<E> = Poll<Option<Result<Frame<Bytes>, E>>>;

    fn poll<B: Body<Data = Bytes> + Unpin>(body: &mut B) -> Polled<B::Error> {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        Pin::new(body).poll_frame(&mut cx)
    }

    #[test]
    fn a_body_over_the_limit_is_recorded() {
        let record = Arc::new(Record::default());
        let frames = body::<BodyError>(vec![Ok(data(b"ab")), Ok(data(b"cd"))]);
        let mut capped = CappedBody::new(frames, 3, record.clone());
        assert!(matches!(poll(&mut capped), Poll::Ready(Some(Ok(_)))));
        assert_eq!(record.cause(At::RunEnd), None);
        assert!(matches!(
            poll(&mut capped),
            Poll::Ready(Some(Err(wasmtime_wasi_http::Error::HttpRequestBodySize(
                Some(3)
            ))))
        ));
        assert_eq!(record.cause(At::RunEnd), Some(Cause::BodyTooLarge));
    }

    #[test]
    fn a_stall_is_recorded_by_its_type() {
        let record = Arc::new(Record::default());
        let stalled = BodyError::Stalled(Duration::from_secs(1));
        let frames = body(vec![Ok(data(b"ab")), Err(stalled)]);
        let mut capped = CappedBody::new(frames, 100, record.clone());
        assert!(matches!(poll(&mut capped), Poll::Ready(Some(Ok(_)))));
        // The guest is told what the server maps a stall to.
        assert!(matches!(
            poll(&mut capped),
            Poll::Ready(Some(Err(wasmtime_wasi_http::Error::ConnectionReadTimeout)))
        ));
        assert_eq!(record.cause(At::RunEnd), Some(Cause::BodyStalled));
    }

    #[test]
    fn a_read_timeout_that_is_not_the_servers_stall_is_no_cause() {
        let record = Arc::new(Record::default());
        let frames = body(vec![Err(wasmtime_wasi_http::Error::ConnectionReadTimeout)]);
        let mut capped = CappedBody::new(frames, 100, record.clone());
        assert!(matches!(poll(&mut capped), Poll::Ready(Some(Err(_)))));
        assert_eq!(record.cause(At::RunEnd), None);
        assert_eq!(record.cause(At::Head), None);
    }

    fn response_body(record: Arc<Record>) -> ResponseBody {
        ResponseBody {
            early: Early::default(),
            inner: Empty::<Bytes>::new()
                .map_err(|never| match never {})
                .boxed_unsync(),
            record,
        }
    }

    #[test]
    fn a_response_body_ends_cleanly_after_a_run_that_did() {
        let mut body = response_body(Arc::new(Record::default()));
        assert!(matches!(poll(&mut body), Poll::Ready(None)));
    }

    #[test]
    fn a_response_body_ends_in_one_error_after_a_failed_run() {
        let record = Arc::new(Record::default());
        record.note_run_failed();
        let mut body = response_body(record);
        assert!(matches!(
            poll(&mut body),
            Poll::Ready(Some(Err(wasmtime_wasi_http::Error::HttpProtocolError)))
        ));
        assert!(matches!(poll(&mut body), Poll::Ready(None)));
    }
}
