//! The `nacre:enclave` imports guests may use (SPEC §4): their own
//! attestation documents, and one application-state slot per guest name.
//!
//! Linked by hand rather than through bindgen's `add_to_linker`: every list
//! a guest passes is measured where it lies in the guest's memory, and
//! refused there when too large, before the host copies a byte of it.
//! Otherwise each call could make the host copy up to the guest's whole
//! memory, outside any budget.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use nacre_attestation::{DocumentRequest, GuestBinding};
use wasmtime::component::{Linker, WasmList};

use super::GuestName;
use super::bindings::nacre::enclave::state::StateError;
use super::host::Host;
use super::kv::{KvLimits, KvStore};
use crate::attest::Attester;

/// Largest `user-data`, `nonce` or `public-key` a guest may ask for; the
/// guest layout wraps user data in a small CBOR map, and the NSM takes at
/// most 1 KiB per field.
const MAX_GUEST_FIELD: usize = 512;
/// Largest application state (`state.put`).
const MAX_STATE: usize = 1 << 20;
/// Guest documents in progress at once across the process. Guests wait for
/// a slot (within their request's deadline) rather than fail; the public
/// endpoint has its own, separate bound, so clients flooding it never
/// delay a guest.
const GUEST_DOCUMENTS: usize = 4;

/// What every guest instance shares: the attestation provider, each guest
/// name's application state (local while multi-enclave sync is off) and
/// the guests' key-value data.
pub struct EnclaveCtx {
    attester: Arc<dyn Attester>,
    documents: tokio::sync::Semaphore,
    /// One slot per guest name: no guest reads or replaces another's.
    states: Mutex<HashMap<GuestName, Arc<[u8]>>>,
    pub(crate) kv: KvStore,
}

impl EnclaveCtx {
    /// Shared context for the process.
    pub fn new(attester: Arc<dyn Attester>, kv: KvLimits) -> Arc<EnclaveCtx> {
        Arc::new(EnclaveCtx {
            attester,
            documents: tokio::sync::Semaphore::new(GUEST_DOCUMENTS),
            states: Mutex::new(HashMap::new()),
            kv: KvStore::new(kv),
        })
    }

    fn state(&self, guest: &GuestName) -> Option<Arc<[u8]>> {
        self.states.lock().ok()?.get(guest).cloned()
    }

    fn set_state(&self, guest: &GuestName, value: Arc<[u8]>) {
        if let Ok(mut all) = self.states.lock() {
            all.insert(guest.clone(), value);
        }
    }
}

/// The bytes of an optional guest list, or an error naming it when it is
/// over `max`: checked in place, copied only when within bounds.
fn bounded(
    store: &wasmtime::StoreContextMut<'_, Host>,
    name: &str,
    list: Option<WasmList<u8>>,
    max: usize,
) -> Result<Option<Vec<u8>>, String> {
    match list {
        None => Ok(None),
        Some(l) if l.len() > max => Err(format!("{name} is over {max} bytes")),
        Some(l) => Ok(Some(l.as_le_slice(store).to_vec())),
    }
}

/// Adds `nacre:enclave/attestation` and `nacre:enclave/state` to `linker`.
pub(crate) fn add_to_linker(linker: &mut Linker<Host>) -> wasmtime::Result<()> {
    let mut attestation = linker.instance("nacre:enclave/attestation@0.1.0")?;
    type Field = Option<WasmList<u8>>;
    attestation.func_wrap_async(
        "request",
        |store, (nonce, user_data, public_key): (Field, Field, Field)| {
            let fields = (|| {
                Ok::<_, String>((
                    bounded(&store, "nonce", nonce, MAX_GUEST_FIELD)?,
                    bounded(&store, "user-data", user_data, MAX_GUEST_FIELD)?,
                    bounded(&store, "public-key", public_key, MAX_GUEST_FIELD)?,
                ))
            })();
            let host = store.data();
            let (enclave, code_hash) = (host.enclave.clone(), host.code_hash);
            Box::new(async move {
                let answer = match fields {
                    Ok((nonce, user_data, public_key)) => {
                        request_document(&enclave, code_hash, nonce, user_data, public_key).await
                    }
                    Err(e) => Err(e),
                };
                Ok((answer,))
            })
        },
    )?;
    attestation.func_wrap("code-hash", |store, (): ()| {
        Ok((store.data().code_hash.to_vec(),))
    })?;

    let mut state = linker.instance("nacre:enclave/state@0.1.0")?;
    state.func_wrap("get", |store, (): ()| {
        let host = store.data();
        let value = host.enclave.state(host.guest_name()).map(|v| v.to_vec());
        Ok((Ok::<_, StateError>(value),))
    })?;
    state.func_wrap("put", |store, (value,): (WasmList<u8>,)| {
        if value.len() > MAX_STATE {
            return Ok((Err(StateError::TooLarge),));
        }
        let bytes: Arc<[u8]> = value.as_le_slice(&store).into();
        let host = store.data();
        host.enclave.set_state(host.guest_name(), bytes);
        Ok((Ok::<(), StateError>(()),))
    })?;
    Ok(())
}

/// A document stamped with the caller's code hash: the runtime, not the
/// guest, names the code, so no guest can ask for one that claims another
/// guest's hash.
async fn request_document(
    enclave: &EnclaveCtx,
    code_hash: [u8; 32],
    nonce: Option<Vec<u8>>,
    user_data: Option<Vec<u8>>,
    public_key: Option<Vec<u8>>,
) -> Result<Vec<u8>, String> {
    let binding = GuestBinding {
        guest_sha256: code_hash,
        data: user_data,
    };
    let req = DocumentRequest {
        nonce,
        public_key,
        user_data: Some(binding.to_bytes()),
        ..DocumentRequest::default()
    };
    let _slot = enclave
        .documents
        .acquire()
        .await
        .map_err(|_| "the runtime is shutting down".to_string())?;
    let attester = enclave.attester.clone();
    match tokio::task::spawn_blocking(move || attester.attest(req)).await {
        Ok(Ok(doc)) => Ok(doc),
        Ok(Err(e)) => Err(e.to_string()),
        Err(e) => Err(format!("attestation task failed: {e}")),
    }
}
