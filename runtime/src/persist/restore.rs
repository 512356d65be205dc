//! The cold start: with a root in the host's store, this enclave starts
//! only from the deployment's newest snapshot, or not at all.
//!
//! While the store or KMS cannot be reached, KMS refuses, or the newest
//! snapshot fails to open, the enclave says which and why, and tries
//! again: it never starts an empty deployment while a sealed root exists,
//! and never falls back to an older snapshot by itself (that would be the
//! host's rollback, done for it). Only a store with no root at all is a
//! new deployment.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use nacre_sync::seal::{Payload, sha256};

use super::snapshot::{
    MAX_MANIFEST, Manifest, ObjectRef, ROOT, RootRecord, SNAPSHOTS, open_component, open_data,
    root_id, snapshot_name, snapshot_seq, snapshots_of,
};
use super::{PersistError, Vault};
use crate::guests::kv::KvExport;
use crate::sync::Blobs;

/// The first wait before trying again, doubled up to [`MOST_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// The longest wait between two tries.
const MOST_BACKOFF: Duration = Duration::from_secs(30);

/// A snapshot opened and checked, ready to apply.
pub struct Restored {
    /// Its sequence number.
    pub seq: u64,
    /// The key material.
    pub payload: Payload,
    /// The components and state values it names.
    pub blobs: Blobs,
    /// Every guest's key-value data.
    pub kv: KvExport,
    /// The components in the store, by guest and SHA-256, so they are not
    /// written again.
    pub components: HashMap<(String, [u8; 32]), ObjectRef>,
    /// Each guest's data object in the store, with the SHA-256 of the state
    /// it holds, so an unchanged guest's is not written again.
    pub data: HashMap<String, ([u8; 32], ObjectRef)>,
    /// Every object the snapshot names.
    pub objects: BTreeSet<String>,
}

impl Vault {
    /// The newest snapshot of this deployment, or None for a store without
    /// a root (a new deployment). Tries until it can say one or the other.
    pub async fn start(&self) -> Option<Restored> {
        let mut wait = FIRST_BACKOFF;
        loop {
            match self.try_start().await {
                Ok(found) => return found,
                Err(e) => {
                    tracing::error!(
                        deployment = %self.config.deployment,
                        error = %e,
                        retry_in = ?wait,
                        "cannot start from the sealed deployment; no new deployment is started while its root exists"
                    );
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(MOST_BACKOFF);
                }
            }
        }
    }

    /// One try of [`Vault::start`].
    pub async fn try_start(&self) -> Result<Option<Restored>, PersistError> {
        let Some(bytes) = self.host.get_at_most(ROOT, MAX_MANIFEST).await? else {
            self.no_root_no_snapshots().await?;
            return Ok(None);
        };
        let record = self.root_record(&bytes)?;
        tracing::info!(kms = %self.kms.endpoint(), key = %record.key, "asking KMS for the deployment root");
        let root = Arc::new(
            self.kms
                .unwrap_root(&record.ciphertext, &self.context())
                .await?,
        );
        let id = root_id(&record.ciphertext);
        let (manifest, seq) = self.open_newest(&root, &id).await?.ok_or_else(|| {
            PersistError::Refused(format!(
                "the store holds the root of {} but no snapshot: refusing to start empty (the host withheld or deleted them; restore them, or delete `root` to start the deployment anew)",
                self.config.deployment
            ))
        })?;
        let restored = self.load(&root, manifest).await?;
        // Held from now on: this is the deployment's root.
        self.set_root(root, &record.ciphertext);
        tracing::info!(
            seq,
            version = restored.payload.version,
            guests = restored.payload.guests.len(),
            "sealed snapshot opened"
        );
        Ok(Some(restored))
    }

    /// A store without a root is a new deployment only if it holds no
    /// snapshot either: snapshots without their root are a root the host
    /// withheld.
    async fn no_root_no_snapshots(&self) -> Result<(), PersistError> {
        let names = self.host.list(SNAPSHOTS).await?;
        match names.first() {
            None => Ok(()),
            Some(name) => Err(PersistError::Refused(format!(
                "the store holds snapshots ({name}, ...) but no `root`: refusing to start a new deployment over them (the host withheld `root`; restore it, or delete snapshots/ to start anew)"
            ))),
        }
    }

    /// The newest manifest of root `id`, opened, and its number; None when
    /// there is none.
    pub(super) async fn open_newest(
        &self,
        root: &super::keys::Root,
        id: &str,
    ) -> Result<Option<(Manifest, u64)>, PersistError> {
        let Some(seq) = self.newest(id).await? else {
            return Ok(None);
        };
        let name = snapshot_name(id, seq);
        let sealed = self
            .host
            .get_at_most(&name, MAX_MANIFEST)
            .await?
            .ok_or_else(|| PersistError::Refused(format!("{name} was listed, then absent")))?;
        let manifest = Manifest::open(root, &self.config.deployment, (&name, seq), &sealed)?;
        Ok(Some((manifest, seq)))
    }

    /// The wrapped root, checked to be this deployment's and key's.
    pub(super) fn root_record(&self, bytes: &[u8]) -> Result<RootRecord, PersistError> {
        let record: RootRecord = serde_json::from_slice(bytes).map_err(|e| {
            PersistError::Refused(format!(
                "the store's `{ROOT}` is not a wrapped root ({e}); restore it from a backup of the store"
            ))
        })?;
        if record.deployment != self.config.deployment {
            return Err(PersistError::Refused(format!(
                "the store's root is of deployment {:?}, this enclave's is {:?}: the host gave another deployment's store",
                record.deployment, self.config.deployment
            )));
        }
        if record.key != self.config.key {
            return Err(PersistError::Refused(format!(
                "the store's root was wrapped by KMS key {}, this enclave's --kms-key is {}",
                record.key, self.config.key
            )));
        }
        Ok(record)
    }

    /// The highest sequence number among the manifests of root `id`.
    pub(super) async fn newest(&self, id: &str) -> Result<Option<u64>, PersistError> {
        let names = self.host.list(&snapshots_of(id)).await?;
        Ok(names.iter().filter_map(|n| snapshot_seq(id, n)).max())
    }

    /// Reads and opens every object `manifest` names.
    async fn load(
        &self,
        root: &super::keys::Root,
        manifest: Manifest,
    ) -> Result<Restored, PersistError> {
        let deployment = &self.config.deployment;
        let payload = Payload::decode(&manifest.payload).map_err(|e| {
            PersistError::Refused(format!(
                "snapshot {}: its key material: {}",
                manifest.seq, e.0
            ))
        })?;
        let mut blobs = Blobs::new();
        let mut kv = KvExport::new();
        let mut components = HashMap::new();
        let mut data = HashMap::new();
        let mut objects = BTreeSet::new();
        for (guest, held) in &manifest.guests {
            for wanted in held.components.values() {
                let sealed = self.fetch(wanted).await?;
                let code = open_component(root, deployment, guest, wanted, &sealed)?;
                let code = bytes::Bytes::from(code.to_vec());
                let sha = sha256(&code);
                blobs.insert(sha, code);
                components.insert((guest.clone(), sha), wanted.clone());
                objects.insert(wanted.name.clone());
            }
            if let Some(wanted) = &held.data {
                objects.insert(wanted.name.clone());
                let sealed = self.fetch(wanted).await?;
                let (state, buckets) =
                    open_data(root, deployment, guest, wanted, &sealed)?.into_parts();
                let mut state_sha = [0u8; 32];
                if let Some(state) = state {
                    let state = bytes::Bytes::from(state);
                    state_sha = sha256(&state);
                    blobs.insert(state_sha, state);
                }
                data.insert(guest.clone(), (state_sha, wanted.clone()));
                kv.insert(guest.clone(), buckets);
            }
        }
        Ok(Restored {
            seq: manifest.seq,
            payload,
            blobs,
            kv,
            components,
            data,
            objects,
        })
    }

    async fn fetch(&self, wanted: &ObjectRef) -> Result<Vec<u8>, PersistError> {
        let name = &wanted.name;
        self.host
            .get_at_most(name, wanted.size)
            .await?
            .ok_or_else(|| {
                PersistError::Refused(format!(
                    "{name}, which the newest snapshot names, is not in the store"
                ))
            })
    }
}
