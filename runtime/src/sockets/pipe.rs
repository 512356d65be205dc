//! One virtual TCP connection between a guest and the runtime: two bounded
//! channels of byte chunks. The guest holds a `wasi:io` input and output
//! stream; the runtime holds the other ends ([`Peer`]) and moves bytes
//! between them and a real stream (a client's TLS session, a `CONNECT`
//! tunnel) with [`Peer::pump`].
//!
//! An end that stops without saying so (a client's TCP cut without TLS's
//! `close_notify`, a tunnel the host cut) reaches the guest as an error,
//! never as a clean end of a shorter stream; a guest's instance that is torn
//! down ends its connections the same way, without `close_notify`.

use std::sync::{Arc, Mutex, Weak};

use bytes::Bytes;
use futures::FutureExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use wasmtime_wasi::p2::{InputStream, OutputStream, Pollable, StreamError, StreamResult};

/// Chunks in flight per direction: with [`CHUNK`], 64 KiB, about what a
/// kernel's socket buffer holds.
const DEPTH: usize = 16;
/// The most a guest may write at once, and the most read from a peer at once.
pub(crate) const CHUNK: usize = 4096;

/// What crosses one direction: bytes, or the reason it stopped abruptly.
type Chunk = Result<Bytes, String>;

/// The guest's sending side, shared by its output stream (which owns it)
/// and its socket (which may shut it down).
pub(crate) type SendSide = Weak<Mutex<Option<mpsc::Sender<Chunk>>>>;

/// The runtime's ends of one connection.
pub(crate) struct Peer {
    to_guest: mpsc::Sender<Chunk>,
    from_guest: mpsc::Receiver<Chunk>,
}

/// The guest's ends, before they become `wasi:io` resources.
pub(crate) struct GuestEnds {
    pub(crate) input: ChunkInput,
    pub(crate) output: ChunkOutput,
    /// Lets the socket shut its sending side down (`shutdown`) without
    /// keeping the channel open after the guest drops the output stream.
    pub(crate) send_side: SendSide,
}

/// A connection: the runtime's ends and the guest's.
pub(crate) fn pair() -> (Peer, GuestEnds) {
    let (to_guest, from_runtime) = mpsc::channel(DEPTH);
    let (to_runtime, from_guest) = mpsc::channel(DEPTH);
    let sender = Arc::new(Mutex::new(Some(to_runtime)));
    let ends = GuestEnds {
        input: ChunkInput {
            rx: from_runtime,
            buf: Bytes::new(),
            end: None,
        },
        send_side: Arc::downgrade(&sender),
        output: ChunkOutput { tx: sender },
    };
    (
        Peer {
            to_guest,
            from_guest,
        },
        ends,
    )
}

/// How a pumped connection ended, for the log and the counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Ended {
    /// Both sides said they were done.
    Clean,
    /// The guest's instance went away (a redeploy, a trap).
    InstanceGone,
    /// The far side stopped without saying so, or failed.
    Cut(String),
    /// Nothing moved for the idle limit.
    Idle,
}

impl Peer {
    /// Moves bytes between `stream` and the guest until both directions
    /// end, the instance is gone (`gone` resolves), or nothing moves for
    /// `idle`.
    /// The stream is shut down (TLS: `close_notify`) only when the guest
    /// closed its side; otherwise it is dropped, so a TLS client sees an
    /// abrupt end.
    pub(crate) async fn pump<S, G>(self, stream: S, gone: G, idle: std::time::Duration) -> Ended
    where
        S: AsyncRead + AsyncWrite + Send + Unpin,
        G: Future<Output = ()> + Send,
    {
        let gone = std::pin::pin!(gone);
        let mut gone = gone.fuse();
        let Peer {
            to_guest,
            mut from_guest,
        } = self;
        let (mut rd, mut wr) = tokio::io::split(stream);
        let mut buf = vec![0u8; CHUNK];
        let mut to_guest = Some(to_guest);
        let mut guest_done = false;
        loop {
            if to_guest.is_none() && guest_done {
                return Ended::Clean;
            }
            tokio::select! {
                () = &mut gone => return Ended::InstanceGone,
                _ = tokio::time::sleep(idle) => return Ended::Idle,
                read = rd.read(&mut buf), if to_guest.is_some() => {
                    let Some(tx) = &to_guest else { continue };
                    match read {
                        Ok(0) => to_guest = None,
                        Ok(n) => match hand(tx, &buf[..n], idle).await {
                            Handed::Taken => {}
                            // The guest dropped its input: what it does not
                            // read is discarded, as a socket would.
                            Handed::GuestGone => to_guest = None,
                            Handed::Idle => return Ended::Idle,
                        },
                        Err(e) => {
                            let why = e.to_string();
                            let _ = tx.send(Err(why.clone())).await;
                            return Ended::Cut(why);
                        }
                    }
                }
                chunk = from_guest.recv(), if !guest_done => match chunk {
                    Some(Ok(bytes)) => {
                        // Flushed at once: a TLS stream holds written
                        // bytes until flushed, and the guest is waiting
                        // for its peer's answer to them.
                        let written = async {
                            wr.write_all(&bytes).await?;
                            wr.flush().await
                        };
                        if let Err(e) = written.await {
                            if let Some(tx) = &to_guest {
                                let _ = tx.send(Err(e.to_string())).await;
                            }
                            return Ended::Cut(e.to_string());
                        }
                    }
                    Some(Err(why)) => return Ended::Cut(why),
                    None => {
                        // The guest closed its side, or its instance is
                        // gone: only the first may end the stream cleanly.
                        if (&mut gone).now_or_never().is_some() {
                            return Ended::InstanceGone;
                        }
                        guest_done = true;
                        if let Err(e) = wr.shutdown().await {
                            return Ended::Cut(e.to_string());
                        }
                    }
                },
            }
        }
    }
}

/// How a chunk from the client fared on its way to the guest.
enum Handed {
    Taken,
    GuestGone,
    Idle,
}

/// Hands `bytes` to the guest. A guest that stops reading holds the client
/// back (its channel full) for at most `idle`, as a silent client would
/// be; with room in the channel, the usual case, no timer is armed.
async fn hand(tx: &mpsc::Sender<Chunk>, bytes: &[u8], idle: std::time::Duration) -> Handed {
    match tx.try_send(Ok(Bytes::copy_from_slice(bytes))) {
        Ok(()) => Handed::Taken,
        Err(TrySendError::Closed(_)) => Handed::GuestGone,
        Err(TrySendError::Full(chunk)) => match tokio::time::timeout(idle, tx.send(chunk)).await {
            Ok(Ok(())) => Handed::Taken,
            Ok(Err(_)) => Handed::GuestGone,
            Err(_) => Handed::Idle,
        },
    }
}

/// The guest's input stream: chunks from the runtime.
pub(crate) struct ChunkInput {
    rx: mpsc::Receiver<Chunk>,
    buf: Bytes,
    /// Set once the runtime's side ended: None while open.
    end: Option<Result<(), String>>,
}

impl ChunkInput {
    fn ended(&self) -> StreamResult<Bytes> {
        match &self.end {
            Some(Err(why)) => Err(StreamError::LastOperationFailed(wasmtime::format_err!(
                "the connection was cut: {why}"
            ))),
            _ => Err(StreamError::Closed),
        }
    }
}

#[wasmtime_wasi::async_trait]
impl InputStream for ChunkInput {
    fn read(&mut self, size: usize) -> StreamResult<Bytes> {
        if self.buf.is_empty() && self.end.is_none() {
            match self.rx.try_recv() {
                Ok(Ok(bytes)) => self.buf = bytes,
                Ok(Err(why)) => self.end = Some(Err(why)),
                Err(mpsc::error::TryRecvError::Empty) => return Ok(Bytes::new()),
                Err(mpsc::error::TryRecvError::Disconnected) => self.end = Some(Ok(())),
            }
        }
        if self.buf.is_empty() {
            return match self.end {
                Some(_) => self.ended(),
                None => Ok(Bytes::new()),
            };
        }
        let n = size.min(self.buf.len());
        Ok(self.buf.split_to(n))
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for ChunkInput {
    async fn ready(&mut self) {
        if !self.buf.is_empty() || self.end.is_some() {
            return;
        }
        match self.rx.recv().await {
            Some(Ok(bytes)) => self.buf = bytes,
            Some(Err(why)) => self.end = Some(Err(why)),
            None => self.end = Some(Ok(())),
        }
    }
}

/// The guest's output stream: chunks to the runtime.
pub(crate) struct ChunkOutput {
    tx: Arc<Mutex<Option<mpsc::Sender<Chunk>>>>,
}

impl ChunkOutput {
    fn sender(&self) -> Option<mpsc::Sender<Chunk>> {
        self.tx.lock().ok().and_then(|s| s.clone())
    }
}

/// Closes the sending side of a connection (the socket's `shutdown`).
pub(crate) fn shut(send_side: &SendSide) {
    if let Some(side) = send_side.upgrade()
        && let Ok(mut s) = side.lock()
    {
        s.take();
    }
}

#[wasmtime_wasi::async_trait]
impl OutputStream for ChunkOutput {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        let tx = self.sender().ok_or(StreamError::Closed)?;
        if bytes.len() > CHUNK {
            return Err(StreamError::trap("write larger than check-write allowed"));
        }
        match tx.try_send(Ok(bytes)) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => {
                Err(StreamError::trap("write without check-write permission"))
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(StreamError::LastOperationFailed(
                wasmtime::format_err!("the connection was closed by the other side"),
            )),
        }
    }

    fn flush(&mut self) -> StreamResult<()> {
        // Nothing is buffered here: every write is already on its way.
        self.sender().map(drop).ok_or(StreamError::Closed)
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        let tx = self.sender().ok_or(StreamError::Closed)?;
        if tx.is_closed() {
            return Err(StreamError::LastOperationFailed(wasmtime::format_err!(
                "the connection was closed by the other side"
            )));
        }
        Ok(if tx.capacity() > 0 { CHUNK } else { 0 })
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for ChunkOutput {
    async fn ready(&mut self) {
        // Guests' executors (wstd's) check every pollable they wait on
        // after each task runs, so this is on the hot path: with room in
        // the channel, answer without touching its semaphore.
        let tx = match self.tx.lock() {
            Ok(s) => match &*s {
                Some(tx) if tx.capacity() == 0 => tx.clone(),
                _ => return,
            },
            Err(_) => return,
        };
        // Waits for room; the reservation is given back at once.
        let _ = tx.reserve().await;
    }
}
