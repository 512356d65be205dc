//! A connected byte stream on any transport.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};
use tokio_vsock::{VsockAddr, VsockStream};

use crate::Address;

/// A connected stream over TCP, a Unix socket or vsock.
#[derive(Debug)]
pub enum Stream {
    /// TCP connection.
    Tcp(TcpStream),
    /// Unix domain socket connection.
    Unix(UnixStream),
    /// vsock connection.
    Vsock(VsockStream),
}

/// Connects to `addr`.
///
/// TCP names are resolved by the operating system of the machine this runs
/// on; inside an enclave there is no resolver, so the runtime only ever
/// connects to `unix:` or `vsock://` addresses of its host proxy.
pub async fn connect(addr: &Address) -> io::Result<Stream> {
    match addr {
        Address::Tcp { host, port } => {
            let s = TcpStream::connect((host.as_str(), *port)).await?;
            // Request/response traffic: Nagle only adds latency.
            s.set_nodelay(true)?;
            Ok(Stream::Tcp(s))
        }
        Address::Unix(path) => Ok(Stream::Unix(UnixStream::connect(path).await?)),
        Address::Vsock { cid, port } => Ok(Stream::Vsock(
            VsockStream::connect(VsockAddr::new(*cid, *port)).await?,
        )),
    }
}

macro_rules! each {
    ($self:ident, $s:ident => $e:expr) => {
        match $self.get_mut() {
            Stream::Tcp($s) => $e,
            Stream::Unix($s) => $e,
            Stream::Vsock($s) => $e,
        }
    };
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        each!(self, s => Pin::new(s).poll_read(cx, buf))
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        each!(self, s => Pin::new(s).poll_write(cx, buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each!(self, s => Pin::new(s).poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each!(self, s => Pin::new(s).poll_shutdown(cx))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        each!(self, s => Pin::new(s).poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Tcp(s) => s.is_write_vectored(),
            Stream::Unix(s) => s.is_write_vectored(),
            Stream::Vsock(s) => s.is_write_vectored(),
        }
    }
}
