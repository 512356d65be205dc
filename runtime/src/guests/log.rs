//! Guest stdout and stderr, into the runtime's log, tagged with the guest.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};

use super::GuestName;

/// Bytes of output one instance may log; past this, lines are dropped so
/// a chatty guest cannot flood the runtime's log.
const LOG_BUDGET: usize = 64 * 1024;
/// A line longer than this is cut and logged in pieces (and a piece is
/// never more than this, so a guest's line is bounded before it reaches
/// any log sink).
const MAX_LINE: usize = 4096;

/// One of a guest instance's two output streams.
#[derive(Clone)]
pub(crate) struct GuestLog {
    guest: GuestName,
    stream: &'static str,
    budget: Arc<AtomicUsize>,
}

impl GuestLog {
    /// stdout and stderr for one instance, sharing one budget.
    pub(crate) fn pair(guest: &GuestName) -> (GuestLog, GuestLog) {
        let budget = Arc::new(AtomicUsize::new(LOG_BUDGET));
        let make = |stream| GuestLog {
            guest: guest.clone(),
            stream,
            budget: budget.clone(),
        };
        (make("stdout"), make("stderr"))
    }
}

impl IsTerminal for GuestLog {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestLog {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(LineWriter {
            log: self.clone(),
            line: Vec::new(),
        })
    }
}

struct LineWriter {
    log: GuestLog,
    line: Vec<u8>,
}

impl LineWriter {
    fn emit(&mut self) {
        let text = String::from_utf8_lossy(&self.line);
        // Invalid bytes become three each: still at most MAX_LINE.
        let text = nacre_control::bounded::cut(text.trim_end_matches(['\n', '\r']), MAX_LINE);
        let cost = text.len() + 1;
        let before = match self
            .log
            .budget
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                Some(b.saturating_sub(cost))
            }) {
            Ok(b) | Err(b) => b,
        };
        if before >= cost {
            tracing::info!(target: "guest", guest = %self.log.guest, stream = self.log.stream, "{text}");
        } else if before > 0 {
            // The first line over budget says so once; later ones are silent.
            tracing::warn!(guest = %self.log.guest, "guest output over {LOG_BUDGET} bytes for one request; dropping the rest");
        }
        self.line.clear();
    }
}

impl AsyncWrite for LineWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        // Taken a line (or MAX_LINE bytes) at a time, so the line held is
        // never longer than MAX_LINE, whatever one write brings.
        let mut rest = buf;
        while !rest.is_empty() {
            let room = MAX_LINE - self.line.len();
            let piece = &rest[..rest.len().min(room)];
            let end = piece
                .iter()
                .position(|b| *b == b'\n')
                .map_or(piece.len(), |i| i + 1);
            self.line.extend_from_slice(&piece[..end]);
            rest = &rest[end..];
            if self.line.ends_with(b"\n") || self.line.len() >= MAX_LINE {
                self.emit();
            }
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.line.is_empty() {
            self.emit();
        }
        Poll::Ready(Ok(()))
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        if !self.line.is_empty() {
            self.emit();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn a_line_is_never_held_past_its_bound() {
        let name: GuestName = "g".parse().expect("name");
        let (out, _) = GuestLog::pair(&name);
        let mut w = LineWriter {
            log: out,
            line: Vec::new(),
        };
        // One write of 1 MiB with no newline, then a short line.
        w.write_all(&vec![0x7f; 1 << 20]).await.expect("write");
        assert!(w.line.len() < MAX_LINE, "{} bytes held", w.line.len());
        // Not even for a moment: the buffer never grew past the bound.
        assert!(w.line.capacity() <= 2 * MAX_LINE, "{}", w.line.capacity());
        w.write_all(b"ab\ncd").await.expect("write");
        assert_eq!(w.line, b"cd");
    }
}
