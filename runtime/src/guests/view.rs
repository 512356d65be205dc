//! What the host functions of `nacre:enclave` and `wasi:keyvalue` need from
//! an instance's store, lent by its data the way wasmtime-wasi-http's
//! `WasiHttpView` lends `wasi:http`'s: who is calling, the services every
//! instance shares, and the instance's resource table.

use std::sync::Arc;

use wasmtime::component::ResourceTable;

use super::kv::{KeyValue, KvLimits, MemoryKv};
use super::state::{LocalState, StateStore};
use super::{GuestConfig, GuestName};
use crate::attest::Attester;

/// Guest documents in progress at once across the process. Guests wait for
/// a slot (within their request's deadline) rather than fail; the public
/// endpoint has its own, separate bound, so clients flooding it never
/// delay a guest.
const GUEST_DOCUMENTS: usize = 4;

/// What every guest instance shares: the attestation provider, the state
/// slots and the key-value data, each behind a trait so a replicated or
/// persistent backend is a new implementation, not an edit.
pub struct EnclaveCtx {
    pub(crate) attester: Arc<dyn Attester>,
    pub(crate) documents: tokio::sync::Semaphore,
    pub(crate) state: Arc<dyn StateStore>,
    pub(crate) kv: Arc<dyn KeyValue>,
}

impl EnclaveCtx {
    /// Shared services from their parts.
    pub fn new(
        attester: Arc<dyn Attester>,
        state: Arc<dyn StateStore>,
        kv: Arc<dyn KeyValue>,
    ) -> Arc<EnclaveCtx> {
        Arc::new(EnclaveCtx {
            attester,
            documents: tokio::sync::Semaphore::new(GUEST_DOCUMENTS),
            state,
            kv,
        })
    }

    /// Today's services: state and key-value data in this enclave's memory.
    pub fn local(attester: Arc<dyn Attester>, kv: KvLimits) -> Arc<EnclaveCtx> {
        EnclaveCtx::new(
            attester,
            Arc::new(LocalState::default()),
            Arc::new(MemoryKv::new(kv)),
        )
    }
}

/// Who is calling: the runtime's record of the instance, never the
/// guest's word. Namespaces and document stamps come from here.
pub struct Caller {
    config: Arc<GuestConfig>,
    code_hash: [u8; 32],
}

impl Caller {
    /// The instance of `config`'s guest whose component hashes to
    /// `code_hash`.
    pub fn new(config: Arc<GuestConfig>, code_hash: [u8; 32]) -> Caller {
        Caller { config, code_hash }
    }

    /// The guest's name: its state slot and key-value namespace.
    pub fn name(&self) -> &GuestName {
        &self.config.name
    }

    /// SHA-256 of the guest's component: stamped into its documents.
    pub fn code_hash(&self) -> [u8; 32] {
        self.code_hash
    }
}

/// What the host functions borrow from a store's data for one call.
pub struct EnclaveCtxView<'a> {
    /// Who is calling.
    pub caller: &'a Caller,
    /// The shared services.
    pub ctx: &'a Arc<EnclaveCtx>,
    /// The instance's resources (key-value buckets).
    pub table: &'a mut ResourceTable,
}

/// A store's data that lends an [`EnclaveCtxView`].
pub trait EnclaveView: Send + 'static {
    /// The view for one call.
    fn enclave(&mut self) -> EnclaveCtxView<'_>;
}
