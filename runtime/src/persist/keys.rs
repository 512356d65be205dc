//! The deployment root and the keys derived from it.
//!
//! The root is 32 random bytes KMS made (`GenerateDataKey`) and unwraps
//! only for an enclave its key policy names. Nothing is encrypted with the
//! root itself: every key used for data is derived from it with HKDF-SHA256
//! (RFC 5869) over the purpose and, for a guest's data, the guest's name, so
//! one guest's objects can never be opened as another's, and a manifest
//! never as guest data. Sealing is AES-256-GCM with a random 96-bit nonce
//! and associated data naming the deployment and what the bytes are:
//! moving sealed bytes to another name, another deployment or another
//! sequence number makes them fail to open. aws-lc-rs provides both (it is
//! already what verifies attestation documents).

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::hkdf::{HKDF_SHA256, KeyType, Salt};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

/// The first byte of every sealed object: the format, so a later one can
/// be told apart.
const FORMAT: u8 = 1;
/// Salt of the extraction step: names this use of the root.
const SALT: &[u8] = b"nacre deployment root v1";

/// What a derived key is for; each is a different key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// The snapshot's manifest: the deployment's certificate, key, ACME
    /// account and guest table.
    Manifest,
    /// One guest's component bytes.
    Component,
    /// One guest's state slot and key-value data.
    GuestData,
}

impl Purpose {
    fn label(self) -> &'static [u8] {
        match self {
            Purpose::Manifest => b"snapshot manifest",
            Purpose::Component => b"guest component",
            Purpose::GuestData => b"guest data",
        }
    }
}

/// Why sealed bytes did not open.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// Too short, or of a format this build does not read.
    #[error("not a sealed object of format {FORMAT} ({0})")]
    Format(&'static str),
    /// The tag did not verify: changed bytes, another key, another name.
    #[error("failed authentication: changed, or sealed for another name or deployment")]
    Authentication,
    /// The system's random source or the cipher failed.
    #[error("the cipher failed: {0}")]
    Random(String),
}

/// The deployment root. Never leaves the enclave, never logged.
pub struct Root(Zeroizing<[u8; 32]>);

impl Root {
    /// The root as KMS gave it: exactly 32 bytes.
    pub fn from_bytes(bytes: &[u8]) -> Option<Root> {
        let bytes: [u8; 32] = bytes.try_into().ok()?;
        Some(Root(Zeroizing::new(bytes)))
    }

    /// The key for `purpose` (and, for guest data, `guest`).
    pub fn derive(&self, purpose: Purpose, guest: Option<&str>) -> SealKey {
        let prk = Salt::new(HKDF_SHA256, SALT).extract(&self.0[..]);
        let guest = guest.unwrap_or("").as_bytes();
        // Length-prefixed parts, so no two (purpose, guest) pairs give the
        // same info.
        let plen = [purpose.label().len() as u8];
        let glen = (guest.len() as u16).to_be_bytes();
        let info = [&plen[..], purpose.label(), &glen[..], guest];
        let mut key = Zeroizing::new([0u8; 32]);
        // `expand` fails only for a length over 255 hash lengths; 32 is
        // one, so both steps always succeed.
        if let Ok(okm) = prk.expand(&info, Len32) {
            let _ = okm.fill(&mut key[..]);
        }
        SealKey(key)
    }
}

struct Len32;

impl KeyType for Len32 {
    fn len(&self) -> usize {
        32
    }
}

/// One derived AES-256-GCM key.
pub struct SealKey(Zeroizing<[u8; 32]>);

impl SealKey {
    fn aead(&self) -> Result<LessSafeKey, SealError> {
        UnboundKey::new(&AES_256_GCM, &self.0[..])
            .map(LessSafeKey::new)
            .map_err(|_| SealError::Random("AES-256-GCM refused the key".into()))
    }

    /// `plaintext` sealed, bound to `aad`: format, nonce, ciphertext, tag.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|e| SealError::Random(e.to_string()))?;
        let mut out = Vec::with_capacity(1 + NONCE_LEN + plaintext.len() + 16);
        out.push(FORMAT);
        out.extend_from_slice(&nonce);
        let mut body = plaintext.to_vec();
        self.aead()?
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut body,
            )
            .map_err(|_| SealError::Authentication)?;
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// The plaintext of `sealed`, if it was sealed with this key and `aad`.
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, SealError> {
        let (&format, rest) = sealed.split_first().ok_or(SealError::Format("empty"))?;
        if format != FORMAT {
            return Err(SealError::Format("unknown format byte"));
        }
        if rest.len() < NONCE_LEN + 16 {
            return Err(SealError::Format("shorter than a nonce and a tag"));
        }
        let (nonce, body) = rest.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| SealError::Format("nonce"))?;
        let mut body = Zeroizing::new(body.to_vec());
        let len = self
            .aead()?
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut body,
            )
            .map_err(|_| SealError::Authentication)?
            .len();
        body.truncate(len);
        Ok(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root(b: u8) -> Root {
        Root::from_bytes(&[b; 32]).expect("32 bytes")
    }

    #[test]
    fn sealed_bytes_open_only_with_their_key_and_name() {
        let r = root(7);
        let k = r.derive(Purpose::GuestData, Some("alpha"));
        let sealed = k.seal(b"name-a", b"secret").expect("seal");
        assert_eq!(&k.open(b"name-a", &sealed).expect("open")[..], b"secret");
        assert!(matches!(
            k.open(b"name-b", &sealed),
            Err(SealError::Authentication)
        ));
        let other_guest = r.derive(Purpose::GuestData, Some("beta"));
        assert!(other_guest.open(b"name-a", &sealed).is_err());
        let other_purpose = r.derive(Purpose::Component, Some("alpha"));
        assert!(other_purpose.open(b"name-a", &sealed).is_err());
        let other_root = root(8).derive(Purpose::GuestData, Some("alpha"));
        assert!(other_root.open(b"name-a", &sealed).is_err());
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 1;
            assert!(k.open(b"name-a", &bad).is_err(), "byte {i} changed");
        }
        for n in 0..sealed.len() {
            assert!(k.open(b"name-a", &sealed[..n]).is_err(), "cut at {n}");
        }
    }

    #[test]
    fn derivation_separates_purpose_from_guest_name() {
        // "guest data" + "" must differ from any split of the same bytes.
        let r = root(1);
        let a = r.derive(Purpose::GuestData, None);
        let b = r.derive(Purpose::GuestData, Some(""));
        let sealed = a.seal(b"x", b"y").expect("seal");
        // Same inputs are the same key (None is the empty name)...
        assert!(b.open(b"x", &sealed).is_ok());
        // ...and a different guest name is not.
        assert!(
            r.derive(Purpose::GuestData, Some("a"))
                .open(b"x", &sealed)
                .is_err()
        );
        assert!(Root::from_bytes(&[0; 31]).is_none());
    }
}
