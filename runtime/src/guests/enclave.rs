//! The `nacre:enclave` imports guests may use (SPEC §4): their own
//! attestation documents, and the deployment's application state. The
//! bindings also carry `wasi:keyvalue`, implemented in [`super::kv`].

use std::sync::{Arc, Mutex};

use nacre_attestation::{DocumentRequest, GuestBinding};

use super::host::Host;
use super::kv::{KvLimits, KvStore};
use crate::attest::Attester;

pub(crate) mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "nacre:enclave/imports",
        imports: { default: async },
        with: { "wasi:keyvalue/store.bucket": crate::guests::kv::Bucket },
    });
}

pub(crate) use bindings::Imports as EnclaveWorld;
use bindings::nacre::enclave::{attestation, state};

/// Largest `user-data`, `nonce` or `public-key` a guest may ask for; the
/// guest layout wraps user data in a small CBOR map, and the NSM takes at
/// most 1 KiB per field.
const MAX_GUEST_FIELD: usize = 512;
/// Largest application state (`state.put`).
const MAX_STATE: usize = 1 << 20;

/// What every guest instance shares: the attestation provider, the
/// application state (local while multi-enclave sync is off) and the
/// guests' key-value data.
pub struct EnclaveCtx {
    attester: Arc<dyn Attester>,
    state: Mutex<Option<Vec<u8>>>,
    pub(crate) kv: KvStore,
}

impl EnclaveCtx {
    /// Shared context for the process.
    pub fn new(attester: Arc<dyn Attester>, kv: KvLimits) -> Arc<EnclaveCtx> {
        Arc::new(EnclaveCtx {
            attester,
            state: Mutex::new(None),
            kv: KvStore::new(kv),
        })
    }
}

impl attestation::Host for Host {
    async fn request(
        &mut self,
        nonce: Option<Vec<u8>>,
        user_data: Option<Vec<u8>>,
        public_key: Option<Vec<u8>>,
    ) -> Result<Vec<u8>, String> {
        for (name, v) in [
            ("nonce", &nonce),
            ("user-data", &user_data),
            ("public-key", &public_key),
        ] {
            if v.as_ref().is_some_and(|v| v.len() > MAX_GUEST_FIELD) {
                return Err(format!("{name} is over {MAX_GUEST_FIELD} bytes"));
            }
        }
        // The runtime, not the guest, names the code: no guest can ask for
        // a document that claims another guest's hash.
        let binding = GuestBinding {
            guest_sha256: self.code_hash,
            data: user_data,
        };
        let req = DocumentRequest {
            nonce,
            public_key,
            user_data: Some(binding.to_bytes()),
            ..DocumentRequest::default()
        };
        let attester = self.enclave.attester.clone();
        match tokio::task::spawn_blocking(move || attester.attest(req)).await {
            Ok(Ok(doc)) => Ok(doc),
            Ok(Err(e)) => Err(e.to_string()),
            Err(e) => Err(format!("attestation task failed: {e}")),
        }
    }

    async fn code_hash(&mut self) -> Vec<u8> {
        self.code_hash.to_vec()
    }
}

impl state::Host for Host {
    async fn get(&mut self) -> Result<Option<Vec<u8>>, state::StateError> {
        Ok(self.enclave.state.lock().map(|s| s.clone()).unwrap_or(None))
    }

    async fn put(&mut self, value: Vec<u8>) -> Result<(), state::StateError> {
        if value.len() > MAX_STATE {
            return Err(state::StateError::TooLarge);
        }
        if let Ok(mut s) = self.enclave.state.lock() {
            *s = Some(value);
        }
        Ok(())
    }
}
