//! [`SecretBytes`] and the base64 encoding every KMS blob uses on the wire.

use std::fmt;

use base64::Engine as _;
use base64::alphabet::STANDARD;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use serde::{Deserialize, Deserializer, Serializer};
use subtle::ConstantTimeEq as _;
use zeroize::{Zeroize, Zeroizing};

/// KMS writes standard base64 with padding; reading also takes unpadded
/// text, since some stand-ins and hand-written samples drop the `=`.
const BLOB: GeneralPurpose = GeneralPurpose::new(
    &STANDARD,
    GeneralPurposeConfig::new()
        .with_encode_padding(true)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Secret bytes: a data key or a plaintext from KMS.
///
/// Zeroed (with its spare capacity) when dropped; `Debug` shows only the
/// length; equality is constant-time. On the wire it is a base64 string
/// like every other KMS blob.
#[derive(Clone, Default)]
pub struct SecretBytes(Zeroizing<Vec<u8>>);

impl SecretBytes {
    /// Takes ownership of `bytes` (no copy is left behind).
    pub fn new(bytes: Vec<u8>) -> SecretBytes {
        SecretBytes(Zeroizing::new(bytes))
    }

    /// The secret itself; callers should not copy it into unzeroized memory.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// Length in bytes (not secret: KMS sizes are public).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no bytes (KMS sends an empty `Plaintext` when it
    /// sends `CiphertextForRecipient` instead).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<Vec<u8>> for SecretBytes {
    fn from(bytes: Vec<u8>) -> SecretBytes {
        SecretBytes::new(bytes)
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretBytes([REDACTED; {} bytes])", self.0.len())
    }
}

impl PartialEq for SecretBytes {
    fn eq(&self, other: &SecretBytes) -> bool {
        // Lengths are public; contents are compared without early exit.
        self.0.len() == other.0.len() && bool::from(self.0.ct_eq(&other.0))
    }
}

impl Eq for SecretBytes {}

impl serde::Serialize for SecretBytes {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let text = Zeroizing::new(BLOB.encode(self.expose()));
        serializer.serialize_str(&text)
    }
}

impl<'de> Deserialize<'de> for SecretBytes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<SecretBytes, D::Error> {
        let mut text = String::deserialize(deserializer)?;
        let decoded = decode(&text);
        // The base64 text is as secret as the bytes it encodes.
        text.zeroize();
        decoded
            .map(SecretBytes::new)
            .map_err(serde::de::Error::custom)
    }
}

/// Decodes a blob; the error never quotes the input (it may be secret).
fn decode(text: &str) -> Result<Vec<u8>, String> {
    BLOB.decode(text)
        .map_err(|e| format!("invalid base64 blob ({} chars): {e}", text.len()))
}

/// Encodes bytes as a KMS blob (standard base64 with padding).
pub(crate) fn encode(bytes: &[u8]) -> String {
    BLOB.encode(bytes)
}

/// `#[serde(with = "blob")]` for required `Vec<u8>` blobs.
pub(crate) mod blob {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&super::encode(bytes))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(deserializer)?;
        super::decode(&text).map_err(serde::de::Error::custom)
    }
}

/// `#[serde(with = "opt_blob")]` for optional blobs (`null` reads as `None`).
pub(crate) mod opt_blob {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(
        bytes: &Option<Vec<u8>>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match bytes {
            Some(bytes) => serializer.serialize_str(&super::encode(bytes)),
            None => serializer.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Vec<u8>>, D::Error> {
        match Option::<String>::deserialize(deserializer)? {
            Some(text) => super::decode(&text)
                .map(Some)
                .map_err(serde::de::Error::custom),
            None => Ok(None),
        }
    }
}
