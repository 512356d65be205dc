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

/// A connection taken off the async runtime that accepted it, so that
/// another runtime's thread can serve it ([`Detached::attach`]): its socket
/// is registered with no reactor until then.
#[derive(Debug)]
pub struct Detached(Socket);

#[derive(Debug)]
enum Socket {
    Tcp(std::net::TcpStream),
    Unix(std::os::unix::net::UnixStream),
    Vsock(std::os::fd::OwnedFd),
}

impl Stream {
    /// Takes the connection off this runtime's reactor. A socket stays
    /// bound to the reactor that registered it, so a connection handed to
    /// another runtime without this would still wake the first one's
    /// thread for every read and write.
    pub fn detach(self) -> io::Result<Detached> {
        Ok(Detached(match self {
            Stream::Tcp(s) => Socket::Tcp(s.into_std()?),
            Stream::Unix(s) => Socket::Unix(s.into_std()?),
            Stream::Vsock(s) => Socket::Vsock(std::os::fd::OwnedFd::from(s)),
        }))
    }
}

impl Detached {
    /// Registers the connection with the reactor of the runtime this is
    /// called on.
    ///
    /// # Panics
    ///
    /// Outside a Tokio runtime (as `TcpStream::from_std` does).
    pub fn attach(self) -> io::Result<Stream> {
        // `into_std` leaves the sockets non-blocking, as `from_std` needs.
        Ok(match self.0 {
            Socket::Tcp(s) => Stream::Tcp(TcpStream::from_std(s)?),
            Socket::Unix(s) => Stream::Unix(UnixStream::from_std(s)?),
            Socket::Vsock(fd) => Stream::Vsock(VsockStream::new(vsock::VsockStream::from(fd))?),
        })
    }
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
        Address::Unix(path) => Ok(Stream::Unix(unix_tuned(UnixStream::connect(path).await?))),
        Address::Vsock { cid, port } => Ok(Stream::Vsock(
            VsockStream::connect(VsockAddr::new(*cid, *port)).await?,
        )),
    }
}

/// What a unix stream socket may have in flight is bounded by the
/// sender's send buffer alone (about 208 KiB by default). Bulk transfers
/// from the host proxy to a unix-socket runtime ran at 1.8 GiB/s with
/// that and 3.1 GiB/s with 1 MiB on the benchmark machine: fewer
/// wake-ups per byte. It is a limit, not an allocation; the kernel caps it
/// at `net.core.wmem_max`.
pub(crate) const UNIX_SEND_BUFFER: usize = 1024 * 1024;

/// `s` with [`UNIX_SEND_BUFFER`], for both ends of a unix connection.
pub(crate) fn unix_tuned(s: UnixStream) -> UnixStream {
    // Best effort: the default works, only more slowly.
    let _ = socket2::SockRef::from(&s).set_send_buffer_size(UNIX_SEND_BUFFER);
    s
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
