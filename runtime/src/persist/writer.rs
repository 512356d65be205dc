//! A sealed snapshot at every change, written off the request path.
//!
//! The writer looks every [`POLL`] at cheap counters (the certificate's
//! version, the guest table, the state slots, the key-value data, what
//! sync holds); when one moved it gathers, seals and writes a new
//! manifest, and the objects that changed. No request waits for it: a
//! guest's write is acknowledged once it is in memory, and reaches the
//! host's store within [`POLL`] plus the time one snapshot takes to write
//! (`nacre_snapshot_lag_seconds` shows it). Only the enclave that writes
//! the deployment's state writes snapshots: a single enclave, or the
//! leader; workers never do.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nacre_sync::auth::DeploymentKey;
use nacre_sync::seal::Payload;
use nacre_sync::wire::Lineage;
use rand::RngCore;
use serde_bytes::ByteBuf;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::keys::Root;
use super::restore::Restored;
use super::snapshot::{
    GuestData, GuestObjects, Manifest, ObjectRef, ROOT, RootRecord, object_ref, seal_component,
    seal_data, snapshot_name,
};
use super::{PersistError, Vault};
use crate::fleet::Role;
use crate::guests::Registry;
use crate::guests::kv::MemoryKv;
use crate::sync::{Blobs, Material, Node, SyncedState};
use crate::tls::Identity;

/// How often the writer looks for changes.
pub const POLL: Duration = Duration::from_millis(50);
/// Manifests kept in the store; older ones, and the objects only they
/// name, are deleted.
const KEEP: usize = 8;
/// The first wait after a failed write, doubled up to [`MOST_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MOST_BACKOFF: Duration = Duration::from_secs(10);

/// What a snapshot is made from.
pub struct Sources {
    /// The certificate, its key and the ACME account.
    pub identity: Arc<Identity>,
    /// The guest table.
    pub registry: Arc<Registry>,
    /// The state slots.
    pub state: Arc<SyncedState>,
    /// The key-value data.
    pub kv: Arc<MemoryKv>,
    /// With `--fqdn-leader`: the key material sync holds.
    pub node: Option<Arc<Node>>,
    /// This enclave's role: only a single enclave or the leader writes.
    pub roles: watch::Receiver<Role>,
}

/// What operators see of the writer, for metrics.
#[derive(Debug, Default)]
pub struct WriterStats {
    /// The newest sequence number written or restored.
    pub seq: AtomicU64,
    /// Snapshots written since start.
    pub written: AtomicU64,
    /// Writes that failed since start.
    pub failed: AtomicU64,
    /// Unix milliseconds of the oldest change not yet in the store (0:
    /// none).
    pub pending_since_ms: AtomicU64,
}

impl WriterStats {
    /// How old the oldest change not yet written is.
    pub fn lag(&self) -> Duration {
        match self.pending_since_ms.load(Ordering::Relaxed) {
            0 => Duration::ZERO,
            since => Duration::from_millis(now_ms().saturating_sub(since)),
        }
    }
}

/// The counters a change moves.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Generation {
    identity: u64,
    registry: usize,
    state: u64,
    kv: u64,
    held: Option<[u8; 32]>,
}

/// The snapshot writer.
pub struct Writer {
    vault: Arc<Vault>,
    sources: Sources,
    stats: Arc<WriterStats>,
    seq: u64,
    /// A single enclave's key set: the restored one, or made with the root.
    own: Option<(Lineage, DeploymentKey)>,
    /// Components already in the store, by guest and SHA-256.
    components: HashMap<(String, [u8; 32]), ObjectRef>,
    /// Each guest's data object in the store, by the hash of its plaintext.
    data: HashMap<String, ([u8; 32], ObjectRef)>,
    /// The wrapped root of a deployment this enclave started, written once
    /// its first snapshot is.
    root_pending: Option<RootRecord>,
    /// The objects each kept manifest names, oldest first.
    kept: VecDeque<(u64, BTreeSet<String>)>,
}

impl Writer {
    /// A writer for `vault`'s deployment, continuing from `restored`.
    pub fn new(vault: Arc<Vault>, sources: Sources, restored: Option<&Restored>) -> Writer {
        let stats = Arc::new(WriterStats::default());
        let seq = restored.map_or(0, |r| r.seq);
        stats.seq.store(seq, Ordering::Relaxed);
        let own = restored.and_then(|r| {
            let key = DeploymentKey::from_bytes(&r.payload.deployment_key)?;
            Some((r.payload.lineage.clone(), key))
        });
        Writer {
            vault,
            sources,
            stats,
            seq,
            own,
            components: restored.map(|r| r.components.clone()).unwrap_or_default(),
            data: HashMap::new(),
            root_pending: None,
            kept: restored
                .map(|r| VecDeque::from([(r.seq, r.objects.clone())]))
                .unwrap_or_default(),
        }
    }

    /// The writer's figures.
    pub fn stats(&self) -> Arc<WriterStats> {
        self.stats.clone()
    }

    fn generation(&self) -> Generation {
        Generation {
            identity: self.sources.identity.version(),
            registry: Arc::as_ptr(&self.sources.registry.snapshot()) as usize,
            state: self.sources.state.generation(),
            kv: self.sources.kv.generation(),
            held: self
                .sources
                .node
                .as_ref()
                .and_then(|n| n.held_now().map(|h| h.2)),
        }
    }

    fn writes(&self) -> bool {
        matches!(*self.sources.roles.borrow(), Role::Alone | Role::Leader)
    }

    /// Writes at every change until `shutdown`, then once more if
    /// anything is left.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut last: Option<Generation> = None;
        let mut wait = FIRST_BACKOFF;
        let mut writing = false;
        loop {
            let stopping = tokio::select! {
                () = tokio::time::sleep(POLL) => false,
                () = shutdown.cancelled() => true,
            };
            if !self.writes() {
                (last, writing) = (None, false);
            } else {
                if !writing {
                    // Leading now: write above anything an earlier leader
                    // wrote.
                    writing = self.catch_up().await;
                }
                let now = self.generation();
                if writing && last.as_ref() != Some(&now) {
                    self.pending();
                    match self.write().await {
                        Ok(()) => {
                            (last, wait) = (Some(now), FIRST_BACKOFF);
                            self.stats.pending_since_ms.store(0, Ordering::Relaxed);
                        }
                        Err(e) => {
                            self.stats.failed.fetch_add(1, Ordering::Relaxed);
                            tracing::error!(error = %e, retry_in = ?wait, "cannot write the sealed snapshot; requests go on, the change is written once the store answers");
                            tokio::time::sleep(wait).await;
                            wait = (wait * 2).min(MOST_BACKOFF);
                        }
                    }
                }
            }
            if stopping {
                return;
            }
        }
    }

    fn pending(&self) {
        let _ = self.stats.pending_since_ms.compare_exchange(
            0,
            now_ms(),
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }

    /// Learns the newest sequence number in the store (another leader's).
    async fn catch_up(&mut self) -> bool {
        match self.vault.newest().await {
            Ok(newest) => {
                self.seq = self.seq.max(newest.unwrap_or(0));
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot list the store's snapshots yet");
                false
            }
        }
    }

    /// The root: held, in the store, or made now for a new deployment.
    async fn root(&mut self) -> Result<Arc<Root>, PersistError> {
        if let Some(root) = self.vault.root() {
            return Ok(root);
        }
        if let Some(bytes) = self.vault.host.get(ROOT).await? {
            let record = self.vault.root_record(&bytes)?;
            let root = self
                .vault
                .kms
                .unwrap_root(&record.ciphertext, &self.vault.context())
                .await?;
            return Ok(self.vault.set_root(root));
        }
        tracing::warn!(deployment = %self.vault.deployment(), key = %self.vault.config.key, "starting this deployment's sealed root: the store holds none");
        let (ciphertext, root) = self.vault.kms.generate_root(&self.vault.context()).await?;
        self.root_pending = Some(RootRecord {
            deployment: self.vault.deployment().to_string(),
            key: self.vault.config.key.clone(),
            ciphertext,
        });
        Ok(self.vault.set_root(root))
    }

    /// The key material to write: what sync holds, or a single enclave's
    /// own gathered now.
    fn gather(&mut self) -> Option<(Payload, Blobs)> {
        if let Some(node) = &self.sources.node {
            let (payload, blobs, _) = node.held_now()?;
            return Some(((*payload).clone(), (*blobs).clone()));
        }
        let (lineage, key) = self.own.get_or_insert_with(|| {
            let mut id = [0u8; 16];
            rand::thread_rng().fill_bytes(&mut id);
            (
                Lineage {
                    id: hex::encode(id),
                    created_ms: now_ms(),
                },
                DeploymentKey::generate(),
            )
        });
        let material = Material {
            identity: self.sources.identity.clone(),
            state: self.sources.state.clone(),
            registry: self.sources.registry.clone(),
        };
        let g = material.gather(self.vault.deployment(), lineage.clone(), self.seq + 1, key);
        Some((g.payload, g.blobs))
    }

    /// One snapshot: new objects, the manifest, then old ones removed.
    async fn write(&mut self) -> Result<(), PersistError> {
        let root = self.root().await?;
        let Some((payload, blobs)) = self.gather() else {
            return Ok(());
        };
        let mut guests: BTreeMap<String, GuestObjects> = BTreeMap::new();
        for g in &payload.guests {
            let Some(code) = <[u8; 32]>::try_from(g.component_sha256.as_slice())
                .ok()
                .and_then(|sha| Some((sha, blobs.get(&sha)?)))
            else {
                continue;
            };
            let r = self.component(&root, &g.name, code.0, code.1).await?;
            guests
                .entry(g.name.clone())
                .or_default()
                .components
                .insert(hex::encode(code.0), r);
        }
        let mut kv = self.sources.kv.export();
        let names: BTreeSet<String> = payload.states.keys().chain(kv.keys()).cloned().collect();
        for name in names {
            let state = payload
                .states
                .get(&name)
                .and_then(|sha| <[u8; 32]>::try_from(sha.as_slice()).ok())
                .and_then(|sha| blobs.get(&sha))
                .map(|b| ByteBuf::from(b.to_vec()));
            let buckets = kv
                .remove(&name)
                .unwrap_or_default()
                .into_iter()
                .map(|(b, keys)| {
                    (
                        b,
                        keys.into_iter()
                            .map(|(k, v)| (k, ByteBuf::from(v)))
                            .collect(),
                    )
                })
                .collect();
            let data = GuestData { state, kv: buckets };
            let r = self.guest_data(&root, &name, &data).await?;
            guests.entry(name).or_default().data = Some(r);
        }
        // With sync, never below the version held: a leader that took the
        // deployment's later version from its workers writes above what
        // an earlier leader of that version wrote.
        let floor = match self.sources.node {
            Some(_) => payload.version,
            None => 0,
        };
        let seq = self.seq.max(floor) + 1;
        let manifest = Manifest {
            deployment: self.vault.deployment().to_string(),
            seq,
            written_ms: now_ms(),
            payload: ByteBuf::from(payload.encode()),
            guests,
        };
        let sealed = manifest
            .seal(&root)
            .map_err(|e| PersistError::Refused(format!("sealing the manifest: {e}")))?;
        self.vault.host.put(&snapshot_name(seq), &sealed).await?;
        self.seq = seq;
        self.stats.seq.store(seq, Ordering::Relaxed);
        self.stats.written.fetch_add(1, Ordering::Relaxed);
        if let Some(record) = self.root_pending.take() {
            let bytes = serde_json::to_vec(&record)
                .map_err(|e| PersistError::Refused(format!("the root record: {e}")))?;
            self.vault.host.put(ROOT, &bytes).await?;
            tracing::info!(
                seq,
                "the deployment's sealed root and first snapshot are in the store"
            );
        }
        self.forget_old(seq, &manifest).await;
        Ok(())
    }

    async fn component(
        &mut self,
        root: &Root,
        guest: &str,
        sha: [u8; 32],
        code: &[u8],
    ) -> Result<ObjectRef, PersistError> {
        let id = (guest.to_string(), sha);
        if let Some(r) = self.components.get(&id) {
            return Ok(r.clone());
        }
        let sealed = seal_component(root, self.vault.deployment(), guest, code)
            .map_err(|e| PersistError::Refused(format!("sealing guest {guest}: {e}")))?;
        let r = object_ref(&sealed);
        self.vault.host.put(&r.name, &sealed).await?;
        self.components.insert(id, r.clone());
        Ok(r)
    }

    async fn guest_data(
        &mut self,
        root: &Root,
        guest: &str,
        data: &GuestData,
    ) -> Result<ObjectRef, PersistError> {
        let mut plain = zeroize::Zeroizing::new(Vec::new());
        let _ = ciborium::into_writer(data, &mut *plain);
        let hash = nacre_sync::seal::sha256(&plain);
        if let Some((h, r)) = self.data.get(guest)
            && *h == hash
        {
            return Ok(r.clone());
        }
        let sealed = seal_data(root, self.vault.deployment(), guest, data)
            .map_err(|e| PersistError::Refused(format!("sealing the data of {guest}: {e}")))?;
        let r = object_ref(&sealed);
        self.vault.host.put(&r.name, &sealed).await?;
        self.data.insert(guest.to_string(), (hash, r.clone()));
        Ok(r)
    }

    /// Deletes the manifests past the newest [`KEEP`] this writer wrote,
    /// and the objects only they named. A failure is only logged: what is
    /// left is ciphertext the next pass removes.
    async fn forget_old(&mut self, seq: u64, manifest: &Manifest) {
        let names: BTreeSet<String> = manifest
            .guests
            .values()
            .flat_map(|g| g.components.values().chain(g.data.iter()))
            .map(|r| r.name.clone())
            .collect();
        self.kept.push_back((seq, names));
        while self.kept.len() > KEEP {
            let Some((old, names)) = self.kept.pop_front() else {
                break;
            };
            let live: BTreeSet<&String> = self.kept.iter().flat_map(|(_, n)| n).collect();
            let mut gone = vec![snapshot_name(old)];
            gone.extend(names.iter().filter(|n| !live.contains(n)).cloned());
            for name in gone {
                // Not to be named again as if it were still stored.
                self.components.retain(|_, r| r.name != name);
                self.data.retain(|_, (_, r)| r.name != name);
                if let Err(e) = self.vault.host.delete(&name).await {
                    tracing::debug!(%name, error = %e, "cannot delete an old snapshot object");
                }
            }
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
