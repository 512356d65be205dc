//! `--control-listen`: the enclave's control link (SPEC §8.1). The runtime
//! connects, both sides say Hello, and every log record and guest output
//! line it sends is written to this process's stdout, one line each, as
//! text or JSON (`--log-format`), for journald or a CloudWatch agent. This
//! process's own log stays on stderr.
//!
//! The enclave's lines are the enclave's words: in text each is tagged
//! `enclave` or `guest=NAME` and its control characters are escaped, so a
//! guest cannot forge a line of the proxy's own or another guest's.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use nacre_control::{Body, Frame, FrameError, Level, Stream};
use nacre_transport::Listener;

use crate::args::LogFormat;

/// Accepts links until the task is aborted.
pub async fn serve(listener: Listener, format: LogFormat) {
    loop {
        let (link, peer) = listener.accept().await;
        tokio::spawn(session(link, peer, format));
    }
}

async fn session(mut link: nacre_transport::Stream, peer: String, format: LogFormat) {
    let software = format!("nacre-host-proxy {}", env!("CARGO_PKG_VERSION"));
    match nacre_control::handshake(&mut link, &software).await {
        Ok((version, runtime)) => {
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

/// Text as the enclave sent it, with control characters escaped.
fn clean(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() {
            let _ = write!(out, "{}", c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
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
                clean(&r.target),
                clean(&r.message)
            );
            let mut fields: Vec<_> = r.fields.iter().collect();
            fields.sort();
            for (k, v) in fields {
                let _ = write!(line, " {}={}", clean(k), clean(v));
            }
            line
        }
        (LogFormat::Text, Body::GuestOutput(g)) => format!(
            "{} {} guest={}: {}",
            time(g.unix_ms),
            stream(g.stream),
            clean(&g.guest),
            clean(&g.line)
        ),
        (LogFormat::Text, Body::Dropped(d)) => format!(
            "{} WARN enclave: {} log records dropped while the control link was slow or down",
            time(nacre_control::now_ms()),
            d.count
        ),
        (LogFormat::Json, Body::Log(r)) => serde_json::json!({
            "time": time(r.unix_ms),
            "source": "enclave",
            "level": level(r.level),
            "target": r.target,
            "message": r.message,
            "fields": r.fields,
        })
        .to_string(),
        (LogFormat::Json, Body::GuestOutput(g)) => serde_json::json!({
            "time": time(g.unix_ms),
            "source": "guest",
            "guest": g.guest,
            "stream": stream(g.stream),
            "line": g.line,
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
}
