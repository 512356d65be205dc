//! Logs out of the enclave (SPEC §8.1): the runtime's log records and its
//! guests' output lines go to the host proxy over `--control`, framed as
//! in [`nacre_control`].
//!
//! [`ControlLayer`] is a tracing layer: every record that passes the log
//! filter is queued without waiting (a bounded queue; when the host is
//! slow or gone, records are dropped and counted, so logging never holds
//! back a request). [`ControlLink`] connects, says Hello, sends the queue,
//! and reconnects by itself when the link fails; the count of dropped
//! records goes out first once the link is back. What the host sends is
//! read and checked too: a frame that is malformed, too large, cut short
//! or of a protocol version this runtime does not speak is logged and the
//! link is made again.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use nacre_control::{Body, Dropped, Frame, FrameError, GuestOutput, Level, LogRecord, Stream};
use nacre_transport::Address;
use tokio::sync::mpsc;
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::Context;

/// Records queued for the host at most; past this they are dropped.
const QUEUE: usize = 1024;
/// The first wait before connecting again, doubled after each failure.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// The longest wait between two attempts to connect.
const MOST_BACKOFF: Duration = Duration::from_secs(5);

/// The tracing layer feeding the link.
pub struct ControlLayer {
    queue: mpsc::Sender<Frame>,
    dropped: Arc<AtomicU64>,
    total: Arc<AtomicU64>,
}

/// The link to the host proxy's `--control-listen`.
pub struct ControlLink {
    addr: Address,
    queue: mpsc::Receiver<Frame>,
    /// Dropped since the last report to the host.
    dropped: Arc<AtomicU64>,
    /// Dropped since the start, for metrics.
    total: Arc<AtomicU64>,
}

/// A layer and its link to `addr`.
pub fn channel(addr: Address) -> (ControlLayer, ControlLink) {
    let (tx, rx) = mpsc::channel(QUEUE);
    let dropped = Arc::new(AtomicU64::new(0));
    let total = Arc::new(AtomicU64::new(0));
    (
        ControlLayer {
            queue: tx,
            dropped: dropped.clone(),
            total: total.clone(),
        },
        ControlLink {
            addr,
            queue: rx,
            dropped,
            total,
        },
    )
}

/// A record's fields as text.
#[derive(Default)]
struct Fields {
    message: String,
    others: HashMap<String, String>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            self.others.insert(field.name().into(), value.into());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            self.others
                .insert(field.name().into(), format!("{value:?}"));
        }
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for ControlLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let meta = event.metadata();
        // Guest output (guests::log) travels as the guest's own line.
        let body = match (meta.target(), fields.others.remove("guest")) {
            ("guest", Some(guest)) => Body::GuestOutput(GuestOutput {
                unix_ms: nacre_control::now_ms(),
                guest,
                stream: match fields.others.get("stream").map(String::as_str) {
                    Some("stderr") => Stream::Stderr,
                    _ => Stream::Stdout,
                } as i32,
                line: fields.message,
            }),
            (target, guest) => {
                if let Some(guest) = guest {
                    fields.others.insert("guest".into(), guest);
                }
                Body::Log(LogRecord {
                    unix_ms: nacre_control::now_ms(),
                    level: level(meta.level()) as i32,
                    target: target.into(),
                    message: fields.message,
                    fields: fields.others,
                })
            }
        };
        if self.queue.try_send(Frame { body: Some(body) }).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            self.total.fetch_add(1, Ordering::Relaxed);
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
        let (version, host) = nacre_control::handshake(&mut link, software).await?;
        tracing::info!(addr = %self.addr, version, host = %host, "control link up");
        let dropped = self.dropped.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            let frame = Frame {
                body: Some(Body::Dropped(Dropped { count: dropped })),
            };
            nacre_control::write_frame(&mut link, &frame).await?;
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
                    let Some(frame) = next else { return Ok(()) };
                    if let Err(e) = nacre_control::write_frame(&mut to_host, &frame).await {
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
