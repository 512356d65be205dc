//! `--control-listen`: the enclave's control link. The runtime connects, both sides say Hello, and every log record and guest output
//! line it sends is written to this process's stdout, one line each, as
//! text or JSON (`--log-format`), for journald or a CloudWatch agent. This
//! process's own log stays on stderr.
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
use std::time::{Duration, SystemTime};

use nacre_control::bounded::{self, Bounded, FIELD, FIELDS, MESSAGE, NAME};
use nacre_control::{Body, Frame, FrameError, Level, Stream};
use nacre_transport::Listener;

use crate::args::LogFormat;

/// Accepts links until the task is aborted.
/// `sync_advertise` (`--sync-advertise`) goes to the runtime in this
/// side's Hello: where the other enclaves reach its sync listener.
pub async fn serve(listener: Listener, format: LogFormat, sync_advertise: Option<String>) {
    loop {
        let (link, peer) = listener.accept().await;
        tokio::spawn(session(link, peer, format, sync_advertise.clone()));
    }
}

async fn session(
    mut link: nacre_transport::Stream,
    peer: String,
    format: LogFormat,
    sync_advertise: Option<String>,
) {
    let mut hello =
        nacre_control::hello(&format!("nacre-host-proxy {}", env!("CARGO_PKG_VERSION")));
    hello.sync_advertise = sync_advertise.unwrap_or_default();
    match nacre_control::handshake(&mut link, hello).await {
        Ok((version, runtime)) => {
            let runtime = clean(&runtime.software, NAME);
            tracing::info!(%peer, version, %runtime, "control link up");
        }
        Err(e) => {
            tracing::warn!(%peer, "control link refused: {e}");
            return;
        }
    }
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
        (_, Body::Hello(_)) => return None,
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
