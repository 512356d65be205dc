//! `--control-listen`: the enclave's control links. The runtime connects,
//! says Hello naming the link's channel, and this side answers (echoing the
//! channel it serves). A log link (the runtime's one, channel 0) has every
//! log record and guest output line it sends written to this process's
//! stdout, one line each, as text or JSON (`--log-format`), for journald or
//! a CloudWatch agent. This process's own log stays on stderr. A store link
//! (the runtime opens them as it needs) is served from [`HostStore`]: up to
//! [`MAX_STORE_LINKS`] at once, each on its own.
//!
//! The enclave's lines are the enclave's words: in text each is tagged
//! `enclave` or `guest=NAME` and its control characters are escaped, so a
//! guest cannot forge a line of the proxy's own or another guest's. Each
//! line is bounded as it is rendered, with the runtime's own bounds
//! ([`nacre_control::bounded`]: message 8 KiB, fields 2 KiB, 16 fields),
//! counting what escaping adds: a 64 KiB frame of control characters
//! would otherwise print as a 390 KB line.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use nacre_control::bounded::{self, Bounded, FIELD, FIELDS, MESSAGE, NAME};
use nacre_control::v1::{StoreFailed, StoreResponse, store_response};
use nacre_control::{Body, Channel, Frame, FrameError, Level, Stream};
use nacre_transport::Listener;
use tokio::sync::Semaphore;

use crate::args::LogFormat;
use crate::metrics::Metrics;
use crate::store::HostStore;

/// Store links served at once; another gets a failure answer and is
/// closed.
pub const MAX_STORE_LINKS: usize = 16;

/// How long a store link over the cap has to send its first request
/// before it is closed without an answer.
const BUSY_WAIT: Duration = Duration::from_secs(10);

/// What every control link is served with.
pub struct Control {
    format: LogFormat,
    /// `--sync-advertise`: goes to the runtime in this side's Hello, where
    /// the other enclaves reach its sync listener.
    sync_advertise: Option<String>,
    store: Arc<HostStore>,
    store_links: Arc<Semaphore>,
    metrics: Arc<Metrics>,
}

impl Control {
    /// Links printed in `format`, store links served from `store`.
    pub fn new(
        format: LogFormat,
        sync_advertise: Option<String>,
        store: HostStore,
        metrics: Arc<Metrics>,
    ) -> Control {
        Control {
            format,
            sync_advertise,
            store: Arc::new(store),
            store_links: Arc::new(Semaphore::new(MAX_STORE_LINKS)),
            metrics,
        }
    }
}

impl Control {
    /// Fetches the enclave's AWS credentials once, logging the outcome.
    pub async fn check_credentials(&self) {
        self.store.check_credentials().await;
    }
}

/// Accepts links until the task is aborted.
pub async fn serve(listener: Listener, control: Arc<Control>) {
    loop {
        let (link, peer) = listener.accept().await;
        tokio::spawn(session(link, peer, control.clone()));
    }
}

async fn session(mut link: nacre_transport::Stream, peer: String, control: Arc<Control>) {
    let answer = |theirs: &nacre_control::Hello| {
        let mut hello =
            nacre_control::hello(&format!("nacre-host-proxy {}", env!("CARGO_PKG_VERSION")));
        hello.sync_advertise = control.sync_advertise.clone().unwrap_or_default();
        // Echoed only if served: a channel this proxy does not know gets
        // the log channel, which tells the runtime.
        if Channel::try_from(theirs.channel).is_ok() {
            hello.channel = theirs.channel;
        }
        hello
    };
    let (version, theirs) = match nacre_control::answer_handshake(&mut link, answer).await {
        Ok(up) => up,
        Err(e) => {
            tracing::warn!(%peer, "control link refused: {e}");
            return;
        }
    };
    let runtime = clean(&theirs.software, NAME);
    match Channel::try_from(theirs.channel) {
        Ok(Channel::Logs) => {
            tracing::info!(%peer, version, %runtime, "control link up");
            logs(link, peer, control.format).await;
        }
        Ok(Channel::Store) => {
            tracing::info!(%peer, version, %runtime, "store link up");
            store(link, peer, &control).await;
        }
        Err(_) => tracing::warn!(
            %peer,
            %runtime,
            "control link refused: channel {} is not one this host proxy serves (upgrade it)",
            theirs.channel
        ),
    }
}

/// A log link: each record to stdout, until it closes.
async fn logs(mut link: nacre_transport::Stream, peer: String, format: LogFormat) {
    loop {
        match nacre_control::read_frame(&mut link).await {
            Ok(frame) => {
                if let Some(line) = render(&frame, format) {
                    println!("{line}");
                }
            }
            Err(FrameError::Closed) => {
                tracing::info!(%peer, "control link closed");
                return;
            }
            Err(e) => {
                tracing::warn!(%peer, "control link: {e}; closing it (the runtime connects again)");
                return;
            }
        }
    }
}

/// A store link, if one of the [`MAX_STORE_LINKS`] is free.
async fn store(mut link: nacre_transport::Stream, peer: String, control: &Control) {
    let Ok(_slot) = control.store_links.clone().try_acquire_owned() else {
        let why = format!(
            "this host proxy serves {MAX_STORE_LINKS} store links at once, and they are all open: close one"
        );
        tracing::warn!(%peer, "store link refused: {why}");
        control.store.busy();
        // Its first request gets the answer that says why.
        if let Ok(Ok(_)) =
            tokio::time::timeout(BUSY_WAIT, nacre_control::read_frame(&mut link)).await
        {
            let answer = Frame {
                body: Some(Body::StoreResponse(StoreResponse {
                    result: Some(store_response::Result::Failed(StoreFailed { why })),
                })),
            };
            let _ = nacre_control::write_frame(&mut link, &answer).await;
        }
        return;
    };
    let open = control.metrics.store_links();
    open.inc();
    match nacre_control::store::serve(&mut link, &*control.store).await {
        Ok(()) => tracing::info!(%peer, "store link closed"),
        Err(e) => tracing::warn!(%peer, "{e}; closed that store link (the runtime opens another)"),
    }
    open.dec();
}

fn time(unix_ms: u64) -> String {
    let at = SystemTime::UNIX_EPOCH + Duration::from_millis(unix_ms);
    humantime::format_rfc3339_millis(at).to_string()
}

/// Text as the enclave sent it, with control characters escaped, at
/// most `limit` bytes of it once escaped.
fn clean(s: &str, limit: usize) -> String {
    let mut out = Bounded::new(limit);
    for c in s.chars() {
        let wrote = if c.is_control() {
            write!(out, "{}", c.escape_default())
        } else {
            out.write_char(c)
        };
        if wrote.is_err() {
            break;
        }
    }
    out.finish()
}

/// What JSON escaping makes of `c`, in bytes.
fn json_cost(c: char) -> usize {
    match c {
        '"' | '\\' | '\n' | '\r' | '\t' | '\u{8}' | '\u{c}' => 2,
        c if u32::from(c) < 0x20 => 6,
        c => c.len_utf8(),
    }
}

/// `s` cut so its JSON escaping is at most `limit` bytes.
fn for_json(s: &str, limit: usize) -> Cow<'_, str> {
    bounded::cut_rendered(s, limit, json_cost)
}

/// A record's fields in name order, at most [`FIELDS`] and one more (the
/// runtime's `fields_dropped`), the rest counted.
fn fields(all: &std::collections::HashMap<String, String>) -> (Vec<(&String, &String)>, usize) {
    let mut fields: Vec<_> = all.iter().collect();
    fields.sort();
    let over = fields.len().saturating_sub(FIELDS + 1);
    fields.truncate(FIELDS + 1);
    (fields, over)
}

fn level(level: i32) -> &'static str {
    match Level::try_from(level) {
        Ok(Level::Error) => "ERROR",
        Ok(Level::Warn) => "WARN",
        Ok(Level::Info) => "INFO",
        Ok(Level::Debug) => "DEBUG",
        Ok(Level::Trace) => "TRACE",
        _ => "INFO",
    }
}

fn stream(stream: i32) -> &'static str {
    match Stream::try_from(stream) {
        Ok(Stream::Stderr) => "stderr",
        _ => "stdout",
    }
}

/// One stdout line for `frame`; None for kinds that print nothing (a
/// Hello, or a kind of a later version).
fn render(frame: &Frame, format: LogFormat) -> Option<String> {
    let body = frame.body.as_ref()?;
    Some(match (format, body) {
        (LogFormat::Text, Body::Log(r)) => {
            let mut line = format!(
                "{} {} enclave {}: {}",
                time(r.unix_ms),
                level(r.level),
                clean(&r.target, NAME),
                clean(&r.message, MESSAGE)
            );
            let (fields, over) = fields(&r.fields);
            for (k, v) in fields {
                let _ = write!(line, " {}={}", clean(k, NAME), clean(v, FIELD));
            }
            if over > 0 {
                let _ = write!(line, " fields_not_shown={over}");
            }
            line
        }
        (LogFormat::Text, Body::GuestOutput(g)) => format!(
            "{} {} guest={}: {}",
            time(g.unix_ms),
            stream(g.stream),
            clean(&g.guest, NAME),
            clean(&g.line, MESSAGE)
        ),
        (LogFormat::Text, Body::Dropped(d)) => format!(
            "{} WARN enclave: {} log records dropped while the control link was slow or down",
            time(nacre_control::now_ms()),
            d.count
        ),
        (LogFormat::Json, Body::Log(r)) => {
            let (fields, over) = fields(&r.fields);
            let mut fields: BTreeMap<_, _> = fields
                .into_iter()
                .map(|(k, v)| (for_json(k, NAME), for_json(v, FIELD)))
                .collect();
            if over > 0 {
                fields.insert("fields_not_shown".into(), over.to_string().into());
            }
            serde_json::json!({
                "time": time(r.unix_ms),
                "source": "enclave",
                "level": level(r.level),
                "target": for_json(&r.target, NAME),
                "message": for_json(&r.message, MESSAGE),
                "fields": fields,
            })
            .to_string()
        }
        (LogFormat::Json, Body::GuestOutput(g)) => serde_json::json!({
            "time": time(g.unix_ms),
            "source": "guest",
            "guest": for_json(&g.guest, NAME),
            "stream": stream(g.stream),
            "line": for_json(&g.line, MESSAGE),
        })
        .to_string(),
        (LogFormat::Json, Body::Dropped(d)) => serde_json::json!({
            "time": time(nacre_control::now_ms()),
            "source": "enclave",
            "level": "WARN",
            "dropped": d.count,
            "message": "log records dropped while the control link was slow or down",
        })
        .to_string(),
        // A Hello, or a store frame on a log link: nothing to print.
        (_, Body::Hello(_) | Body::StoreRequest(_) | Body::StoreResponse(_)) => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use nacre_control::{GuestOutput, LogRecord};

    #[test]
    fn lines_are_tagged_and_a_guest_cannot_forge_one() {
        let g = Frame {
            body: Some(Body::GuestOutput(GuestOutput {
                unix_ms: 0,
                guest: "app".into(),
                stream: Stream::Stderr as i32,
                line: "ok\r\n1970-01-01T00:00:00.000Z ERROR enclave x: forged\x1b[2K".into(),
            })),
        };
        let text = render(&g, LogFormat::Text).unwrap();
        assert!(!text.contains('\n') && !text.contains('\r') && !text.contains('\x1b'));
        assert!(
            text.starts_with("1970-01-01T00:00:00.000Z stderr guest=app: ok\\r\\n"),
            "{text}"
        );
        let json: serde_json::Value =
            serde_json::from_str(&render(&g, LogFormat::Json).unwrap()).unwrap();
        assert_eq!(json["guest"], "app");
        assert_eq!(json["source"], "guest");

        let r = Frame {
            body: Some(Body::Log(LogRecord {
                unix_ms: 1000,
                level: Level::Warn as i32,
                target: "nacre_runtime::sync".into(),
                message: "hi".into(),
                fields: [
                    ("b".to_string(), "2".to_string()),
                    ("a".to_string(), "1".to_string()),
                ]
                .into(),
            })),
        };
        assert_eq!(
            render(&r, LogFormat::Text).unwrap(),
            "1970-01-01T00:00:01.000Z WARN enclave nacre_runtime::sync: hi a=1 b=2"
        );
        assert!(render(&Frame { body: None }, LogFormat::Text).is_none());
    }

    #[test]
    fn a_record_full_of_control_characters_prints_as_a_bounded_line() {
        // A whole frame's worth of DEL (6 bytes each once escaped) in the
        // message, in a field and in a guest's line.
        let del = "\u{7f}".repeat(nacre_control::MAX_FRAME / 2);
        let fields = (0..40).map(|i| (format!("f{i:02}"), del.clone())).collect();
        let r = Frame {
            body: Some(Body::Log(LogRecord {
                unix_ms: 0,
                level: Level::Info as i32,
                target: del.clone(),
                message: del.clone(),
                fields,
            })),
        };
        let g = Frame {
            body: Some(Body::GuestOutput(GuestOutput {
                unix_ms: 0,
                guest: "app".into(),
                stream: Stream::Stdout as i32,
                line: del.clone(),
            })),
        };
        let most = MESSAGE + NAME + (FIELDS + 1) * (NAME + FIELD + 2 * bounded::NOTE) + 4096;
        for format in [LogFormat::Text, LogFormat::Json] {
            for frame in [&r, &g] {
                let line = render(frame, format).unwrap();
                assert!(line.len() <= most, "{format:?}: {} bytes", line.len());
                assert!(line.contains("(truncated, "), "{format:?}");
            }
        }
        let text = render(&r, LogFormat::Text).unwrap();
        assert!(
            text.ends_with(" fields_not_shown=23"),
            "{}",
            &text[text.len() - 40..]
        );
        let json: serde_json::Value =
            serde_json::from_str(&render(&r, LogFormat::Json).unwrap()).unwrap();
        assert_eq!(json["fields"]["fields_not_shown"], "23");
    }
}
