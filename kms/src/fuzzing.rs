//! What a fuzzer drives: any bytes as KMS's answer, read the way the
//! enclave reads it. The host relays KMS's answers (TLS ends in the
//! enclave, but a KMS endpoint the image trusts could still send
//! anything), so every path here must return, never panic or allocate
//! without bound.

use std::sync::OnceLock;

use http::StatusCode;

use crate::call;
use crate::envelope;
use crate::recipient::RecipientKey;
use crate::wire::{DecryptResponse, ErrorBody, GenerateDataKeyResponse};

/// One key for the whole run: making an RSA key for every input would be
/// all the fuzzer did.
fn key() -> Option<&'static RecipientKey> {
    static KEY: OnceLock<Option<RecipientKey>> = OnceLock::new();
    KEY.get_or_init(|| RecipientKey::generate().ok()).as_ref()
}

/// Reads `data` as each answer the enclave takes from KMS: a `Decrypt`
/// and a `GenerateDataKey` answer (and the envelope inside either), an
/// error body, and a bare CMS envelope.
pub fn exercise(data: &[u8]) {
    let Some(key) = key() else {
        return;
    };
    let _ = envelope::open(data, key);
    if let Ok(a) = call::response::<DecryptResponse>(StatusCode::OK, data)
        && let Some(cms) = a.ciphertext_for_recipient
    {
        let _ = envelope::open(&cms, key);
    }
    if let Ok(a) = call::response::<GenerateDataKeyResponse>(StatusCode::OK, data)
        && let Some(cms) = a.ciphertext_for_recipient
    {
        let _ = envelope::open(&cms, key);
    }
    let _ = call::response::<DecryptResponse>(StatusCode::BAD_REQUEST, data);
    let _ = serde_json::from_slice::<ErrorBody>(data).map(|e| e.code());
}
