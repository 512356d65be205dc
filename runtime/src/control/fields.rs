//! A record's fields as text, each bounded in bytes as it is formatted
//! ([`nacre_control::bounded`]): for the control link's records, and for
//! the runtime's own text log through [`BoundedFields`].

use std::fmt::Write as _;

use nacre_control::bounded::{self, Bounded};
use tracing::field::{Field, Visit};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::fmt::format::Writer;

/// The message and the other fields of one record, in their order.
pub(super) struct Fields {
    message: Bounded,
    others: Vec<(String, String)>,
    /// Fields past [`bounded::FIELDS`], counted only.
    skipped: usize,
    /// Strings written as `Debug` (quoted), as tracing-subscriber's text
    /// format does; the control link's records carry them as they are.
    quote: bool,
}

impl Fields {
    /// Empty; `quote` as for the text log.
    pub(super) fn new(quote: bool) -> Fields {
        Fields {
            message: Bounded::new(bounded::MESSAGE),
            others: Vec::new(),
            skipped: 0,
            quote,
        }
    }

    /// Keeps a field, formatted by `write` into a bounded buffer.
    fn keep(&mut self, name: &str, write: impl FnOnce(&mut Bounded) -> std::fmt::Result) {
        if self.others.len() >= bounded::FIELDS {
            self.skipped += 1;
            return;
        }
        let mut value = Bounded::new(bounded::FIELD);
        // An error only says the buffer stopped taking more.
        let _ = write(&mut value);
        let name = bounded::cut(name, bounded::NAME).into_owned();
        self.others.push((name, value.finish()));
    }

    /// The message, and the other fields with the count of those left out.
    pub(super) fn finish(mut self) -> (String, Vec<(String, String)>) {
        if self.skipped > 0 {
            self.others
                .push(("fields_dropped".into(), self.skipped.to_string()));
        }
        (self.message.finish(), self.others)
    }
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "message" => {
                let _ = self.message.write_str(value);
            }
            name if self.quote => self.keep(name, |w| write!(w, "{value:?}")),
            name => self.keep(name, |w| w.write_str(value)),
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "message" => {
                let _ = write!(self.message, "{value:?}");
            }
            // What the `log` crate's records carry beside their message,
            // left out as tracing-subscriber's own text format does.
            name if self.quote && name.starts_with("log.") => {}
            name => self.keep(name, |w| write!(w, "{value:?}")),
        }
    }
}

/// Formats fields for tracing-subscriber's text `fmt` layer as its
/// default does (`message name=value ...`), with the control link's
/// bounds: message 8 KiB, each field 2 KiB, 16 fields. A value is never
/// made in full, so the layer's line buffer (kept for the thread's life)
/// never grows past a bounded line. Set it with
/// `fmt::layer().fmt_fields(BoundedFields)`; the JSON format formats an
/// event's fields itself, so there only the cut at the source (guests'
/// errors and lines, peers' words) bounds them.
#[derive(Debug, Default, Clone, Copy)]
pub struct BoundedFields;

impl<'w> FormatFields<'w> for BoundedFields {
    fn format_fields<R: RecordFields>(
        &self,
        mut writer: Writer<'w>,
        fields: R,
    ) -> std::fmt::Result {
        let mut visitor = Fields::new(true);
        fields.record(&mut visitor);
        let (message, others) = visitor.finish();
        let mut gap = "";
        if !message.is_empty() {
            writer.write_str(&message)?;
            gap = " ";
        }
        for (name, value) in others {
            write!(writer, "{gap}{name}={value}")?;
            gap = " ";
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::prelude::*;

    /// Everything a fmt layer writes.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if let Ok(mut out) = self.0.lock() {
                out.extend_from_slice(buf);
            }
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn the_text_log_is_bounded_and_reads_as_before() {
        let out = Captured::default();
        let writer = out.clone();
        let layer = tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .without_time()
            .fmt_fields(BoundedFields)
            .with_writer(move || writer.clone());
        let huge = "\u{7f}".repeat(16 << 20);
        tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || {
            tracing::info!(n = 3, why = "a reason", "hello {}", "there");
            tracing::warn!(big = %huge, "failed: {huge:?}");
        });
        let text =
            String::from_utf8(out.0.lock().map(|o| o.clone()).unwrap_or_default()).expect("text");
        let mut lines = text.lines();
        let first = lines.next().unwrap_or_default();
        assert!(
            first.ends_with(": hello there n=3 why=\"a reason\""),
            "{first}"
        );
        let second = lines.next().unwrap_or_default();
        assert!(second.len() < bounded::MESSAGE + bounded::FIELD + 4 * bounded::NOTE);
        assert!(second.contains("… (truncated, over "), "{second:.200}");
    }
}
