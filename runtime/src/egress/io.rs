//! The origin's TLS stream as hyper uses it.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Takes the end of an origin's connection as curl and browsers do.
///
/// - An origin that closes its TCP connection without a TLS close_notify
///   (Python's `ssl`, many embedded servers) ends the stream there instead
///   of failing the read. The body's framing still tells a body cut short
///   from a whole one: content-length, chunked and HTTP/2 bodies that end
///   early are errors. Only a close-delimited HTTP/1.0 body, whose end is
///   the connection's end, is then taken as whole; docs/egress.md says what
///   that leaves to the host.
/// - Closing a connection the origin (or the host proxy) already closed is
///   no failure of a request whose answer arrived.
pub(super) struct Lenient<S>(pub(super) S);

impl<S: AsyncRead + Unpin> AsyncRead for Lenient<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.0).poll_read(cx, buf) {
            Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => Poll::Ready(Ok(())),
            other => other,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Lenient<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.0).poll_shutdown(cx) {
            Poll::Ready(Err(e))
                if matches!(
                    e.kind(),
                    io::ErrorKind::BrokenPipe
                        | io::ErrorKind::ConnectionReset
                        | io::ErrorKind::NotConnected
                ) =>
            {
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A stream whose reads and shutdown fail the way a TLS stream's do
    /// when the peer is gone without a close_notify.
    struct Gone(io::ErrorKind);

    impl AsyncRead for Gone {
        fn poll_read(
            self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            _buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Poll::Ready(Err(self.0.into()))
        }
    }

    impl AsyncWrite for Gone {
        fn poll_write(
            self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            _buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            Poll::Ready(Err(self.0.into()))
        }
        fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()))
        }
    }

    #[tokio::test]
    async fn a_missing_close_notify_is_an_end_and_other_errors_stay_errors() {
        let mut buf = [0u8; 8];
        let mut eof = Lenient(Gone(io::ErrorKind::UnexpectedEof));
        assert_eq!(eof.read(&mut buf).await.unwrap(), 0);
        assert!(eof.shutdown().await.is_ok());
        let mut reset = Lenient(Gone(io::ErrorKind::ConnectionReset));
        assert!(reset.read(&mut buf).await.is_err());
        assert!(reset.write(b"x").await.is_err());
    }
}
