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

/// Whether `key` is a raw public key: 32 bytes (X25519, Ed25519), or an EC
/// point in SEC1 form, compressed (`02`/`03`) or not (`04`), on P-256,
/// P-384 or P-521. A guest's document carries the enclave's own
/// measurements, and KMS decides on measurements alone: with an RSA key of
/// the guest's choosing (any DER or PEM key), KMS would wrap the root of
/// any deployment whose key policy names this image, or its signer, to the
/// guest. So only keys KMS cannot encrypt to pass, in every enclave, sealed
/// or not (a signer's policy trusts them all).
fn raw_key(key: &[u8]) -> bool {
    matches!(
        (key.len(), key.first()),
        (32, _) | (33 | 49 | 67, Some(2 | 3)) | (65 | 97 | 133, Some(4))
    )
}

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

    add_state(linker)
}

/// `nacre:enclave/state`, asynchronous: the value is measured and copied
/// out of guest memory first; the future owns only it, the store and the
/// caller's name.
fn add_state<T: EnclaveView>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    let mut state = linker.instance("nacre:enclave/state@0.1.0")?;
    state.func_wrap_async("get", |mut store, (): ()| {
        let view = store.data_mut().enclave();
        let (states, guest) = (view.ctx.state.clone(), view.caller.name().clone());
        Box::new(async move {
            let value = states.get(&guest).await;
            Ok((value.map(|v| v.map(|bytes| bytes.to_vec())),))
        })
    })?;
    state.func_wrap_async("put", |mut store, (value,): (WasmList<u8>,)| {
        let bytes: Option<Arc<[u8]>> =
            (value.len() <= MAX_STATE).then(|| value.as_le_slice(&store).into());
        let view = store.data_mut().enclave();
        let (states, guest) = (view.ctx.state.clone(), view.caller.name().clone());
        Box::new(async move {
            let Some(bytes) = bytes else {
                return Ok((Err(StateError::TooLarge),));
            };
            Ok((states.put(&guest, bytes).await,))
        })
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
    if public_key.as_deref().is_some_and(|k| !raw_key(k)) {
        return Err(
            "public-key: not a raw key; give 32 bytes (X25519, Ed25519) or an EC point in SEC1 form (P-256, P-384, P-521): KMS would encrypt a deployment's root to any other key in a document of this image"
                .into(),
        );
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

#[cfg(test)]
mod tests {
    use super::raw_key;

    #[test]
    fn only_raw_keys_pass() {
        assert!(raw_key(&[7; 32]));
        assert!(
            raw_key(&[0x30; 32]),
            "an Ed25519 key may start with any byte"
        );
        for (len, first) in [
            (33, 2),
            (33, 3),
            (49, 3),
            (67, 2),
            (65, 4),
            (97, 4),
            (133, 4),
        ] {
            let mut k = vec![1u8; len];
            k[0] = first;
            assert!(raw_key(&k), "{len} bytes from {first:02x}");
        }
        // DER keys (an RSA SPKI starts 30 82), PEM, odd sizes, wrong tags.
        let mut der = vec![0x30, 0x82, 0x01, 0x22];
        der.resize(294, 0);
        assert!(!raw_key(&der));
        assert!(!raw_key(b"-----BEGIN PUBLIC KEY-----\nMIIB..."));
        assert!(!raw_key(&[4; 64]));
        assert!(!raw_key(&[5; 65]));
        assert!(!raw_key(&[4; 33]));
        assert!(!raw_key(&[]));
        let mut small_rsa = vec![0x30, 0x7c];
        small_rsa.resize(126, 0);
        assert!(!raw_key(&small_rsa), "an RSA-768 SPKI");
    }
}
