//! What this enclave holds of its deployment: the key set and its version,
//! the deployment key, the payload as encoded (its hash is what heartbeats
//! compare) and the blobs it names; how a leader makes the next version at
//! each change; and the one decision that starts a deployment's first key
//! set.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use rand::RngCore;

use super::material::{Blobs, Material};
use super::{Node, SyncError};
use nacre_sync::auth::DeploymentKey;
use nacre_sync::order::Holding;
use nacre_sync::seal::{self, Payload};
use nacre_sync::wire::Lineage;

/// The key material this enclave holds.
#[derive(Clone)]
pub(super) struct Held {
    /// The payload, decoded.
    pub payload: Arc<Payload>,
    /// The payload as encoded and sent.
    pub encoded: Arc<Vec<u8>>,
    /// SHA-256 of `encoded`.
    pub hash: [u8; 32],
    /// The deployment key the payload carries.
    pub key: DeploymentKey,
    /// Every blob the payload names.
    pub blobs: Arc<Blobs>,
}

impl Held {
    /// The key set and version, as [`nacre_sync::order`] compares them.
    pub fn holding(&self) -> Holding<'_> {
        Holding {
            lineage: &self.payload.lineage,
            version: self.payload.version,
        }
    }
}

/// What this enclave holds, as operators and tests see it: which key set,
/// at which version, and the hash heartbeats compare (it covers the whole
/// payload: deployment key, certificate, state and guests). Nothing
/// secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySet {
    /// The key set's id (hex).
    pub lineage: String,
    /// Its version held.
    pub version: u64,
    /// SHA-256 of the payload held.
    pub hash: [u8; 32],
}

/// What this enclave holds, and which change of its identity that
/// includes.
pub(super) struct Holdings {
    held: Mutex<Option<Held>>,
    /// The identity's change count included in what this enclave holds.
    identity: AtomicU64,
}

impl Holdings {
    pub(super) fn new() -> Holdings {
        Holdings {
            held: Mutex::new(None),
            identity: AtomicU64::new(0),
        }
    }

    fn get(&self) -> Option<Held> {
        self.held.lock().ok()?.clone()
    }

    fn set(&self, held: Held) {
        if let Ok(mut slot) = self.held.lock() {
            *slot = Some(held);
        }
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Node {
    pub(super) fn held(&self) -> Option<Held> {
        self.holdings.get()
    }

    /// The key set this enclave holds, if any.
    pub fn key_set(&self) -> Option<KeySet> {
        self.held().map(|h| KeySet {
            lineage: h.payload.lineage.id.clone(),
            version: h.payload.version,
            hash: h.hash,
        })
    }

    /// Makes this enclave hold `payload` (encoded as `encoded`, carrying
    /// `key`) with its `blobs`.
    pub(super) fn hold(
        &self,
        payload: Payload,
        encoded: Vec<u8>,
        key: DeploymentKey,
        blobs: Blobs,
    ) {
        let held = Held {
            hash: seal::sha256(&encoded),
            payload: Arc::new(payload),
            encoded: Arc::new(encoded),
            key,
            blobs: Arc::new(blobs),
        };
        if let Some(r) = self.replica() {
            r.hold_key(&held.key);
        }
        self.holdings.set(held);
        self.material.state.held.store(true, Ordering::Release);
    }

    /// Whether a leader that holds nothing, leading since `led_since`, may
    /// start its deployment's first key set now: nothing showed the
    /// deployment for `--sync-genesis-after`, and no delivery is being
    /// applied.
    pub(super) fn may_start_deployment(&self, led_since: Instant) -> bool {
        let quiet = self.designation.quiet(led_since, self.config.genesis_after);
        quiet && self.held().is_none() && !self.offers.applying()
    }

    /// Starts the deployment's first key set from what this enclave holds
    /// now: an explicit decision, logged as such.
    pub(super) fn start_deployment(&self) {
        let mut id = [0u8; 16];
        rand::thread_rng().fill_bytes(&mut id);
        let lineage = Lineage {
            id: hex::encode(id),
            created_ms: now_ms(),
        };
        tracing::warn!(
            lineage = %lineage.id,
            deployment = %self.config.deployment,
            quiet_for = ?self.config.genesis_after,
            "starting this deployment's first key set: no enclave of it showed keys while this one led"
        );
        self.next_version(lineage, 1, &DeploymentKey::generate());
    }

    /// A change on the leader: the next version, sent to every worker.
    pub(super) fn changed(self: &Arc<Self>) {
        let Some(held) = self.held() else {
            return;
        };
        let version = held.payload.version + 1;
        self.next_version(held.payload.lineage.clone(), version, &held.key);
        self.push_all();
    }

    /// Gathers and holds `lineage` at `version`, noting which change of
    /// the identity it includes.
    fn next_version(&self, lineage: Lineage, version: u64, key: &DeploymentKey) {
        self.note_identity();
        let gathered = self
            .material
            .gather(&self.config.deployment, lineage, version, key);
        let encoded = gathered.payload.encode();
        self.hold(gathered.payload, encoded, key.clone(), gathered.blobs);
    }

    /// The identity as it is now is in what this enclave holds (gathered,
    /// or received and applied).
    pub(super) fn note_identity(&self) {
        self.holdings
            .identity
            .store(self.material.identity.version(), Ordering::Relaxed);
    }

    /// An identity change on the leader, unless it is already held: one
    /// [`Node::spread_change`] gathered, or keys this enclave applied.
    pub(super) fn identity_changed(self: &Arc<Self>) {
        if self.material.identity.version() != self.holdings.identity.load(Ordering::Relaxed) {
            self.changed();
        }
    }
}

impl Node {
    /// What this enclave holds now, for the snapshot writer: the payload,
    /// its blobs and its hash.
    pub(crate) fn held_now(&self) -> Option<(Arc<Payload>, Arc<Blobs>, [u8; 32])> {
        self.held()
            .map(|h| (h.payload.clone(), h.blobs.clone(), h.hash))
    }

    /// Makes this enclave hold a sealed snapshot's key material, at
    /// start, before it takes part in the deployment: from then on it is
    /// an enclave holding keys, which starts no other key set and takes
    /// only later versions of this one (so an older snapshot the host
    /// handed it is overtaken by what the live members hold).
    pub(crate) async fn restore(&self, payload: Payload, blobs: Blobs) -> Result<(), SyncError> {
        if payload.deployment != self.config.deployment {
            return Err(SyncError::Malformed(format!(
                "the snapshot is of deployment {:?}, this enclave's is {:?}",
                payload.deployment, self.config.deployment
            )));
        }
        let key = DeploymentKey::from_bytes(&payload.deployment_key)
            .ok_or_else(|| SyncError::Malformed("the snapshot's deployment key".into()))?;
        let named = Material::named(&payload, &blobs)?;
        let encoded = payload.encode();
        let (lineage, version) = (payload.lineage.id.clone(), payload.version);
        self.material
            .apply(payload.clone(), &named, super::material::SEALED)
            .await?;
        self.note_identity();
        self.hold(payload, encoded, key, named);
        tracing::info!(%lineage, version, "holding the key set of the sealed snapshot");
        Ok(())
    }
}
