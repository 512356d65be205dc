//! Logs out of the enclave: the runtime's log records and its guests'
//! output lines go to the host proxy over `--control`, framed as in
//! [`nacre_control`].
//!
//! [`ControlLayer`] is a tracing layer: every record that passes the log
//! filter is bounded in bytes as it is formatted ([`nacre_control::bounded`]:
//! message 8 KiB, each field 2 KiB, 16 fields; a huge value is never made
//! in full), encoded, and queued without waiting. The queue is bounded in
//! records and in bytes; when the host is slow or gone, records are
//! dropped and counted, so logging never holds back a request nor holds
//! more than [`QUEUE_BYTES`]. [`BoundedFields`] holds the runtime's own
//! text log to the same bounds. [`ControlLink`] connects, says Hello, sends
//! the queue, and reconnects by itself when the link fails; the count of
//! dropped records goes out first once the link is back. A record that
//! still does not fit a frame is dropped and counted too: only the
//! transport failing ends the link. What the host sends is read and
//! checked: a frame that is malformed, too large, cut short or of a
//! protocol version this runtime does not speak is logged and the link is
//! made again.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use nacre_control::bounded;
use nacre_control::{Body, Dropped, Frame, FrameError, GuestOutput, Level, LogRecord, Stream};
use nacre_transport::Address;
use nacre_transport::tunnel::Target;
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, watch};
use tracing_subscriber::layer::Context;

mod fields;

pub use fields::BoundedFields;
use fields::Fields;

/// Records queued for the host at most; past this they are dropped.
const QUEUE: usize = 1024;
/// Bytes of encoded records queued for the host at most; past this they
/// are dropped. Records are up to [`bounded::MAX_RECORD`] bytes, so the
/// count alone would allow about 45 MiB.
pub const QUEUE_BYTES: usize = 4 << 20;
/// The first wait before connecting again, doubled after each failure.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// The longest wait between two attempts to connect.
const MOST_BACKOFF: Duration = Duration::from_secs(5);

/// The tracing layer feeding the link.
pub struct ControlLayer {
    queue: mpsc::Sender<Vec<u8>>,
    room: Arc<Room>,
    dropped: Arc<AtomicU64>,
    total: Arc<AtomicU64>,
}

/// The link to the host proxy's `--control-listen`.
pub struct ControlLink {
    addr: Address,
    /// Encoded frames, length first.
    queue: mpsc::Receiver<Vec<u8>>,
    room: Arc<Room>,
    /// Dropped since the last report to the host.
    dropped: Arc<AtomicU64>,
    /// Dropped since the start, for metrics.
    total: Arc<AtomicU64>,
    /// Where the host proxy's Hello says peers reach this enclave, for
    /// sync (set with [`ControlLink::sync_advertise_to`]).
    sync_advertise: Option<watch::Sender<Option<Target>>>,
}

/// The queue's byte budget: taken when a record is queued, given back
/// once it is sent (or the send failed).
#[derive(Debug)]
struct Room(AtomicUsize);

impl Room {
    /// Takes `n` bytes if that many are left.
    fn take(&self, n: usize) -> bool {
        self.0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |left| {
                left.checked_sub(n)
            })
            .is_ok()
    }

    fn give(&self, n: usize) {
        self.0.fetch_add(n, Ordering::AcqRel);
    }
}

/// A layer and its link to `addr`.
pub fn channel(addr: Address) -> (ControlLayer, ControlLink) {
    let (tx, rx) = mpsc::channel(QUEUE);
    let room = Arc::new(Room(AtomicUsize::new(QUEUE_BYTES)));
    let dropped = Arc::new(AtomicU64::new(0));
    let total = Arc::new(AtomicU64::new(0));
    (
        ControlLayer {
            queue: tx,
            room: room.clone(),
            dropped: dropped.clone(),
            total: total.clone(),
        },
        ControlLink {
            addr,
            queue: rx,
            room,
            dropped,
            total,
            sync_advertise: None,
        },
    )
}

/// The frame for one event.
fn frame(event: &tracing::Event<'_>) -> Frame {
    let mut fields = Fields::new(false);
    event.record(&mut fields);
    let (message, others) = fields.finish();
    let mut others: HashMap<String, String> = others.into_iter().collect();
    let meta = event.metadata();
    // Guest output (guests::log) travels as the guest's own line.
    let body = match (meta.target(), others.remove("guest")) {
        ("guest", Some(guest)) => Body::GuestOutput(GuestOutput {
            unix_ms: nacre_control::now_ms(),
            guest,
            stream: match others.get("stream").map(String::as_str) {
                Some("stderr") => Stream::Stderr,
                _ => Stream::Stdout,
            } as i32,
            line: message,
        }),
        (target, guest) => {
            if let Some(guest) = guest {
                others.insert("guest".into(), guest);
            }
            Body::Log(LogRecord {
                unix_ms: nacre_control::now_ms(),
                level: level(meta.level()) as i32,
                target: bounded::cut(target, bounded::NAME).into_owned(),
                message,
                fields: others,
            })
        }
    };
    Frame { body: Some(body) }
}

impl ControlLayer {
    fn drop_one(&self) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
        self.total.fetch_add(1, Ordering::Relaxed);
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for ControlLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        // Encoded here, so a record that cannot be sent is known now and
        // the queue's bytes are the bytes that will go.
        let Ok(bytes) = nacre_control::encode_frame(&frame(event)) else {
            return self.drop_one();
        };
        let len = bytes.len();
        if !self.room.take(len) {
            return self.drop_one();
        }
        if self.queue.try_send(bytes).is_err() {
            self.room.give(len);
            self.drop_one();
        }
    }
}

fn level(l: &tracing::Level) -> Level {
    match *l {
        tracing::Level::ERROR => Level::Error,
        tracing::Level::WARN => Level::Warn,
        tracing::Level::INFO => Level::Info,
        tracing::Level::DEBUG => Level::Debug,
        tracing::Level::TRACE => Level::Trace,
    }
}

impl ControlLink {
    /// Sends what the host proxy's Hello says of `--sync-advertise` to
    /// `to`, once checked: a host and a port, nothing else.
    pub fn sync_advertise_to(&mut self, to: watch::Sender<Option<Target>>) {
        self.sync_advertise = Some(to);
    }

    fn took_hello(&self, hello: &nacre_control::Hello) {
        let Some(to) = &self.sync_advertise else {
            return;
        };
        if hello.sync_advertise.is_empty() {
            tracing::warn!(
                "the host proxy's Hello does not say where peers reach this enclave: start it with --sync-advertise HOST:PORT"
            );
            return;
        }
        match Target::parse(&hello.sync_advertise, None) {
            Ok(t) if hello.sync_advertise.len() <= 255 => {
                if to.borrow().as_ref() != Some(&t) {
                    tracing::info!(advertise = %t, "peers reach this enclave's sync listener here, says the host proxy");
                }
                to.send_replace(Some(t));
            }
            _ => tracing::warn!(
                "the host proxy's --sync-advertise is not HOST:PORT; ignored ({} bytes)",
                hello.sync_advertise.len()
            ),
        }
    }

    /// Records dropped since the start.
    pub fn dropped_total(&self) -> Arc<AtomicU64> {
        self.total.clone()
    }

    /// Keeps the link up until the process ends.
    pub async fn run(mut self) {
        let software = format!("nacre-runtime {}", env!("CARGO_PKG_VERSION"));
        let mut backoff = FIRST_BACKOFF;
        loop {
            match self.session(&software).await {
                Ok(()) => backoff = FIRST_BACKOFF,
                Err(e) => {
                    tracing::warn!(
                        "control link {}: {e}; connecting again in {backoff:?} (records meanwhile are queued, then dropped and counted)",
                        self.addr
                    );
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MOST_BACKOFF);
        }
    }

    /// One connection, until it fails. Ok when it was up and then closed.
    async fn session(&mut self, software: &str) -> Result<(), FrameError> {
        let mut link = nacre_transport::connect(&self.addr).await?;
        let (version, hello) =
            nacre_control::handshake(&mut link, nacre_control::hello(software)).await?;
        self.took_hello(&hello);
        // The host's words, bounded before they reach a log line.
        let host: String = hello
            .software
            .chars()
            .filter(|c| !c.is_control())
            .take(64)
            .collect();
        tracing::info!(addr = %self.addr, version, host = %host, "control link up");
        let dropped = self.dropped.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            let frame = Frame {
                body: Some(Body::Dropped(Dropped { count: dropped })),
            };
            // A few bytes, always within a frame; were it not, the count
            // would wait for the next link rather than end this one.
            match nacre_control::encode_frame(&frame) {
                Ok(bytes) => send(&mut link, &bytes).await?,
                Err(_) => {
                    self.dropped.fetch_add(dropped, Ordering::Relaxed);
                }
            }
        }
        let (mut from_host, mut to_host) = tokio::io::split(link);
        // The host has nothing to say yet beyond its Hello; what it sends
        // is still read and checked (one reader for the whole session, so
        // no frame is cut by a send), and later kinds of frame are skipped.
        let reader = async move {
            loop {
                if let Err(e) = nacre_control::read_frame(&mut from_host).await {
                    return e;
                }
            }
        };
        tokio::pin!(reader);
        loop {
            tokio::select! {
                next = self.queue.recv() => {
                    let Some(bytes) = next else { return Ok(()) };
                    let sent = send(&mut to_host, &bytes).await;
                    self.room.give(bytes.len());
                    if let Err(e) = sent {
                        self.dropped.fetch_add(1, Ordering::Relaxed);
                        self.total.fetch_add(1, Ordering::Relaxed);
                        return Err(e.into());
                    }
                }
                e = &mut reader => match e {
                    FrameError::Closed => {
                        tracing::warn!(addr = %self.addr, "the host closed the control link");
                        return Ok(());
                    }
                    e => return Err(e),
                },
            }
        }
    }
}

/// Writes one encoded frame.
async fn send<W: tokio::io::AsyncWrite + Unpin>(w: &mut W, bytes: &[u8]) -> std::io::Result<()> {
    w.write_all(bytes).await?;
    w.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::prelude::*;

    /// A layer and its link (never connected), with `log` run under it.
    fn logged(log: impl FnOnce()) -> ControlLink {
        let addr = "unix:/nonexistent/control.sock".parse().expect("address");
        let (layer, link) = channel(addr);
        tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), log);
        link
    }

    /// What the link would send, as the host would read it.
    async fn queued(link: &mut ControlLink) -> Vec<(usize, Frame)> {
        let mut frames = Vec::new();
        while let Ok(bytes) = link.queue.try_recv() {
            let frame = nacre_control::read_frame(&mut bytes.as_slice()).await;
            frames.push((bytes.len(), frame.expect("a frame")));
        }
        frames
    }

    #[test]
    fn the_queue_is_bounded_in_bytes() {
        let line = "x".repeat(bounded::MESSAGE);
        let mut link = logged(|| {
            for _ in 0..1000 {
                tracing::info!("{line}");
            }
        });
        let left = link.room.0.load(Ordering::Relaxed);
        let mut bytes = 0;
        let mut kept = 0u64;
        while let Ok(frame) = link.queue.try_recv() {
            bytes += frame.len();
            kept += 1;
        }
        // 1,000 records fit the count (1,024) but not the bytes.
        assert!(bytes <= QUEUE_BYTES, "{bytes} bytes queued");
        assert_eq!(left, QUEUE_BYTES - bytes);
        assert!(kept < 1000, "{kept} records queued");
        assert_eq!(link.total.load(Ordering::Relaxed), 1000 - kept);
    }

    #[tokio::test]
    async fn a_record_is_bounded_before_it_is_made() {
        let huge = "\u{7f}".repeat(16 << 20);
        let mut link = logged(|| {
            tracing::warn!(
                big = ?huge, f1 = 1, f2 = 2, f3 = 3, f4 = 4, f5 = 5, f6 = 6, f7 = 7,
                f8 = 8, f9 = 9, f10 = 10, f11 = 11, f12 = 12, f13 = 13, f14 = 14,
                f15 = 15, f16 = 16, f17 = 17, f18 = 18,
                "failed: {huge}"
            );
        });
        let frames = queued(&mut link).await;
        assert_eq!(link.total.load(Ordering::Relaxed), 0, "nothing dropped");
        let Some((
            len,
            Frame {
                body: Some(Body::Log(r)),
            },
        )) = frames.first()
        else {
            panic!("{frames:?}");
        };
        assert!(*len <= bounded::MAX_RECORD, "{len}");
        assert!(r.message.len() <= bounded::MESSAGE + bounded::NOTE);
        assert!(
            r.message.ends_with(&format!(
                "(truncated, {} bytes more)",
                (16 << 20) + 8 - bounded::MESSAGE
            )),
            "{}",
            &r.message[r.message.len() - 50..]
        );
        assert_eq!(r.fields.len(), bounded::FIELDS + 1);
        assert_eq!(r.fields["fields_dropped"], "3");
        let big = &r.fields["big"];
        assert!(big.len() <= bounded::FIELD + bounded::NOTE, "{}", big.len());
        assert!(big.contains("(truncated, over "), "{big}");
    }
}
