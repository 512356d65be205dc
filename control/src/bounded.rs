//! Text bounded in bytes before it is made. A log record can carry what a
//! guest or a peer chose (a guest's error string, a field of a peer's
//! request); formatted in full, one such value was a 100 MB record. Here
//! a value is written into a [`Bounded`] buffer that keeps its first bytes
//! and only counts the rest, so a huge `Debug` value is never held in
//! memory, and a note says how much was cut.
//!
//! The bounds a log record is held to (message, each field, number of
//! fields) are here too, so a record always fits a frame
//! ([`MAX_RECORD`] is under [`crate::MAX_FRAME`]).

use std::borrow::Cow;
use std::fmt;

/// Bytes of a record's message (or of a guest's output line) kept.
pub const MESSAGE: usize = 8 * 1024;
/// Bytes of one field's value kept.
pub const FIELD: usize = 2 * 1024;
/// Fields one record keeps; more are counted in one extra field,
/// `fields_dropped`.
pub const FIELDS: usize = 16;
/// Bytes of a field's name, or of a record's target, kept. Both come from
/// the runtime's code, never from input; bounded so that a record's size
/// does not depend on that.
pub const NAME: usize = 256;
/// Bytes a truncation note adds at most (`… (truncated, over N bytes
/// more)` with N up to 20 digits).
pub const NOTE: usize = 48;
/// Protobuf bytes around one string of a record at most (tag, length,
/// map entry).
const FRAMING: usize = 16;
/// The largest encoded record the bounds allow: message, target and
/// fields (one more for `fields_dropped`), each with its note, plus the
/// time, level and stream.
pub const MAX_RECORD: usize = (MESSAGE + NOTE + FRAMING)
    + (NAME + NOTE + FRAMING)
    + (FIELDS + 1) * (NAME + NOTE + FIELD + NOTE + 2 * FRAMING)
    + 64;
const _: () = assert!(MAX_RECORD < crate::MAX_FRAME);

/// How far past its limit a [`Bounded`] goes on counting what it drops
/// before it stops the formatting: a value's size is worth telling, but
/// not at the cost of formatting gigabytes nobody keeps.
const COUNT_PAST: usize = 1 << 20;

/// A `fmt::Write` that keeps at most `limit` bytes (cut on a character
/// boundary) and counts the rest; once it has counted [`COUNT_PAST`]
/// bytes it fails the next write, which ends the formatting.
#[derive(Debug)]
pub struct Bounded {
    text: String,
    limit: usize,
    /// Bytes written past the limit.
    more: usize,
    /// Past [`COUNT_PAST`]: the next write fails.
    stopped: bool,
    /// A write failed: `more` is a lower bound.
    refused: bool,
}

impl Bounded {
    /// An empty buffer keeping `limit` bytes.
    pub fn new(limit: usize) -> Bounded {
        Bounded {
            text: String::new(),
            limit,
            more: 0,
            stopped: false,
            refused: false,
        }
    }

    /// Whether anything was cut.
    pub fn truncated(&self) -> bool {
        self.more > 0
    }

    /// What was kept, with a note naming what was cut, if anything was.
    pub fn finish(mut self) -> String {
        if self.more > 0 {
            self.text.push_str(&note(self.more, self.refused));
        }
        self.text
    }
}

impl fmt::Write for Bounded {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if self.stopped {
            self.refused = true;
            return Err(fmt::Error);
        }
        // Once something was cut nothing more is kept, even a piece that
        // would fit: the kept text stays a prefix of the value.
        let room = if self.more == 0 {
            self.limit.saturating_sub(self.text.len())
        } else {
            0
        };
        let keep = s.floor_char_boundary(room.min(s.len()));
        self.text.push_str(&s[..keep]);
        self.more = self.more.saturating_add(s.len() - keep);
        // This write's count is exact; a later one would not be.
        self.stopped = self.more > COUNT_PAST;
        Ok(())
    }
}

/// The note that ends a cut value.
fn note(more: usize, refused: bool) -> String {
    let over = if refused { "over " } else { "" };
    format!("… (truncated, {over}{more} bytes more)")
}

/// `value`'s `Display`, at most `limit` bytes and a note.
pub fn display(value: &dyn fmt::Display, limit: usize) -> String {
    let mut b = Bounded::new(limit);
    // An error only says the writer stopped: what it kept is the answer.
    let _ = fmt::write(&mut b, format_args!("{value}"));
    b.finish()
}

/// `value`'s `Debug`, at most `limit` bytes and a note.
pub fn debug(value: &dyn fmt::Debug, limit: usize) -> String {
    let mut b = Bounded::new(limit);
    let _ = fmt::write(&mut b, format_args!("{value:?}"));
    b.finish()
}

/// `s` if it is at most `limit` bytes, else its first `limit` bytes and a
/// note.
pub fn cut(s: &str, limit: usize) -> Cow<'_, str> {
    if s.len() <= limit {
        return Cow::Borrowed(s);
    }
    let keep = s.floor_char_boundary(limit);
    Cow::Owned(format!("{}{}", &s[..keep], note(s.len() - keep, false)))
}

/// `s` cut where its rendering (each character costing `cost` bytes, as
/// an escaping writer would spend them) would pass `limit` bytes; the
/// note counts the bytes of `s` left out.
pub fn cut_rendered(s: &str, limit: usize, cost: impl Fn(char) -> usize) -> Cow<'_, str> {
    let mut spent = 0usize;
    for (i, c) in s.char_indices() {
        spent += cost(c);
        if spent > limit {
            return Cow::Owned(format!("{}{}", &s[..i], note(s.len() - i, false)));
        }
    }
    Cow::Borrowed(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fmt::Write as _;

    #[test]
    fn a_bounded_writer_keeps_a_prefix_and_counts_the_rest() {
        let mut b = Bounded::new(10);
        b.write_str("abcdefghi").unwrap();
        assert!(!b.truncated());
        // "éé" does not fit the one byte left, and is not split.
        b.write_str("éé").unwrap();
        assert!(b.truncated());
        // A later piece that would fit is not kept: the text stays a prefix.
        b.write_str("x").unwrap();
        assert_eq!(b.finish(), "abcdefghi… (truncated, 5 bytes more)");

        // Never inside a character: "é" is two bytes.
        assert_eq!(display(&"aé", 2), "a… (truncated, 2 bytes more)");
        assert_eq!(display(&"short", 10), "short");
        assert_eq!(cut("short", 5), "short");
        assert_eq!(cut("abcdef", 3), "abc… (truncated, 3 bytes more)");
    }

    #[test]
    fn a_huge_debug_value_is_never_made_in_full() {
        // 16 MiB of DEL: its Debug escaping would be 96 MiB, written a
        // character at a time; the writer stops a MiB past its limit.
        let huge = "\u{7f}".repeat(16 << 20);
        let mut b = Bounded::new(FIELD);
        assert!(write!(b, "{huge:?}").is_err(), "the formatting is stopped");
        assert!(b.text.capacity() < 2 * FIELD, "{}", b.text.capacity());
        let text = b.finish();
        assert!(text.len() <= FIELD + NOTE, "{}", text.len());
        assert!(text.starts_with("\"\\u{7f}\\u{7f}"), "{text:.40}");
        assert!(text.contains("… (truncated, over "), "{text}");
        assert!(debug(&huge, MESSAGE).len() <= MESSAGE + NOTE);
    }

    #[test]
    fn a_rendered_cut_counts_what_escaping_costs() {
        // Six bytes per DEL escaped: 4 fit in 24.
        let s = "\u{7f}".repeat(10);
        let cut = cut_rendered(&s, 24, |c| if c.is_control() { 6 } else { c.len_utf8() });
        assert_eq!(
            cut,
            format!("{}… (truncated, 6 bytes more)", "\u{7f}".repeat(4))
        );
        assert_eq!(cut_rendered("plain", 5, char::len_utf8), "plain");
    }
}
