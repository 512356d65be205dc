//! Bodies: origin responses as guests read them, and what becomes of a
//! refused request's body.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use wasmtime_wasi_http::{Error, WasiBody};

/// How long a refused request's body stays open for the guest at most.
const LINGER: Duration = Duration::from_secs(5);
/// How much of a refused request's body is taken, and dropped, at most.
const LINGER_BYTES: usize = 1 << 20;

/// Takes and drops a refused request's body until the guest ends it, for
/// at most [`LINGER`] and [`LINGER_BYTES`].
///
/// Why not drop it at once: that closes the guest's output stream while
/// the guest may still be writing. wasmtime-wasi-http runs the request on
/// a task of its own, and a guest that writes its body while it waits for
/// the response (wstd's `Client::send` does both at once and returns the
/// first error) would see its write fail, `connection reset`, instead of
/// the refusal's own error code, whenever the refusal ran first.
pub(crate) fn linger(mut body: WasiBody) {
    tokio::spawn(async move {
        let mut taken = 0usize;
        let drain = async {
            while let Some(Ok(frame)) = body.frame().await {
                taken += frame.data_ref().map_or(0, Bytes::len);
                if taken > LINGER_BYTES {
                    break;
                }
            }
        };
        // Either way the body is dropped when the task ends.
        let _ = tokio::time::timeout(LINGER, drain).await;
    });
}

/// A response body that fails when the origin goes quiet between frames.
/// The clock runs only while the guest is actually waiting for a frame, so
/// a guest that pauses between reads is not blamed on the origin.
pub(super) struct TimedBody {
    pub(super) inner: Incoming,
    pub(super) between: Duration,
    pub(super) timer: Pin<Box<tokio::time::Sleep>>,
    pub(super) waiting: bool,
}

impl Body for TimedBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                self.waiting = false;
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Error::from(e)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                if !self.waiting {
                    self.waiting = true;
                    let next = tokio::time::Instant::now() + self.between;
                    self.timer.as_mut().reset(next);
                }
                match self.timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(Error::ConnectionReadTimeout))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use futures::SinkExt;
    use futures::channel::mpsc;
    use http_body_util::StreamBody;

    type Tx = mpsc::Sender<Result<Frame<Bytes>, Error>>;

    /// A request body the test writes as a guest would.
    pub(crate) fn guest_body() -> (Tx, WasiBody) {
        let (tx, rx) = mpsc::channel(1);
        (tx, StreamBody::new(rx).boxed_unsync())
    }

    fn chunk(n: usize) -> Result<Frame<Bytes>, Error> {
        Ok(Frame::data(Bytes::from(vec![7u8; n])))
    }

    #[tokio::test]
    async fn a_lingering_body_takes_writes_up_to_its_cap() {
        let (mut tx, body) = guest_body();
        linger(body);
        let mut written = 0;
        while tx.send(chunk(64 * 1024)).await.is_ok() {
            written += 64 * 1024;
            assert!(written <= 2 * LINGER_BYTES, "the cap never closed the body");
        }
        assert!(written >= LINGER_BYTES, "closed after {written} bytes");
    }

    #[tokio::test(start_paused = true)]
    async fn a_lingering_body_is_dropped_after_its_time() {
        let (mut tx, body) = guest_body();
        linger(body);
        tx.send(chunk(10)).await.unwrap();
        tokio::time::sleep(LINGER - Duration::from_millis(100)).await;
        assert!(!tx.is_closed(), "closed before its time");
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(tx.is_closed(), "still open after {LINGER:?}");
    }
}
