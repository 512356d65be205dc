//! Any bytes through parsing and full verification must return, never
//! panic or run away. Seeds: the real Nitro documents and a dev document.

#![no_main]

use libfuzzer_sys::fuzz_target;
use nacre_attestation::{Document, GuestBinding, RuntimeBinding, Verifier};

fuzz_target!(|data: &[u8]| {
    // At a time when the real documents' chains are valid, so mutations
    // get past the time checks and reach every later step.
    let _ = Verifier::aws().at(1_695_899_307).verify(data);
    let _ = Document::from_payload(data);
    let _ = RuntimeBinding::from_bytes(data);
    let _ = GuestBinding::from_bytes(data);
});
