//! The RSA key pair an enclave makes for one KMS call: its public half
//! goes into the attestation document, KMS seals its answer to it, and
//! the private half opens that answer and is then dropped.

use std::fmt;

use aws_lc_rs::encoding::{AsDer, PublicKeyX509Der};
use aws_lc_rs::rsa::{
    KeySize, OAEP_SHA256_MGF1SHA256, OaepPrivateDecryptingKey, PrivateDecryptingKey,
};
use zeroize::Zeroizing;

use super::{CONTENT_KEY_LEN, EnvelopeError};

/// Smallest key accepted from PKCS#8: what KMS asks for.
const MIN_BITS: usize = 2048;

/// An RSA-2048 key pair for RSAES-OAEP-SHA-256.
///
/// No `Debug` derive: the hand-written one shows only the key size. The
/// private key lives inside AWS-LC, whose `OPENSSL_free` zeroes every
/// allocation it frees, so dropping the key erases it.
pub struct RecipientKey {
    private: OaepPrivateDecryptingKey,
    public_der: Vec<u8>,
}

impl RecipientKey {
    /// A fresh RSA-2048 key pair from AWS-LC's generator (which the Nitro
    /// enclave seeds from the NSM's entropy through the kernel).
    pub fn generate() -> Result<RecipientKey, EnvelopeError> {
        let private = PrivateDecryptingKey::generate(KeySize::Rsa2048).map_err(|_| {
            EnvelopeError::Crypto {
                what: "RSA-2048 key generation",
            }
        })?;
        RecipientKey::from_private(private)
    }

    /// Loads a PKCS#8 RSA private key (2048 bits or more).
    ///
    /// For tests and tools that need a key another program also holds
    /// (OpenSSL interop); an enclave uses [`RecipientKey::generate`].
    #[doc(hidden)]
    pub fn from_pkcs8_der(pkcs8: &[u8]) -> Result<RecipientKey, EnvelopeError> {
        let private =
            PrivateDecryptingKey::from_pkcs8(pkcs8).map_err(|e| EnvelopeError::RecipientKey {
                reason: format!(
                    "not a usable PKCS#8 RSA private key of at least {MIN_BITS} bits (AWS-LC: {e})"
                ),
            })?;
        let bits = private.key_size_bits();
        if bits < MIN_BITS {
            return Err(EnvelopeError::RecipientKey {
                reason: format!("{bits}-bit RSA key; at least {MIN_BITS} bits are required"),
            });
        }
        RecipientKey::from_private(private)
    }

    fn from_private(private: PrivateDecryptingKey) -> Result<RecipientKey, EnvelopeError> {
        let public: PublicKeyX509Der<'static> =
            private
                .public_key()
                .as_der()
                .map_err(|_| EnvelopeError::Crypto {
                    what: "encoding the RSA public key",
                })?;
        let public_der = public.as_ref().to_vec();
        let private =
            OaepPrivateDecryptingKey::new(private).map_err(|_| EnvelopeError::Crypto {
                what: "RSA-OAEP key",
            })?;
        Ok(RecipientKey {
            private,
            public_der,
        })
    }

    /// The public key as SubjectPublicKeyInfo DER: what goes in the
    /// attestation document's `public_key`, and what [`crate::envelope::seal`] takes.
    pub fn public_key_der(&self) -> Vec<u8> {
        self.public_der.clone()
    }

    /// The key size in bits.
    pub fn bits(&self) -> usize {
        self.private.key_size_bits()
    }

    /// Unwraps an RSAES-OAEP-SHA-256 encrypted AES-256 key.
    pub(crate) fn unwrap_content_key(
        &self,
        wrapped: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, EnvelopeError> {
        // A ciphertext of another length was made for another modulus.
        if wrapped.len() != self.private.key_size_bytes() {
            return Err(EnvelopeError::KeyDecrypt);
        }
        let mut out = Zeroizing::new(vec![0u8; self.private.min_output_size()]);
        let len = self
            .private
            .decrypt(&OAEP_SHA256_MGF1SHA256, wrapped, &mut out, None)
            .map_err(|_| EnvelopeError::KeyDecrypt)?
            .len();
        out.truncate(len);
        if len != CONTENT_KEY_LEN {
            return Err(EnvelopeError::ContentKeyLength { len });
        }
        Ok(out)
    }
}

impl fmt::Debug for RecipientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecipientKey")
            .field("bits", &self.bits())
            .finish_non_exhaustive()
    }
}
