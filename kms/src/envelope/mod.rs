//! CMS EnvelopedData (RFC 5652) as KMS returns it in
//! `CiphertextForRecipient`: [`open`] in the enclave, [`seal`] in the
//! KMS stand-in.
//!
//! The shape: one KeyTransRecipientInfo whose RSA key is the enclave's
//! [`RecipientKey`], key encryption RSAES-OAEP with SHA-256 and
//! MGF1-SHA-256, content encryption AES-256-CBC with PKCS#7 padding. KMS
//! writes it in BER with indefinite lengths and a chunked
//! `encryptedContent`; `seal` writes DER. `open` reads both and refuses
//! every other algorithm by name (and OID), so a downgrade cannot pass
//! silently.

use aws_lc_rs::cipher::{
    AES_256, DecryptingKey, DecryptionContext, EncryptionContext, PaddedBlockEncryptingKey,
    UnboundCipherKey,
};
use aws_lc_rs::digest::{SHA256, digest};
use aws_lc_rs::iv::FixedLength;
use aws_lc_rs::rsa::{OAEP_SHA256_MGF1SHA256, OaepPublicEncryptingKey, PublicEncryptingKey};
use subtle::{ConstantTimeEq as _, ConstantTimeLess as _};
use thiserror::Error;
use zeroize::Zeroizing;

use crate::wire::SecretBytes;
use recipient::RecipientKey;

mod ber;
mod der;
mod oid;
mod parse;
pub mod recipient;

pub use ber::BerError;

/// AES block and CBC IV length.
const BLOCK: usize = 16;
/// AES-256 key length.
pub(crate) const CONTENT_KEY_LEN: usize = 32;
/// Smallest recipient key `seal` accepts (KMS asks for RSA-2048).
const MIN_RSA_BITS: usize = 2048;

/// Why an envelope could not be opened or sealed. Each message names the
/// part of the envelope that was wrong; none carries secret bytes.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum EnvelopeError {
    /// The BER encoding of some part is broken (truncated, bad length, …).
    #[error("malformed CMS envelope: {what}: {source}")]
    Malformed {
        /// The part being read.
        what: &'static str,
        /// What was wrong with its encoding.
        #[source]
        source: BerError,
    },
    /// A part has the wrong ASN.1 type.
    #[error("malformed CMS envelope: {what} should be {expected}, found {found}")]
    Unexpected {
        /// The part being read.
        what: &'static str,
        /// The type it should have.
        expected: &'static str,
        /// The tag found instead.
        found: String,
    },
    /// A required part is absent.
    #[error("malformed CMS envelope: {what} is missing")]
    Missing {
        /// The absent part.
        what: &'static str,
    },
    /// A structure has more elements than it may.
    #[error("malformed CMS envelope: unexpected {found} at the end of {what}")]
    Extra {
        /// The structure.
        what: &'static str,
        /// The tag of the extra element.
        found: String,
    },
    /// Bytes follow the ContentInfo.
    #[error("{count} bytes of trailing data after the CMS envelope")]
    TrailingData {
        /// How many.
        count: usize,
    },
    /// The ContentInfo holds something other than EnvelopedData.
    #[error("CMS content type is {oid}, not EnvelopedData (1.2.840.113549.1.7.3)")]
    NotEnvelopedData {
        /// The content type found.
        oid: String,
    },
    /// A version number other than 0 or 2.
    #[error("{what} version {version} is not supported (only 0 and 2 are)")]
    Version {
        /// The structure.
        what: &'static str,
        /// The version's content octets, in hex.
        version: String,
    },
    /// Zero recipients, or more than one.
    #[error("expected exactly one recipient in the envelope, found {count}")]
    RecipientCount {
        /// How many there were.
        count: usize,
    },
    /// The recipient is not RSA key transport.
    #[error("the recipient is a {kind}, not a KeyTransRecipientInfo (RSA key transport)")]
    UnsupportedRecipient {
        /// The RecipientInfo kind found.
        kind: String,
    },
    /// Key encryption other than RSAES-OAEP (PKCS#1 v1.5 is
    /// 1.2.840.113549.1.1.1).
    #[error("key encryption algorithm {oid} is not RSAES-OAEP (1.2.840.113549.1.1.7)")]
    UnsupportedKeyEncryption {
        /// The algorithm found.
        oid: String,
    },
    /// RSAES-OAEP with a hash or mask generation other than SHA-256/MGF1.
    #[error(
        "RSAES-OAEP {what} is {found}; only SHA-256 (2.16.840.1.101.3.4.2.1) with MGF1 is accepted"
    )]
    UnsupportedOaepHash {
        /// "hash", "MGF1 hash" or "mask generation function".
        what: &'static str,
        /// The algorithm found.
        found: String,
    },
    /// RSAES-OAEP with a non-empty label.
    #[error("RSAES-OAEP pSourceAlgorithm must be pSpecified with an empty label")]
    OaepLabel,
    /// The encrypted content is not id-data.
    #[error("encrypted content type is {oid}, not id-data (1.2.840.113549.1.7.1)")]
    UnsupportedContentType {
        /// The content type found.
        oid: String,
    },
    /// Content encryption other than AES-256-CBC.
    #[error("content encryption algorithm {oid} is not AES-256-CBC (2.16.840.1.101.3.4.1.42)")]
    UnsupportedContentEncryption {
        /// The algorithm found.
        oid: String,
    },
    /// An IV that is not one AES block.
    #[error("AES-256-CBC IV is {len} bytes, not 16")]
    BadIv {
        /// Its length.
        len: usize,
    },
    /// No `encryptedContent` (detached content).
    #[error("the envelope carries no encrypted content (detached content is not supported)")]
    MissingContent,
    /// Ciphertext that cannot be AES-CBC output.
    #[error("encrypted content is {len} bytes, not a positive multiple of the 16-byte AES block")]
    ContentLength {
        /// Its length.
        len: usize,
    },
    /// RSA-OAEP failed: another recipient's envelope, or a corrupted one.
    #[error(
        "RSA-OAEP decryption of the content-encryption key failed: the envelope was sealed for another key, or is corrupted"
    )]
    KeyDecrypt,
    /// The unwrapped content-encryption key is not an AES-256 key.
    #[error("the content-encryption key is {len} bytes, not the 32 of AES-256")]
    ContentKeyLength {
        /// Its length.
        len: usize,
    },
    /// The PKCS#7 padding is wrong: the plaintext is not returned.
    #[error(
        "decrypted content has invalid PKCS#7 padding: wrong content-encryption key or corrupted ciphertext"
    )]
    Padding,
    /// `seal` was given something that is not a usable RSA public key.
    #[error("recipient public key: {reason}")]
    RecipientKey {
        /// What was wrong with it.
        reason: String,
    },
    /// AWS-LC refused an operation that should not fail.
    #[error("cryptographic operation failed: {what}")]
    Crypto {
        /// The operation.
        what: &'static str,
    },
}

/// Opens an envelope KMS sealed for `key`, returning the plaintext.
///
/// Either the whole plaintext comes back or an error does: nothing is
/// returned, or left unzeroed, when the key, the padding or any part of
/// the structure is wrong.
pub fn open(cms: &[u8], key: &RecipientKey) -> Result<SecretBytes, EnvelopeError> {
    let parsed = parse::parse(cms)?;
    let len = parsed.ciphertext.len();
    // Checked before the RSA operation: cheap, and no key is needed to know.
    if len == 0 || len % BLOCK != 0 {
        return Err(EnvelopeError::ContentLength { len });
    }
    let content_key = key.unwrap_content_key(&parsed.encrypted_key)?;
    decrypt_content(&content_key, parsed.iv, parsed.ciphertext)
}

/// AES-256-CBC decryption, then a constant-time PKCS#7 padding check.
fn decrypt_content(
    content_key: &[u8],
    iv: [u8; BLOCK],
    ciphertext: Vec<u8>,
) -> Result<SecretBytes, EnvelopeError> {
    let crypto = |what| move |_| EnvelopeError::Crypto { what };
    let mut buffer = Zeroizing::new(ciphertext);
    let unbound = UnboundCipherKey::new(&AES_256, content_key).map_err(crypto("AES-256 key"))?;
    // Unpadded CBC: the padding is checked below without branching on
    // secret bytes, which aws-lc-rs's padded mode does not promise.
    let cipher = DecryptingKey::cbc(unbound).map_err(crypto("AES-256-CBC key"))?;
    let context = DecryptionContext::Iv128(FixedLength::from(iv));
    let decrypted = cipher
        .decrypt(&mut buffer, context)
        .map_err(crypto("AES-256-CBC decryption"))?
        .len();
    let keep = unpadded_len(&buffer[..decrypted]).ok_or(EnvelopeError::Padding)?;
    let mut plaintext = std::mem::take(&mut *buffer);
    // The padding stays in the spare capacity, which SecretBytes also
    // zeroes on drop.
    plaintext.truncate(keep);
    Ok(SecretBytes::new(plaintext))
}

/// The length without PKCS#7 padding, or `None` if the padding is bad.
/// Constant-time in the plaintext's last block.
fn unpadded_len(blocks: &[u8]) -> Option<usize> {
    let last_block = blocks
        .len()
        .checked_sub(BLOCK)
        .map(|start| &blocks[start..])?;
    let pad = last_block[BLOCK - 1];
    let mut ok = !pad.ct_eq(&0) & pad.ct_lt(&(BLOCK as u8 + 1));
    for (distance, &byte) in last_block.iter().rev().enumerate() {
        // `distance` < 16, so the cast is exact.
        let in_padding = (distance as u8).ct_lt(&pad);
        ok &= !in_padding | byte.ct_eq(&pad);
    }
    bool::from(ok).then(|| blocks.len() - usize::from(pad))
}

/// Seals `plaintext` for the holder of the RSA key in
/// `recipient_spki_der` (SubjectPublicKeyInfo DER, as in an attestation
/// document's `public_key`), the way KMS does: a fresh random AES-256 key
/// and IV, the key wrapped with RSAES-OAEP-SHA-256. Output is DER.
///
/// The recipient identifier is a subjectKeyIdentifier holding the SHA-256
/// of the SPKI (32 bytes, the length KMS uses); `open` does not rely on it.
pub fn seal(recipient_spki_der: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, EnvelopeError> {
    let crypto = |what| move |_| EnvelopeError::Crypto { what };
    let public = PublicEncryptingKey::from_der(recipient_spki_der).map_err(|e| {
        EnvelopeError::RecipientKey {
            reason: format!(
                "not a usable RSA SubjectPublicKeyInfo of at least {MIN_RSA_BITS} bits (AWS-LC: {e})"
            ),
        }
    })?;
    let bits = public.key_size_bits();
    if bits < MIN_RSA_BITS {
        return Err(EnvelopeError::RecipientKey {
            reason: format!("{bits}-bit RSA key; at least {MIN_RSA_BITS} bits are required"),
        });
    }
    let wrapping = OaepPublicEncryptingKey::new(public).map_err(crypto("RSA-OAEP key"))?;

    let mut content_key = Zeroizing::new([0u8; CONTENT_KEY_LEN]);
    aws_lc_rs::rand::fill(&mut *content_key).map_err(crypto("random content key"))?;
    let mut iv = [0u8; BLOCK];
    aws_lc_rs::rand::fill(&mut iv).map_err(crypto("random IV"))?;

    let mut wrapped = vec![0u8; wrapping.ciphertext_size()];
    let wrapped_len = wrapping
        .encrypt(&OAEP_SHA256_MGF1SHA256, &*content_key, &mut wrapped, None)
        .map_err(crypto("RSA-OAEP encryption"))?
        .len();
    wrapped.truncate(wrapped_len);

    // Room for the padding up front: growing would leave a copy of the
    // plaintext in freed memory.
    let mut content = Zeroizing::new(Vec::with_capacity(plaintext.len() + BLOCK));
    content.extend_from_slice(plaintext);
    let unbound = UnboundCipherKey::new(&AES_256, &*content_key).map_err(crypto("AES-256 key"))?;
    let cipher = PaddedBlockEncryptingKey::cbc_pkcs7(unbound).map_err(crypto("AES-256-CBC key"))?;
    // "less safe" only because the caller picks the IV: it is fresh and random.
    cipher
        .less_safe_encrypt(
            &mut *content,
            EncryptionContext::Iv128(FixedLength::from(iv)),
        )
        .map_err(crypto("AES-256-CBC encryption"))?;

    let key_id = digest(&SHA256, recipient_spki_der);
    Ok(der::envelope(key_id.as_ref(), &wrapped, &iv, &content))
}

#[cfg(test)]
mod tests;
