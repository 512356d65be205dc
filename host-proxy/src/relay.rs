//! The byte copy between two connections, counted, with half-close, and
//! the connection cap both listeners share.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use prometheus_client::metrics::counter::Counter;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use nacre_transport::Stream;

use crate::metrics::{Kind, Metrics};
use crate::splice::{self, Sock};

/// The cap on open connections, and the metrics they update.
#[derive(Clone)]
pub struct Limits {
    /// One pool per kind: the enclave's outbound tunnels can never take
    /// the slots clients need to reach it, nor the other way round.
    inbound: Arc<Semaphore>,
    egress: Arc<Semaphore>,
    pub metrics: Arc<Metrics>,
}

/// One admitted connection: holds a slot and counts as open until dropped.
pub struct Admitted {
    _permit: OwnedSemaphorePermit,
    metrics: Arc<Metrics>,
    kind: Kind,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.metrics.open(self.kind).dec();
    }
}

impl Limits {
    /// At most `max` connections of each kind at once.
    pub fn new(max: usize, metrics: Arc<Metrics>) -> Limits {
        Limits {
            inbound: Arc::new(Semaphore::new(max)),
            egress: Arc::new(Semaphore::new(max)),
            metrics,
        }
    }

    /// A slot for a new connection, or `None` when all are taken (counted
    /// as a refusal).
    pub fn admit(&self, kind: Kind) -> Option<Admitted> {
        let slots = match kind {
            Kind::Inbound => &self.inbound,
            Kind::Egress => &self.egress,
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            self.metrics.refused(kind, "capacity");
            return None;
        };
        self.metrics.connections(kind).inc();
        self.metrics.open(kind).inc();
        Some(Admitted {
            _permit: permit,
            metrics: self.metrics.clone(),
            kind,
        })
    }
}

/// A stream whose reads are added to a counter as they happen, so the
/// metrics are live even for long connections.
struct Counted<'a, S> {
    inner: &'a mut S,
    read: Counter,
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<'_, S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut *self.inner).poll_read(cx, buf);
        self.read.inc_by((buf.filled().len() - before) as u64);
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<'_, S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.inner).poll_shutdown(cx)
    }
}

/// Per direction, per connection, when bytes go through user space
/// (vsock, or no pipe to splice through). tokio's default (8 KiB) costs a
/// pair of syscalls per 8 KiB.
const BUFFER: usize = 64 * 1024;

/// Copies bytes both ways until both directions ended. When one side
/// finishes sending, the other side's write half is shut down and the
/// opposite direction keeps flowing (TLS close_notify, HTTP/1.0 bodies).
///
/// `enclave` is the side toward the enclave; bytes it sends count as
/// `from_enclave`, bytes the other side sends as `to_enclave`. TCP and
/// unix sockets are spliced in the kernel; anything else is copied.
pub async fn copy(mut outside: Stream, mut enclave: Stream, metrics: &Metrics, kind: Kind) {
    let to_enclave = metrics.bytes(kind, "to_enclave");
    let from_enclave = metrics.bytes(kind, "from_enclave");
    if let (Some(a), Some(b)) = (sock(&outside), sock(&enclave))
        && let (Ok(p1), Ok(p2)) = (splice::pipe(), splice::pipe())
    {
        // The first error (a reset) ends both directions, as a copy would.
        let _ = tokio::try_join!(
            splice::one_way(a, b, p1, to_enclave),
            splice::one_way(b, a, p2, from_enclave),
        );
        return;
    }
    let mut a = Counted {
        inner: &mut outside,
        read: to_enclave,
    };
    let mut b = Counted {
        inner: &mut enclave,
        read: from_enclave,
    };
    // An error here is one side resetting: the connection is over either
    // way, and there is nothing to report beyond the counts.
    let _ = tokio::io::copy_bidirectional_with_sizes(&mut a, &mut b, BUFFER, BUFFER).await;
}

fn sock(s: &Stream) -> Option<Sock<'_>> {
    match s {
        Stream::Tcp(t) => Some(Sock::Tcp(t)),
        Stream::Unix(u) => Some(Sock::Unix(u)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::UnixStream;

    /// One relayed connection over real sockets: (client end, server end).
    async fn relayed(metrics: Arc<Metrics>) -> (UnixStream, UnixStream) {
        let (client, outside) = UnixStream::pair().unwrap();
        let (enclave, server) = UnixStream::pair().unwrap();
        tokio::spawn(async move {
            copy(
                Stream::Unix(outside),
                Stream::Unix(enclave),
                &metrics,
                Kind::Inbound,
            )
            .await
        });
        (client, server)
    }

    #[tokio::test]
    async fn copies_both_ways_with_half_close_and_counts() {
        let metrics = Arc::new(Metrics::default());
        let (mut client, mut server) = relayed(metrics.clone()).await;
        let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let sent = big.clone();
        let writer = tokio::spawn(async move {
            client.write_all(&sent).await.unwrap();
            // The client is done sending; the answer must still arrive.
            client.shutdown().await.unwrap();
            let mut back = Vec::new();
            client.read_to_end(&mut back).await.unwrap();
            back
        });
        let mut got = Vec::new();
        server.read_to_end(&mut got).await.unwrap();
        assert!(got == big, "payload changed in transit");
        server.write_all(b"answer!!").await.unwrap();
        server.shutdown().await.unwrap();
        assert_eq!(writer.await.unwrap(), b"answer!!");
        assert_eq!(
            metrics.bytes(Kind::Inbound, "to_enclave").get(),
            big.len() as u64
        );
        assert_eq!(metrics.bytes(Kind::Inbound, "from_enclave").get(), 8);
    }

    #[tokio::test]
    async fn a_reset_ends_both_directions() {
        let metrics = Arc::new(Metrics::default());
        let (client, mut server) = relayed(metrics).await;
        drop(client);
        let mut buf = [0u8; 8];
        // The server sees the end instead of waiting forever.
        let n = tokio::time::timeout(std::time::Duration::from_secs(5), server.read(&mut buf))
            .await
            .expect("the relay passed the close on");
        assert!(matches!(n, Ok(0) | Err(_)));
    }

    #[test]
    fn the_cap_refuses_and_frees() {
        let metrics = Arc::new(Metrics::default());
        let limits = Limits::new(2, metrics.clone());
        let a = limits.admit(Kind::Inbound).unwrap();
        let _b = limits.admit(Kind::Inbound).unwrap();
        assert!(limits.admit(Kind::Inbound).is_none());
        // Egress has its own pool: a full inbound side does not touch it,
        // and a full egress side would not touch inbound.
        let _e1 = limits.admit(Kind::Egress).unwrap();
        let _e2 = limits.admit(Kind::Egress).unwrap();
        assert!(limits.admit(Kind::Egress).is_none());
        assert_eq!(metrics.open(Kind::Inbound).get(), 2);
        drop(a);
        assert_eq!(metrics.open(Kind::Inbound).get(), 1);
        assert!(limits.admit(Kind::Inbound).is_some());
        assert!(metrics.render().contains("reason=\"capacity\""));
    }
}
