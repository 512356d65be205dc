//! The stand-in's `CiphertextBlob` (opaque in real KMS, so any format
//! will do as long as only this stand-in reads it):
//!
//! ```text
//! "NKDB" | version 1 | u16 BE length | key ARN | 12-byte nonce | AES-256-GCM(data key) + 16-byte tag
//! ```
//!
//! The additional authenticated data is everything before the nonce (so
//! the key ARN is bound) followed by a canonical encoding of the
//! encryption context: a count, then each entry in sorted order as
//! length-prefixed key and value. Decrypting under any other context, or
//! with one byte changed anywhere, fails the tag.

use std::collections::BTreeMap;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

use crate::keys::KeyMaterial;

const MAGIC: &[u8; 4] = b"NKDB";
const VERSION: u8 = 1;
/// Bytes of the GCM tag.
const TAG_LEN: usize = 16;

/// Why a blob could not be sealed or opened. Deliberately says nothing
/// more: KMS answers every such blob with `InvalidCiphertextException`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BlobError {
    /// Not a blob of this format (wrong magic, version or length).
    #[error("not a ciphertext blob of this stand-in")]
    Format,
    /// The tag did not verify: another key, context or a changed byte.
    #[error("the ciphertext does not authenticate under this key and encryption context")]
    Authentication,
    /// The system's random number generator failed.
    #[error("no random numbers")]
    Random,
}

/// A blob whose header has been read; [`ParsedBlob::open`] checks the rest.
pub struct ParsedBlob<'a> {
    header: &'a [u8],
    key_arn: &'a str,
    nonce: [u8; NONCE_LEN],
    sealed: &'a [u8],
}

impl<'a> ParsedBlob<'a> {
    /// Reads the header of `blob`; nothing is authenticated yet.
    pub fn parse(blob: &'a [u8]) -> Result<ParsedBlob<'a>, BlobError> {
        let rest = blob
            .strip_prefix(MAGIC.as_slice())
            .ok_or(BlobError::Format)?;
        let (&version, rest) = rest.split_first().ok_or(BlobError::Format)?;
        if version != VERSION || rest.len() < 2 {
            return Err(BlobError::Format);
        }
        let arn_len = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
        let rest = &rest[2..];
        if rest.len() < arn_len + NONCE_LEN + TAG_LEN {
            return Err(BlobError::Format);
        }
        let key_arn = std::str::from_utf8(&rest[..arn_len]).map_err(|_| BlobError::Format)?;
        let header_len = MAGIC.len() + 1 + 2 + arn_len;
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&rest[arn_len..arn_len + NONCE_LEN]);
        Ok(ParsedBlob {
            header: &blob[..header_len],
            key_arn,
            nonce,
            sealed: &rest[arn_len + NONCE_LEN..],
        })
    }

    /// The ARN of the key the blob says it was made under (unverified
    /// until [`ParsedBlob::open`] succeeds).
    pub fn key_arn(&self) -> &'a str {
        self.key_arn
    }

    /// Decrypts and authenticates under `material` and `context`.
    pub fn open(
        &self,
        material: &KeyMaterial,
        context: &BTreeMap<String, String>,
    ) -> Result<Zeroizing<Vec<u8>>, BlobError> {
        let key = cipher(material)?;
        let aad = aad(self.header, context);
        let mut buf = Zeroizing::new(self.sealed.to_vec());
        let plain_len = key
            .open_in_place(
                Nonce::assume_unique_for_key(self.nonce),
                Aad::from(aad.as_slice()),
                buf.as_mut_slice(),
            )
            .map_err(|_| BlobError::Authentication)?
            .len();
        buf.truncate(plain_len);
        Ok(buf)
    }
}

/// Seals `plaintext` under the key `key_arn` with `material`, bound to
/// `context`.
pub fn seal(
    key_arn: &str,
    material: &KeyMaterial,
    context: &BTreeMap<String, String>,
    plaintext: &[u8],
) -> Result<Vec<u8>, BlobError> {
    let arn_len = u16::try_from(key_arn.len()).map_err(|_| BlobError::Format)?;
    let mut blob = Vec::with_capacity(7 + key_arn.len() + NONCE_LEN + plaintext.len() + TAG_LEN);
    blob.extend_from_slice(MAGIC);
    blob.push(VERSION);
    blob.extend_from_slice(&arn_len.to_be_bytes());
    blob.extend_from_slice(key_arn.as_bytes());
    let header_len = blob.len();
    let mut nonce = [0u8; NONCE_LEN];
    SystemRandom::new()
        .fill(&mut nonce)
        .map_err(|_| BlobError::Random)?;
    let aad = aad(&blob[..header_len], context);
    let mut sealed = plaintext.to_vec();
    cipher(material)?
        .seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad.as_slice()),
            &mut sealed,
        )
        .map_err(|_| BlobError::Format)?;
    blob.extend_from_slice(&nonce);
    blob.extend_from_slice(&sealed);
    Ok(blob)
}

fn cipher(material: &KeyMaterial) -> Result<LessSafeKey, BlobError> {
    UnboundKey::new(&AES_256_GCM, material.bytes())
        .map(LessSafeKey::new)
        .map_err(|_| BlobError::Format)
}

/// The header, then the context as a count and length-prefixed sorted
/// entries: unambiguous, so no two contexts share an encoding.
fn aad(header: &[u8], context: &BTreeMap<String, String>) -> Vec<u8> {
    let mut out = header.to_vec();
    let len = |n: usize| u32::try_from(n).unwrap_or(u32::MAX).to_be_bytes();
    out.extend_from_slice(&len(context.len()));
    for (k, v) in context {
        out.extend_from_slice(&len(k.len()));
        out.extend_from_slice(k.as_bytes());
        out.extend_from_slice(&len(v.len()));
        out.extend_from_slice(v.as_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::test_material;

    const ARN: &str = "arn:aws:kms:eu-west-1:111122223333:key/k1";

    fn ctx(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn round_trip_and_every_change_fails() {
        let m = test_material(1);
        let c = ctx(&[("app", "nacre"), ("env", "dev")]);
        let blob = seal(ARN, &m, &c, b"data key").expect("seal");
        let parsed = ParsedBlob::parse(&blob).expect("parse");
        assert_eq!(parsed.key_arn(), ARN);
        assert_eq!(parsed.open(&m, &c).expect("open").as_slice(), b"data key");

        // Another context, another key.
        let other = ctx(&[("app", "nacre"), ("env", "prod")]);
        assert_eq!(
            parsed.open(&m, &other).err(),
            Some(BlobError::Authentication)
        );
        assert_eq!(
            parsed.open(&m, &ctx(&[])).err(),
            Some(BlobError::Authentication)
        );
        assert_eq!(
            parsed.open(&test_material(2), &c).err(),
            Some(BlobError::Authentication)
        );
        // Contexts whose naive concatenations agree still differ.
        let a = seal(ARN, &m, &ctx(&[("ab", "c")]), b"k").expect("seal");
        let pa = ParsedBlob::parse(&a).expect("parse");
        assert!(pa.open(&m, &ctx(&[("a", "bc")])).is_err());

        // Every single-byte change is caught, in the header or the body.
        for i in 0..blob.len() {
            let mut bad = blob.clone();
            bad[i] ^= 0x01;
            let opened = ParsedBlob::parse(&bad).and_then(|p| p.open(&m, &c));
            assert!(opened.is_err(), "byte {i} changed and still opened");
        }
    }

    #[test]
    fn garbage_and_truncations_are_format_errors() {
        let m = test_material(1);
        let blob = seal(ARN, &m, &ctx(&[]), &[7; 32]).expect("seal");
        for n in 0..blob.len() {
            let r = ParsedBlob::parse(&blob[..n]).and_then(|p| p.open(&m, &ctx(&[])));
            assert!(r.is_err(), "truncated to {n} opened");
        }
        assert_eq!(ParsedBlob::parse(b"").err(), Some(BlobError::Format));
        assert_eq!(
            ParsedBlob::parse(&[0xff; 100]).err(),
            Some(BlobError::Format)
        );
        let mut long_arn = b"NKDB\x01\xff\xff".to_vec();
        long_arn.extend_from_slice(&[b'a'; 64]);
        assert_eq!(ParsedBlob::parse(&long_arn).err(), Some(BlobError::Format));
    }
}
