//! The byte copy between two connections, counted, with half-close, and
//! the connection cap and buffer memory both listeners share.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use prometheus_client::metrics::counter::Counter;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use nacre_transport::Stream;

use crate::metrics::{Kind, Metrics};

/// The cap on open connections, and the metrics they update.
#[derive(Clone)]
pub struct Limits {
    /// One pool per kind: the enclave's outbound tunnels can never take
    /// the slots clients need to reach it, nor the other way round.
    inbound: Arc<Semaphore>,
    egress: Arc<Semaphore>,
    /// Memory for grown copy buffers, shared by both kinds.
    budget: Budget,
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
            budget: Budget::new(GROWTH_BUDGET),
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

/// Every direction of every connection starts with a buffer this size:
/// enough for a TLS record or an HTTP request, and small, so thousands of
/// idle connections cost little.
const FIRST: usize = 16 * 1024;
/// A direction whose reads keep filling its buffer doubles it up to this.
/// On the 2-core benchmark machine, bulk throughput through the proxy grew
/// with the buffer up to 1 MiB: fewer syscalls and wake-ups per byte
/// (BENCHMARKS.md, scenario g).
const LARGEST: usize = 1024 * 1024;
/// Bytes of grown buffers beyond [`FIRST`], all connections together:
/// 128 directions at [`LARGEST`]. Past it, buffers keep their size, so a
/// flood of bulk connections cannot grow the proxy's memory without bound.
const GROWTH_BUDGET: usize = 128 * LARGEST;

/// What is left of [`GROWTH_BUDGET`], shared by all connections.
#[derive(Clone)]
struct Budget(Arc<AtomicUsize>);

impl Budget {
    fn new(bytes: usize) -> Budget {
        Budget(Arc::new(AtomicUsize::new(bytes)))
    }

    fn take(&self, n: usize) -> bool {
        self.0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                left.checked_sub(n)
            })
            .is_ok()
    }

    fn give(&self, n: usize) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
}

/// One direction's buffer; what it grew beyond [`FIRST`] came from the
/// budget and goes back on drop.
struct Buffer {
    bytes: Vec<u8>,
    budget: Budget,
}

impl Buffer {
    fn new(budget: Budget) -> Buffer {
        Buffer {
            bytes: vec![0; FIRST],
            budget,
        }
    }

    /// A read of `n` bytes filled the buffer: more is probably waiting, so
    /// double it if the budget allows.
    fn after_read(&mut self, n: usize) {
        let len = self.bytes.len();
        if n == len && len < LARGEST && self.budget.take(len) {
            self.bytes.resize(2 * len, 0);
        }
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        self.budget.give(self.bytes.len() - FIRST);
    }
}

/// Moves bytes from `from` to `to` until `from` ends, then shuts down
/// `to`'s write side (half-close), counting them into `counter` as they
/// pass, so the metrics are live even for long connections.
async fn one_way(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    mut buf: Buffer,
    counter: Counter,
) -> io::Result<()> {
    loop {
        let n = from.read(&mut buf.bytes).await?;
        if n == 0 {
            // The peer may already be gone; either way this direction is done.
            let _ = to.shutdown().await;
            return Ok(());
        }
        counter.inc_by(n as u64);
        to.write_all(&buf.bytes[..n]).await?;
        buf.after_read(n);
    }
}

/// Copies bytes both ways until both directions ended. When one side
/// finishes sending, the other side's write half is shut down and the
/// opposite direction keeps flowing (TLS close_notify, HTTP/1.0 bodies).
///
/// `enclave` is the side toward the enclave; bytes it sends count as
/// `from_enclave`, bytes the other side sends as `to_enclave`.
///
/// One path for every transport, vsock included. `splice(2)` through a
/// pipe was tried for TCP and unix sockets: it spent about a quarter less
/// proxy CPU per GiB but moved fewer GiB/s than this copy with grown
/// buffers, on shared and on dedicated cores (BENCHMARKS.md, scenario g).
pub async fn copy(outside: Stream, enclave: Stream, limits: &Limits, kind: Kind) {
    let to_enclave = limits.metrics.bytes(kind, "to_enclave");
    let from_enclave = limits.metrics.bytes(kind, "from_enclave");
    let (outside_r, outside_w) = tokio::io::split(outside);
    let (enclave_r, enclave_w) = tokio::io::split(enclave);
    // The first error (a reset) ends both directions; there is nothing to
    // report beyond the counts.
    let _ = tokio::try_join!(
        one_way(
            outside_r,
            enclave_w,
            Buffer::new(limits.budget.clone()),
            to_enclave
        ),
        one_way(
            enclave_r,
            outside_w,
            Buffer::new(limits.budget.clone()),
            from_enclave
        ),
    );
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
        let limits = Limits::new(1, metrics);
        tokio::spawn(async move {
            copy(
                Stream::Unix(outside),
                Stream::Unix(enclave),
                &limits,
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
    fn buffers_grow_while_reads_fill_them_within_the_budget() {
        let budget = Budget::new(2 * FIRST);
        let mut a = Buffer::new(budget.clone());
        // A read that did not fill the buffer: nothing more is waiting.
        a.after_read(FIRST - 1);
        assert_eq!(a.bytes.len(), FIRST);
        a.after_read(FIRST);
        assert_eq!(a.bytes.len(), 2 * FIRST);
        // Doubling again needs 2 * FIRST more; only FIRST is left.
        a.after_read(2 * FIRST);
        assert_eq!(a.bytes.len(), 2 * FIRST);
        let mut b = Buffer::new(budget.clone());
        b.after_read(FIRST);
        assert_eq!(b.bytes.len(), 2 * FIRST);
        b.after_read(2 * FIRST);
        assert_eq!(b.bytes.len(), 2 * FIRST, "the budget is spent");
        drop(a);
        drop(b);
        assert_eq!(
            budget.0.load(Ordering::Relaxed),
            2 * FIRST,
            "all given back"
        );
    }

    #[test]
    fn buffers_stop_at_the_largest_size() {
        let budget = Budget::new(GROWTH_BUDGET);
        let mut a = Buffer::new(budget.clone());
        for _ in 0..20 {
            let n = a.bytes.len();
            a.after_read(n);
        }
        assert_eq!(a.bytes.len(), LARGEST);
        assert_eq!(
            budget.0.load(Ordering::Relaxed),
            GROWTH_BUDGET - (LARGEST - FIRST)
        );
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
