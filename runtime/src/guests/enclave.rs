//! The `nacre:enclave` imports guests may use (docs/guests.md): their own
//! attestation documents, and their application-state slot.
//!
//! Linked by hand rather than through bindgen's `add_to_linker`: every list
//! a guest passes is measured where it lies in the guest's memory, and
//! refused there when too large, before the host copies a byte of it.
//! Otherwise each call could make the host copy up to the guest's whole
//! memory, outside any budget.

use std::sync::Arc;

use nacre_attestation::{DocumentRequest, GuestBinding};
use wasmtime::StoreContextMut;
use wasmtime::component::{Linker, WasmList};

use super::state::{MAX_STATE, StateError};
use super::view::{EnclaveCtx, EnclaveView};

/// Largest `user-data`, `nonce` or `public-key` a guest may ask for; the
/// guest layout wraps user data in a small CBOR map, and the NSM takes at
/// most 1 KiB per field.
const MAX_GUEST_FIELD: usize = 512;
/// The longest raw public key: an uncompressed P-521 point. Every RSA key
/// KMS encrypts to (2048 bits or more, DER or PEM) is longer.
const MAX_RAW_KEY: usize = 133;

/// The bytes of an optional guest list, or an error naming it when it is
/// over `max`: checked in place, copied only when within bounds.
fn bounded<T: 'static>(
    store: &StoreContextMut<'_, T>,
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
pub(crate) fn add_to_linker<T: EnclaveView>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    let mut attestation = linker.instance("nacre:enclave/attestation@0.1.0")?;
    type Field = Option<WasmList<u8>>;
    attestation.func_wrap_async(
        "request",
        |mut store, (nonce, user_data, public_key): (Field, Field, Field)| {
            let fields = (|| {
                Ok::<_, String>((
                    bounded(&store, "nonce", nonce, MAX_GUEST_FIELD)?,
                    bounded(&store, "user-data", user_data, MAX_GUEST_FIELD)?,
                    bounded(&store, "public-key", public_key, MAX_GUEST_FIELD)?,
                ))
            })();
            let view = store.data_mut().enclave();
            let (ctx, code_hash) = (view.ctx.clone(), view.caller.code_hash());
            Box::new(async move {
                let answer = match fields {
                    Ok((nonce, user_data, public_key)) => {
                        request_document(&ctx, code_hash, nonce, user_data, public_key).await
                    }
                    Err(e) => Err(e),
                };
                Ok((answer,))
            })
        },
    )?;
    attestation.func_wrap("code-hash", |mut store, (): ()| {
        Ok((store.data_mut().enclave().caller.code_hash().to_vec(),))
    })?;

    let mut state = linker.instance("nacre:enclave/state@0.1.0")?;
    state.func_wrap("get", |mut store, (): ()| {
        let view = store.data_mut().enclave();
        let value = view.ctx.state.get(view.caller.name());
        Ok((value.map(|v| v.map(|bytes| bytes.to_vec())),))
    })?;
    state.func_wrap("put", |mut store, (value,): (WasmList<u8>,)| {
        if value.len() > MAX_STATE {
            return Ok((Err(StateError::TooLarge),));
        }
        let bytes: Arc<[u8]> = value.as_le_slice(&store).into();
        let view = store.data_mut().enclave();
        Ok((view.ctx.state.put(view.caller.name(), bytes),))
    })?;
    Ok(())
}

/// A document stamped with the caller's code hash: the runtime, not the
/// guest, names the code, so no guest can ask for one that claims another
/// guest's hash.
async fn request_document(
    ctx: &EnclaveCtx,
    code_hash: [u8; 32],
    nonce: Option<Vec<u8>>,
    user_data: Option<Vec<u8>>,
    public_key: Option<Vec<u8>>,
) -> Result<Vec<u8>, String> {
    if ctx.raw_keys_only && public_key.as_ref().is_some_and(|k| k.len() > MAX_RAW_KEY) {
        return Err(format!(
            "public-key: over {MAX_RAW_KEY} bytes, refused in an enclave whose deployment is sealed with KMS (an RSA key, which KMS would encrypt the root to); give a raw key (X25519, Ed25519, an EC point)"
        ));
    }
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
    let _slot = ctx
        .documents
        .acquire()
        .await
        .map_err(|_| "the runtime is shutting down".to_string())?;
    let attester = ctx.attester.clone();
    match tokio::task::spawn_blocking(move || attester.attest(req)).await {
        Ok(Ok(doc)) => Ok(doc),
        Ok(Err(e)) => Err(e.to_string()),
        Err(e) => Err(format!("attestation task failed: {e}")),
    }
}
