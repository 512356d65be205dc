//! A deployment that survives its enclaves: a root key sealed by AWS KMS
//! with attestation, and sealed snapshots the host keeps
//! (`--kms-key`, docs/persistence.md).
//!
//! - [`keys`]: the root and the keys derived from it (HKDF per purpose and
//!   guest name), AES-256-GCM sealing bound to names.
//! - [`kms`]: the enclave's own KMS calls (`Recipient`, CMS), through the
//!   host proxy with TLS inside the enclave.
//! - [`host`]: the host's store and its AWS credentials, on the control
//!   link.
//! - [`snapshot`]: what is stored where, and how it is sealed.
//! - [`restore`]: the cold start: the root unwrapped, the newest snapshot
//!   opened and checked, or a clear refusal and a retry.
//! - [`writer`]: a snapshot at every change, off the request path.
//!
//! The host is trusted with nothing: it keeps ciphertext, relays TLS to
//! KMS, and gives credentials that authorise calls but unwrap nothing
//! without the key policy's attestation condition.

mod host;
pub mod keys;
mod kms;
mod objects;
mod restore;
pub mod snapshot;
mod writer;

use std::sync::Arc;

use nacre_kms::call::Endpoint;
use nacre_kms::wire::EncryptionContext;
use nacre_transport::Address;

pub use host::{HostError, HostStore};
pub use kms::{Kms, KmsError, tls as kms_tls};
pub use restore::Restored;
pub use snapshot::SnapshotError;
pub use writer::{Sources, Writer, WriterStats};

use crate::attest::Attester;
use crate::egress::Outbound;

/// The encryption context key naming the deployment.
pub const CONTEXT_DEPLOYMENT: &str = "nacre:deployment";
/// The encryption context key naming what the wrapped key is for.
pub const CONTEXT_PURPOSE: &str = "nacre:purpose";
/// The one purpose wrapped by KMS: everything else is derived from it.
pub const PURPOSE_ROOT: &str = "deployment-root";

/// Why the sealed deployment could not be used.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    /// The host's store did not answer or refused.
    #[error("the store: {0}")]
    Store(#[from] HostError),
    /// KMS did not answer or refused.
    #[error(transparent)]
    Kms(#[from] KmsError),
    /// A snapshot or object that did not open or check.
    #[error("refused a sealed object: {0}")]
    Snapshot(#[from] SnapshotError),
    /// The store holds what cannot be this deployment's.
    #[error("{0}")]
    Refused(String),
    /// Nothing to write yet (the replicated data is catching up); tried
    /// again at the next poll, not a failure.
    #[error("{0}")]
    Pending(String),
}

/// `--kms-key` and where its deployment lives.
#[derive(Debug, Clone)]
pub struct VaultConfig {
    /// The KMS key's ARN.
    pub key: String,
    /// `--kms-endpoint` (or the region's), `--kms-region`.
    pub endpoint: Endpoint,
    /// The deployment's name: `--fqdn-leader` as sync names it, or
    /// `--fqdn` for a single enclave.
    pub deployment: String,
    /// `--control`: the host proxy's store.
    pub control: Address,
}

/// The sealed deployment: its root (once unwrapped or made), the host's
/// store and KMS.
pub struct Vault {
    config: VaultConfig,
    host: Arc<HostStore>,
    kms: Kms,
    /// The root, and the id of its wrapped form (where its manifests are),
    /// once had: set only after its newest manifest opened (or with the
    /// deployment it starts).
    root: std::sync::Mutex<Option<(Arc<keys::Root>, String)>>,
}

impl Vault {
    /// KMS through `outbound` (the host proxy), documents from
    /// `attester`, the store at `config.control`.
    pub fn new(config: VaultConfig, outbound: Outbound, attester: Arc<dyn Attester>) -> Vault {
        let host = Arc::new(HostStore::new(config.control.clone()));
        let kms = Kms::new(
            outbound,
            config.endpoint.clone(),
            config.key.clone(),
            attester,
            host.clone(),
        );
        Vault {
            config,
            host,
            kms,
            root: std::sync::Mutex::new(None),
        }
    }

    /// The deployment's name.
    pub fn deployment(&self) -> &str {
        &self.config.deployment
    }

    /// The encryption context of the wrapped root: KMS opens the blob
    /// only with the same one, so a root of another deployment, or
    /// another wrapped key of this one, is refused.
    pub fn context(&self) -> EncryptionContext {
        EncryptionContext::from([
            (
                CONTEXT_DEPLOYMENT.to_string(),
                self.config.deployment.clone(),
            ),
            (CONTEXT_PURPOSE.to_string(), PURPOSE_ROOT.to_string()),
        ])
    }

    /// The root and its id, once this enclave has it.
    pub fn root(&self) -> Option<(Arc<keys::Root>, String)> {
        self.root.lock().ok()?.clone()
    }

    /// Holds `root`, wrapped as `ciphertext`.
    fn set_root(&self, root: Arc<keys::Root>, ciphertext: &[u8]) -> (Arc<keys::Root>, String) {
        let held = (root, snapshot::root_id(ciphertext));
        if let Ok(mut slot) = self.root.lock() {
            *slot = Some(held.clone());
        }
        held
    }

    /// The host's store.
    pub fn host(&self) -> &HostStore {
        &self.host
    }
}
