//! A small, strict-where-it-matters BER reader for CMS.
//!
//! Why not the `der`/`cms` crates: `der` reads DER only and refuses
//! indefinite lengths (`ErrorKind::IndefiniteLength`), while both KMS's
//! `CiphertextForRecipient` and `openssl cms -encrypt -stream` use them,
//! together with a constructed (chunked) `encryptedContent` (see
//! RustCrypto/formats#779, which carries KMS samples `der` cannot read).
//! CMS needs only low tag numbers, definite and indefinite lengths and
//! OCTET STRING reassembly, so this reader is small enough to check by eye.
//!
//! Bounds: nesting is limited to [`MAX_DEPTH`], a length must fit in the
//! input it claims to cover, and every access is checked, so no input can
//! make it panic, recurse without bound, or allocate more than the input.

use thiserror::Error;

/// Deepest nesting read. CMS EnvelopedData with OAEP parameters reaches
/// 11 levels (the MGF1 hash inside its AlgorithmIdentifier); chunked
/// OCTET STRINGs add one or two.
pub(crate) const MAX_DEPTH: usize = 20;

/// What was wrong with the encoding itself.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum BerError {
    /// The input ends inside a header, a length or a content.
    #[error("input ends before the element does (truncated)")]
    Truncated,
    /// Tag numbers of 31 and more: CMS never uses them.
    #[error("high tag numbers (identifier 0x{0:02x}) are not used by CMS")]
    HighTagNumber(u8),
    /// A long-form length of more than four bytes.
    #[error("a length of {0} length bytes is larger than any CMS message")]
    LengthTooLong(usize),
    /// Length octet 0xFF, reserved by X.690.
    #[error("reserved length octet 0xff")]
    ReservedLength,
    /// Indefinite length on a primitive element (X.690 8.1.3.2).
    #[error("indefinite length on a primitive element")]
    IndefinitePrimitive,
    /// Nesting deeper than [`MAX_DEPTH`].
    #[error("nesting deeper than {MAX_DEPTH} levels")]
    TooDeep,
    /// An end-of-contents marker where none may be.
    #[error("end-of-contents marker outside an indefinite-length element")]
    UnexpectedEndOfContents,
    /// Tag 0 with a non-zero length.
    #[error("end-of-contents marker with a non-zero length")]
    BadEndOfContents,
    /// A chunk of a constructed OCTET STRING that is not an OCTET STRING.
    #[error("a chunk of a constructed OCTET STRING has tag {0}")]
    BadChunk(String),
}

/// The tag class (bits 8–7 of the identifier).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    Universal,
    Application,
    Context,
    Private,
}

/// Universal tag numbers CMS uses.
pub(crate) mod tag {
    pub(crate) const INTEGER: u8 = 2;
    pub(crate) const OCTET_STRING: u8 = 4;
    pub(crate) const NULL: u8 = 5;
    pub(crate) const OID: u8 = 6;
    pub(crate) const SEQUENCE: u8 = 16;
    pub(crate) const SET: u8 = 17;
}

/// One element: its tag and its content octets.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tlv<'a> {
    pub(crate) class: Class,
    pub(crate) constructed: bool,
    pub(crate) number: u8,
    /// The content: for an indefinite length, everything between the
    /// header and the end-of-contents marker.
    pub(crate) content: &'a [u8],
    depth: usize,
}

impl<'a> Tlv<'a> {
    /// Whether this is the universal tag `number`.
    pub(crate) fn is_universal(&self, number: u8) -> bool {
        self.class == Class::Universal && self.number == number
    }

    /// Whether this is the context-specific tag `[number]`.
    pub(crate) fn is_context(&self, number: u8) -> bool {
        self.class == Class::Context && self.number == number
    }

    /// The elements inside a constructed element.
    pub(crate) fn children(&self) -> Children<'a> {
        Children {
            rest: if self.constructed { self.content } else { &[] },
            depth: self.depth + 1,
        }
    }

    /// The bytes of an OCTET STRING (or one implicitly tagged as one),
    /// primitive or constructed from chunks, appended to `out`.
    pub(crate) fn octets_into(&self, out: &mut Vec<u8>) -> Result<(), BerError> {
        if !self.constructed {
            out.extend_from_slice(self.content);
            return Ok(());
        }
        let mut chunks = self.children();
        while let Some(chunk) = chunks.next_tlv()? {
            if !chunk.is_universal(tag::OCTET_STRING) {
                return Err(BerError::BadChunk(chunk.describe()));
            }
            chunk.octets_into(out)?;
        }
        Ok(())
    }

    /// The bytes of an OCTET STRING as a new vector.
    pub(crate) fn octets(&self) -> Result<Vec<u8>, BerError> {
        let mut out = Vec::with_capacity(self.content.len());
        self.octets_into(&mut out)?;
        Ok(out)
    }

    /// The tag, for error messages: `SEQUENCE`, `[0]`, `universal 12`.
    pub(crate) fn describe(&self) -> String {
        match (self.class, self.number) {
            (Class::Universal, tag::INTEGER) => "INTEGER".into(),
            (Class::Universal, tag::OCTET_STRING) => "OCTET STRING".into(),
            (Class::Universal, tag::NULL) => "NULL".into(),
            (Class::Universal, tag::OID) => "OBJECT IDENTIFIER".into(),
            (Class::Universal, tag::SEQUENCE) => "SEQUENCE".into(),
            (Class::Universal, tag::SET) => "SET".into(),
            (Class::Universal, n) => format!("universal {n}"),
            (Class::Context, n) => format!("[{n}]"),
            (Class::Application, n) => format!("[APPLICATION {n}]"),
            (Class::Private, n) => format!("[PRIVATE {n}]"),
        }
    }
}

/// The elements of a constructed element's content, read one at a time.
#[derive(Debug, Clone)]
pub(crate) struct Children<'a> {
    rest: &'a [u8],
    depth: usize,
}

impl<'a> Children<'a> {
    /// The next element, or `None` at the end of the content.
    pub(crate) fn next_tlv(&mut self) -> Result<Option<Tlv<'a>>, BerError> {
        if self.rest.is_empty() {
            return Ok(None);
        }
        let (tlv, rest) = read(self.rest, self.depth)?;
        self.rest = rest;
        Ok(Some(tlv))
    }

    /// The next element, without consuming it.
    pub(crate) fn peek(&self) -> Result<Option<Tlv<'a>>, BerError> {
        self.clone().next_tlv()
    }
}

/// Reads one whole element from the front of `input` (which may hold
/// more after it, returned as the rest).
pub(crate) fn read_first(input: &[u8]) -> Result<(Tlv<'_>, &[u8]), BerError> {
    read(input, 0)
}

/// Reads one element at nesting `depth`.
fn read(input: &[u8], depth: usize) -> Result<(Tlv<'_>, &[u8]), BerError> {
    if depth > MAX_DEPTH {
        return Err(BerError::TooDeep);
    }
    let (&id, after_id) = input.split_first().ok_or(BerError::Truncated)?;
    if id == 0 {
        // Universal 0 is reserved for end-of-contents, which only the
        // indefinite-length loop below may consume.
        return Err(BerError::UnexpectedEndOfContents);
    }
    if id & 0x1f == 0x1f {
        return Err(BerError::HighTagNumber(id));
    }
    let class = match id >> 6 {
        0 => Class::Universal,
        1 => Class::Application,
        2 => Class::Context,
        _ => Class::Private,
    };
    let constructed = id & 0x20 != 0;
    let number = id & 0x1f;
    let (length, body) = read_length(after_id)?;
    let (content, rest) = match length {
        Some(len) => {
            if body.len() < len {
                return Err(BerError::Truncated);
            }
            body.split_at(len)
        }
        None if !constructed => return Err(BerError::IndefinitePrimitive),
        None => split_indefinite(body, depth)?,
    };
    let tlv = Tlv {
        class,
        constructed,
        number,
        content,
        depth,
    };
    Ok((tlv, rest))
}

/// Reads a length: `Some(n)` for a definite one, `None` for indefinite.
fn read_length(input: &[u8]) -> Result<(Option<usize>, &[u8]), BerError> {
    let (&first, rest) = input.split_first().ok_or(BerError::Truncated)?;
    match first {
        0x00..=0x7f => Ok((Some(usize::from(first)), rest)),
        0x80 => Ok((None, rest)),
        0xff => Err(BerError::ReservedLength),
        _ => {
            let count = usize::from(first & 0x7f);
            if count > 4 {
                return Err(BerError::LengthTooLong(count));
            }
            if rest.len() < count {
                return Err(BerError::Truncated);
            }
            let (bytes, rest) = rest.split_at(count);
            // At most four bytes: fits in u32, hence in usize here.
            let len = bytes
                .iter()
                .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
            Ok((Some(len), rest))
        }
    }
}

/// Finds the end of an indefinite-length content by reading its elements
/// up to the end-of-contents marker; returns (content, rest after marker).
fn split_indefinite(body: &[u8], depth: usize) -> Result<(&[u8], &[u8]), BerError> {
    let mut cursor = body;
    loop {
        match cursor {
            [] | [0] => return Err(BerError::Truncated),
            [0, 0, rest @ ..] => {
                let content_len = body.len() - cursor.len();
                return Ok((&body[..content_len], rest));
            }
            [0, _, ..] => return Err(BerError::BadEndOfContents),
            _ => {
                let (_, rest) = read(cursor, depth + 1)?;
                cursor = rest;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn definite_and_indefinite_read_the_same() {
        // SEQUENCE { OCTET STRING "ab" } in DER and in BER with the
        // string split into two chunks inside an indefinite length.
        let der = [0x30, 0x04, 0x04, 0x02, b'a', b'b'];
        let ber = [
            0x30, 0x80, 0x24, 0x80, 0x04, 0x01, b'a', 0x04, 0x01, b'b', 0, 0, 0, 0,
        ];
        for input in [&der[..], &ber[..]] {
            let (seq, rest) = read_first(input).expect("reads");
            assert!(rest.is_empty());
            assert!(seq.is_universal(tag::SEQUENCE));
            let mut children = seq.children();
            let string = children.next_tlv().expect("child").expect("present");
            assert_eq!(string.octets().expect("octets"), b"ab");
            assert!(children.next_tlv().expect("end").is_none());
        }
    }

    #[test]
    fn refuses_bad_encodings() {
        let cases: [(&[u8], BerError); 8] = [
            (&[], BerError::Truncated),
            (&[0x30], BerError::Truncated),
            (&[0x04, 0x05, 1, 2], BerError::Truncated),
            (&[0x30, 0x80, 0x04, 0x00], BerError::Truncated),
            (&[0x04, 0x80, 0, 0], BerError::IndefinitePrimitive),
            (&[0x04, 0x85, 1, 1, 1, 1, 1], BerError::LengthTooLong(5)),
            (&[0x1f, 0x01, 0x00], BerError::HighTagNumber(0x1f)),
            (&[0x30, 0x80, 0x00, 0x01, 0x00], BerError::BadEndOfContents),
        ];
        for (input, want) in cases {
            assert_eq!(read_first(input).map(|_| ()), Err(want), "{input:02x?}");
        }
        let mut children = Tlv {
            class: Class::Universal,
            constructed: true,
            number: tag::SEQUENCE,
            content: &[0, 0],
            depth: 0,
        }
        .children();
        assert_eq!(
            children.next_tlv().map(|_| ()),
            Err(BerError::UnexpectedEndOfContents)
        );
    }

    #[test]
    fn nesting_is_bounded() {
        // 100 nested indefinite SEQUENCEs: refused, not a stack overflow.
        let mut input = Vec::new();
        for _ in 0..100 {
            input.extend_from_slice(&[0x30, 0x80]);
        }
        input.extend(std::iter::repeat_n(0u8, 200));
        assert_eq!(read_first(&input).map(|_| ()), Err(BerError::TooDeep));
    }

    #[test]
    fn chunks_must_be_octet_strings() {
        let input = [0x24, 0x80, 0x02, 0x01, 0x01, 0, 0];
        let (tlv, _) = read_first(&input).expect("reads");
        assert_eq!(tlv.octets(), Err(BerError::BadChunk("INTEGER".into())));
    }
}
