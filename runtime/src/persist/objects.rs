//! The guest objects a snapshot names, written once each and removed when
//! no kept manifest names them any more.
//!
//! Components are sealed and written once per guest and content; a
//! guest's data object (its state slot and key-value data) only when that
//! guest's key-value namespace changed or its state did, so one guest's
//! write costs one object, not the deployment. Now and then, the
//! manifests past the newest [`KEEP`] of this root are deleted, with the
//! objects they named (or this enclave wrote) that no kept manifest names:
//! the store stays bounded across restarts and leader changes, and no
//! other root's objects are ever touched.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use nacre_sync::seal::Payload;

use super::keys::Root;
use super::restore::Restored;
use super::snapshot::{
    GuestData, GuestObjects, Manifest, ObjectRef, object_ref, seal_component, seal_data,
    snapshot_name, snapshot_seq, snapshots_of,
};
use super::{PersistError, Vault};
use crate::guests::kv::MemoryKv;
use crate::sync::Blobs;

/// Manifests kept in the store; older ones, and the objects only they
/// named, are deleted.
pub const KEEP: usize = 8;

/// What this enclave knows is in the store.
#[derive(Default)]
pub struct Objects {
    /// Components, by guest and SHA-256.
    components: HashMap<(String, [u8; 32]), ObjectRef>,
    /// Each guest's data object and the SHA-256 of the state in it (zeros:
    /// none).
    data: HashMap<String, ([u8; 32], ObjectRef)>,
    /// The objects each manifest names, by sequence number, as learnt.
    named: BTreeMap<u64, BTreeSet<String>>,
    /// The objects this enclave wrote, until a collection finds them named
    /// by no kept manifest.
    mine: BTreeSet<String>,
}

impl Objects {
    /// What a restored snapshot says is stored.
    pub fn from_restored(restored: Option<&Restored>) -> Objects {
        let Some(r) = restored else {
            return Objects::default();
        };
        Objects {
            components: r.components.clone(),
            data: r.data.clone(),
            named: BTreeMap::from([(r.seq, r.objects.clone())]),
            mine: BTreeSet::new(),
        }
    }

    /// Every guest's objects for `payload` (with `blobs`) and the
    /// key-value data in `kv`, written where they changed: the
    /// namespaces in `dirty` and the guests whose state moved.
    pub async fn write(
        &mut self,
        vault: &Vault,
        root: &Root,
        (payload, blobs): (&Payload, &Blobs),
        kv: &MemoryKv,
        dirty: &BTreeSet<String>,
    ) -> Result<BTreeMap<String, GuestObjects>, PersistError> {
        let mut guests: BTreeMap<String, GuestObjects> = BTreeMap::new();
        for g in &payload.guests {
            let Some((sha, code)) = <[u8; 32]>::try_from(g.component_sha256.as_slice())
                .ok()
                .and_then(|sha| Some((sha, blobs.get(&sha)?)))
            else {
                continue;
            };
            let r = self.component(vault, root, &g.name, sha, code).await?;
            guests
                .entry(g.name.clone())
                .or_default()
                .components
                .insert(hex::encode(sha), r);
        }
        let names: BTreeSet<String> = payload
            .states
            .keys()
            .cloned()
            .chain(kv.namespaces())
            .collect();
        for name in names {
            let state = payload
                .states
                .get(&name)
                .and_then(|sha| <[u8; 32]>::try_from(sha.as_slice()).ok())
                .and_then(|sha| Some((sha, blobs.get(&sha)?)));
            let state_sha = state.map_or([0u8; 32], |(sha, _)| sha);
            let r = match self.data.get(&name) {
                Some((held, r)) if *held == state_sha && !dirty.contains(&name) => r.clone(),
                _ => {
                    let data =
                        GuestData::new(state.map(|(_, b)| b.as_ref()), kv.export_namespace(&name));
                    let sealed = seal_data(root, vault.deployment(), &name, &data)
                        .map_err(|e| sealing(&name, e))?;
                    let r = object_ref(&sealed);
                    vault.host.put(&r.name, &sealed).await?;
                    self.mine.insert(r.name.clone());
                    self.data.insert(name.clone(), (state_sha, r.clone()));
                    r
                }
            };
            guests.entry(name).or_default().data = Some(r);
        }
        Ok(guests)
    }

    async fn component(
        &mut self,
        vault: &Vault,
        root: &Root,
        guest: &str,
        sha: [u8; 32],
        code: &[u8],
    ) -> Result<ObjectRef, PersistError> {
        let id = (guest.to_string(), sha);
        if let Some(r) = self.components.get(&id) {
            return Ok(r.clone());
        }
        let sealed =
            seal_component(root, vault.deployment(), guest, code).map_err(|e| sealing(guest, e))?;
        let r = object_ref(&sealed);
        vault.host.put(&r.name, &sealed).await?;
        self.mine.insert(r.name.clone());
        self.components.insert(id, r.clone());
        Ok(r)
    }

    /// Notes what manifest `seq` names.
    pub fn written(&mut self, seq: u64, manifest: &Manifest) {
        let names = manifest
            .guests
            .values()
            .flat_map(|g| g.components.values().chain(g.data.iter()))
            .map(|r| r.name.clone())
            .collect();
        self.named.insert(seq, names);
    }

    /// Deletes the manifests of root `id` past the newest [`KEEP`], and the
    /// objects they named or this enclave wrote that no kept manifest
    /// names. A manifest this enclave did not write is opened to learn what
    /// it names; if one does not open, nothing is deleted (no deletion on a
    /// doubt). A failure is only logged: what is left is ciphertext the
    /// next pass removes.
    pub async fn collect(&mut self, vault: &Vault, root: &Root, id: &str) {
        if let Err(e) = self.try_collect(vault, root, id).await {
            tracing::warn!(error = %e, "old snapshots not removed this time");
        }
    }

    async fn try_collect(
        &mut self,
        vault: &Vault,
        root: &Root,
        id: &str,
    ) -> Result<(), PersistError> {
        let listed = vault.host.list(&snapshots_of(id)).await?;
        let mut seqs: Vec<u64> = listed.iter().filter_map(|n| snapshot_seq(id, n)).collect();
        seqs.sort_unstable();
        let cut = seqs.len().saturating_sub(KEEP);
        let (old, kept) = seqs.split_at(cut);
        let mut live = BTreeSet::new();
        for &seq in kept {
            live.extend(self.names_of(vault, root, id, seq).await?);
        }
        // Only what this root's old manifests named, or this enclave
        // wrote itself, is ever deleted: never an object of another
        // root's manifests that shares the store.
        let mut candidates = std::mem::take(&mut self.mine);
        for &seq in old {
            candidates.extend(self.names_of(vault, root, id, seq).await?);
        }
        for &seq in old {
            vault.host.delete(&snapshot_name(id, seq)).await?;
            self.named.remove(&seq);
        }
        for name in &candidates {
            if live.contains(name) {
                continue;
            }
            self.components.retain(|_, r| r.name != *name);
            self.data.retain(|_, (_, r)| r.name != *name);
            vault.host.delete(name).await?;
        }
        self.mine = candidates.intersection(&live).cloned().collect();
        Ok(())
    }

    /// What manifest `seq` names, from memory or from the store.
    async fn names_of(
        &mut self,
        vault: &Vault,
        root: &Root,
        id: &str,
        seq: u64,
    ) -> Result<BTreeSet<String>, PersistError> {
        if let Some(names) = self.named.get(&seq) {
            return Ok(names.clone());
        }
        let name = snapshot_name(id, seq);
        let sealed = vault
            .host
            .get_at_most(&name, super::snapshot::MAX_MANIFEST)
            .await?
            .ok_or_else(|| PersistError::Refused(format!("{name} was listed, then absent")))?;
        let manifest = Manifest::open(root, vault.deployment(), (&name, seq), &sealed)?;
        self.written(seq, &manifest);
        Ok(self.named.get(&seq).cloned().unwrap_or_default())
    }
}

fn sealing(guest: &str, e: super::keys::SealError) -> PersistError {
    PersistError::Refused(format!("sealing the objects of {guest}: {e}"))
}
