//! KMS's JSON 1.1 wire format: the two operations Nacre uses, their
//! request and response bodies, and the error body.
//!
//! Field names are KMS's (PascalCase); blobs are standard base64 with
//! padding; optional fields are left out when `None`; unknown fields are
//! ignored on read, so KMS can add fields (it has added `KeyMaterialId`)
//! without breaking Nacre.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

mod error;
mod secret;

pub use error::{ErrorBody, ErrorCode};
pub use secret::SecretBytes;
use secret::{blob, opt_blob};

/// The `content-type` of every KMS request and response.
pub const JSON_CONTENT_TYPE: &str = "application/x-amz-json-1.1";

/// The only `KeyEncryptionAlgorithm` KMS accepts in a [`Recipient`].
pub const KEY_ENCRYPTION_ALGORITHM: &str = "RSAES_OAEP_SHA_256";

/// KMS's encryption context: string pairs bound to the ciphertext as
/// additional authenticated data. Ordered, so requests serialize the same
/// way every time.
pub type EncryptionContext = BTreeMap<String, String>;

/// The KMS operations Nacre calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    /// `Decrypt`: ciphertext blob in, plaintext (or an envelope for the
    /// recipient) out.
    Decrypt,
    /// `GenerateDataKey`: a fresh data key, encrypted under a KMS key and
    /// in plaintext (or in an envelope for the recipient).
    GenerateDataKey,
}

impl Operation {
    /// Every operation, for a stand-in's routing table.
    pub const ALL: [Operation; 2] = [Operation::Decrypt, Operation::GenerateDataKey];

    /// The `x-amz-target` header value.
    pub fn target(&self) -> &'static str {
        match self {
            Operation::Decrypt => "TrentService.Decrypt",
            Operation::GenerateDataKey => "TrentService.GenerateDataKey",
        }
    }

    /// The operation an `x-amz-target` header names, if it is one of ours.
    pub fn from_target(target: &str) -> Option<Operation> {
        Operation::ALL.into_iter().find(|op| op.target() == target)
    }

    /// The IAM action a key policy grants for it.
    pub fn action(&self) -> &'static str {
        match self {
            Operation::Decrypt => "kms:Decrypt",
            Operation::GenerateDataKey => "kms:GenerateDataKey",
        }
    }

    /// The bare operation name, for logs ("Decrypt").
    pub fn name(&self) -> &'static str {
        match self {
            Operation::Decrypt => "Decrypt",
            Operation::GenerateDataKey => "GenerateDataKey",
        }
    }
}

/// `Recipient`: the attestation document whose public key KMS must
/// encrypt its answer to (KMS's `RecipientInfo` shape).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Recipient {
    /// Always [`KEY_ENCRYPTION_ALGORITHM`] today; KMS takes a request
    /// that leaves it out as that one.
    #[serde(default = "default_algorithm")]
    pub key_encryption_algorithm: String,
    /// The signed Nitro attestation document (COSE_Sign1 bytes).
    #[serde(with = "blob")]
    pub attestation_document: Vec<u8>,
}

fn default_algorithm() -> String {
    KEY_ENCRYPTION_ALGORITHM.to_owned()
}

impl Recipient {
    /// A recipient with KMS's only key encryption algorithm.
    pub fn new(attestation_document: Vec<u8>) -> Recipient {
        Recipient {
            key_encryption_algorithm: KEY_ENCRYPTION_ALGORITHM.to_owned(),
            attestation_document,
        }
    }
}

/// The body of a `Decrypt` request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DecryptRequest {
    /// The ciphertext KMS produced (Encrypt or GenerateDataKey's blob).
    #[serde(with = "blob")]
    pub ciphertext_blob: Vec<u8>,
    /// Must equal the context the ciphertext was made with.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub encryption_context: EncryptionContext,
    /// The key expected to have made the ciphertext (recommended).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// Only for asymmetric keys; KMS defaults to `SYMMETRIC_DEFAULT`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption_algorithm: Option<String>,
    /// When set, KMS answers with `CiphertextForRecipient` instead of
    /// `Plaintext`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipient: Option<Recipient>,
    /// Grant tokens for grants not yet eventually consistent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant_tokens: Option<Vec<String>>,
    /// Check permissions without decrypting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dry_run: Option<bool>,
}

/// The body of a `Decrypt` answer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DecryptResponse {
    /// The ARN of the key that decrypted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// The plaintext; absent or empty when a recipient was given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plaintext: Option<SecretBytes>,
    /// CMS EnvelopedData for the recipient: open with [`crate::envelope::open`].
    #[serde(default, skip_serializing_if = "Option::is_none", with = "opt_blob")]
    pub ciphertext_for_recipient: Option<Vec<u8>>,
    /// The algorithm used, usually `SYMMETRIC_DEFAULT`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption_algorithm: Option<String>,
}

/// The body of a `GenerateDataKey` request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct GenerateDataKeyRequest {
    /// The KMS key to encrypt the data key under.
    pub key_id: String,
    /// Bound to the encrypted data key; Decrypt must repeat it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub encryption_context: EncryptionContext,
    /// `AES_256` or `AES_128` (give this or `number_of_bytes`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_spec: Option<String>,
    /// Data key length in bytes, 1 to 1024.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number_of_bytes: Option<u32>,
    /// When set, the plaintext data key comes back as
    /// `CiphertextForRecipient` instead of `Plaintext`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipient: Option<Recipient>,
    /// Grant tokens for grants not yet eventually consistent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant_tokens: Option<Vec<String>>,
    /// Check permissions without generating.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dry_run: Option<bool>,
}

/// The body of a `GenerateDataKey` answer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct GenerateDataKeyResponse {
    /// The ARN of the key that encrypted the data key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// The data key encrypted under the KMS key: store it, Decrypt it later.
    #[serde(with = "blob")]
    pub ciphertext_blob: Vec<u8>,
    /// The plaintext data key; absent or empty when a recipient was given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plaintext: Option<SecretBytes>,
    /// CMS EnvelopedData holding the data key for the recipient.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "opt_blob")]
    pub ciphertext_for_recipient: Option<Vec<u8>>,
}
