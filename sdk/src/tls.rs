//! TLS in the guest, over `wasi:sockets` streams (feature `tls`).
//!
//! A TCP guest deployed with `tls=guest` receives its clients' bytes as
//! they arrive, and any guest's outbound TCP crosses the host in the clear:
//! TLS inside the guest is what keeps the host out of both. This module
//! drives a [`rustls`] connection over a [`wstd::net::TcpStream`]; the
//! guest chooses the crypto provider (`rustls`' `ring` feature builds for
//! wasm32-wasip2 with clang) and the configuration.
//!
//! A client's end without `close_notify` is an error from [`Stream::read`],
//! never a clean end: the host cutting a stream cannot pass for a shorter
//! one.
//!
//! ```rust,ignore
//! use nacre_sdk::tls;
//!
//! let tcp = wstd::net::TcpStream::connect("api.example.com:443").await?;
//! let name = "api.example.com".try_into()?;
//! let conn = rustls::ClientConnection::new(client_config, name)?;
//! let mut tls = tls::Stream::handshake(tcp, conn).await?;
//! tls.write_all(b"GET / HTTP/1.1\r\nHost: api.example.com\r\n\r\n").await?;
//! ```

use std::io::{self, Read, Write};
use std::ops::{Deref, DerefMut};

use rustls::{ConnectionCommon, SideData};
use wstd::io::{AsyncRead, AsyncWrite};
use wstd::net::TcpStream;

/// Bytes read from the socket at a time.
const CHUNK: usize = 16 * 1024;

/// A TLS connection over a TCP stream: [`rustls::ClientConnection`] or
/// [`rustls::ServerConnection`] as `C`.
pub struct Stream<C> {
    tcp: TcpStream,
    conn: C,
    /// Ciphertext read from the socket, and records to send: kept, so a
    /// read or write allocates nothing.
    inbox: Vec<u8>,
    outbox: Vec<u8>,
}

impl<C, S> Stream<C>
where
    C: DerefMut + Deref<Target = ConnectionCommon<S>>,
    S: SideData,
{
    /// Runs the handshake of `conn` over `tcp`; fails with the peer's or
    /// rustls' reason (an untrusted certificate, a closed stream).
    pub async fn handshake(tcp: TcpStream, conn: C) -> io::Result<Stream<C>> {
        let mut stream = Stream {
            tcp,
            conn,
            inbox: vec![0u8; CHUNK],
            outbox: Vec::new(),
        };
        while stream.conn.is_handshaking() {
            stream.flush_tls().await?;
            if stream.conn.is_handshaking() && stream.fill().await? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the peer closed the stream during the TLS handshake",
                ));
            }
        }
        stream.flush_tls().await?;
        Ok(stream)
    }

    /// The rustls connection: the peer's certificates, the protocol.
    pub fn connection(&self) -> &C {
        &self.conn
    }

    /// Reads plaintext into `buf`: `Ok(0)` only after the peer's
    /// `close_notify`; an end without it is an `UnexpectedEof` error.
    pub async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.conn.reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            // Alerts and key updates may need an answer before more data.
            self.flush_tls().await?;
            if self.fill().await? == 0 {
                // rustls now knows the socket ended: the next read says
                // whether that was after close_notify.
                return match self.conn.reader().read(buf) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the peer closed the stream without close_notify",
                    )),
                    other => other,
                };
            }
        }
    }

    /// Encrypts and sends all of `data`, in pieces rustls' buffers take
    /// (64 KiB by default): each is sent before the next is taken.
    pub async fn write_all(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let taken = self.conn.writer().write(data)?;
            data = &data[taken..];
            self.flush_tls().await?;
        }
        Ok(())
    }

    /// Sends `close_notify`, so the peer sees a clean end.
    pub async fn close(mut self) -> io::Result<()> {
        self.conn.send_close_notify();
        self.flush_tls().await
    }

    /// Sends every TLS record rustls has ready.
    async fn flush_tls(&mut self) -> io::Result<()> {
        self.outbox.clear();
        while self.conn.wants_write() {
            self.conn.write_tls(&mut self.outbox)?;
        }
        if !self.outbox.is_empty() {
            (&self.tcp).write_all(&self.outbox).await?;
            (&self.tcp).flush().await?;
        }
        Ok(())
    }

    /// Reads once from the socket into rustls: the bytes read (0 at the
    /// stream's end). A record rustls refuses is an `InvalidData` error,
    /// after the alert saying why has been sent.
    async fn fill(&mut self) -> io::Result<usize> {
        let n = (&self.tcp).read(&mut self.inbox).await?;
        let mut got = &self.inbox[..n];
        loop {
            // An empty read tells rustls the stream ended.
            let took = self.conn.read_tls(&mut got)?;
            if took == 0 && !got.is_empty() {
                return Err(io::Error::other("TLS records larger than rustls buffers"));
            }
            if let Err(e) = self.conn.process_new_packets() {
                let _ = self.flush_tls().await;
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
            if got.is_empty() {
                break;
            }
        }
        Ok(n)
    }
}
