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
use super::objects::Objects;
use super::restore::Restored;
use super::snapshot::{
    MAX_MANIFEST, Manifest, ROOT, RootRecord, SNAPSHOTS, root_id, snapshot_name,
};
use super::{PersistError, Vault};
use crate::fleet::Role;
use crate::guests::Registry;
use crate::guests::kv::MemoryKv;
use crate::sync::{Blobs, Material, Node, SyncedState};
use crate::tls::Identity;

/// How often the writer looks for changes.
pub const POLL: Duration = Duration::from_millis(50);
/// Snapshots between two removals of old ones.
const COLLECT_EVERY: u64 = 16;
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
    registry: u64,
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
    /// What is in the store.
    objects: Objects,
    /// The wrapped root of a deployment this enclave started, written
    /// (create-only) once its first snapshot is.
    root_pending: Option<RootRecord>,
    /// Whether the sequence numbers in the store were read since this
    /// enclave last began to write.
    caught_up: bool,
    /// Whether this enclave started from a snapshot.
    restored: bool,
    /// Snapshots written since old ones were last removed.
    since_collect: u64,
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
            objects: Objects::from_restored(restored),
            root_pending: None,
            caught_up: false,
            restored: restored.is_some(),
            since_collect: COLLECT_EVERY,
        }
    }

    /// The writer's figures.
    pub fn stats(&self) -> Arc<WriterStats> {
        self.stats.clone()
    }

    fn generation(&self) -> Generation {
        Generation {
            identity: self.sources.identity.version(),
            registry: self.sources.registry.changes_made(),
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
            && self.sources.node.as_ref().is_none_or(|n| n.leads_data())
    }

    /// Writes at every change until `shutdown`, then once more if
    /// anything is left.
    pub async fn run(mut self, shutdown: CancellationToken) {
        // What was restored is in the store already: written again under a
        // higher number, an older snapshot the host handed this enclave
        // would pass for newer than what the live members hold.
        let mut last = self.restored.then(|| self.generation());
        let mut wait = FIRST_BACKOFF;
        loop {
            let stopping = tokio::select! {
                () = tokio::time::sleep(POLL) => false,
                () = shutdown.cancelled() => true,
            };
            if !self.writes() {
                // Leading again later: write above what the leaders
                // meanwhile wrote.
                (last, self.caught_up) = (None, false);
            } else {
                let now = self.generation();
                if last.as_ref() != Some(&now) {
                    self.pending();
                    match self.write().await {
                        Ok(()) => {
                            (last, wait) = (Some(now), FIRST_BACKOFF);
                            self.stats.pending_since_ms.store(0, Ordering::Relaxed);
                        }
                        Err(PersistError::Pending(why)) => {
                            tracing::debug!("sealed snapshot deferred: {why}");
                        }
                        Err(e) => {
                            self.stats.failed.fetch_add(1, Ordering::Relaxed);
                            tracing::error!(error = %e, retry_in = ?wait, "cannot write the sealed snapshot; requests go on, the change is written once this is fixed");
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

    /// The key material to write: what sync holds, or a single enclave's
    /// own gathered now.
    fn gather(&mut self) -> Option<(Payload, Blobs)> {
        if let Some(node) = &self.sources.node {
            let (payload, blobs, _) = node.held_now()?;
            let (mut payload, mut blobs) = ((*payload).clone(), (*blobs).clone());
            if node.replicates() {
                // State moves by the replicated log, not with the key
                // material: seal the slots as they are now.
                payload.states = crate::sync::states(&self.sources.state, &mut blobs);
            }
            return Some((payload, blobs));
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
            replicated: Default::default(),
        };
        let g = material.gather(self.vault.deployment(), lineage.clone(), self.seq + 1, key);
        Some((g.payload, g.blobs))
    }

    /// One snapshot: new objects, the manifest (create-only), then, now
    /// and then, old ones removed.
    async fn write(&mut self) -> Result<(), PersistError> {
        // A new leader of replicated data seals only once it applied
        // everything committed before: never a snapshot above the
        // previous leader's that lacks acknowledged writes.
        if let Some(node) = &self.sources.node
            && !node.data_caught_up().await
        {
            return Err(PersistError::Pending(
                "the replicated data is not caught up yet".into(),
            ));
        }
        // A leader holding no key set yet has nothing to write, and makes
        // no root.
        let Some((payload, blobs)) = self.gather() else {
            return Ok(());
        };
        let (root, id) = self.root(&payload).await?;
        if !self.caught_up {
            // Writing now: above anything an earlier writer wrote.
            self.seq = self.seq.max(self.vault.newest(&id).await?.unwrap_or(0));
            self.caught_up = true;
        }
        let dirty = self.sources.kv.take_dirty();
        let guests = match self
            .objects
            .write(
                &self.vault,
                &root,
                (&payload, &blobs),
                &self.sources.kv,
                &dirty,
            )
            .await
        {
            Ok(g) => g,
            Err(e) => {
                // Those namespaces' changes are not stored yet.
                self.sources.kv.mark_all(dirty);
                return Err(e);
            }
        };
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
        if !self
            .vault
            .host
            .put_new(&snapshot_name(&id, seq), &sealed)
            .await?
        {
            // Another writer has this number: read where the store is, and
            // write above it next time.
            self.caught_up = false;
            return Err(PersistError::Refused(format!(
                "snapshot {seq} is already in the store: another enclave writes this deployment's snapshots"
            )));
        }
        self.seq = seq;
        self.objects.written(seq, &manifest);
        self.stats.seq.store(seq, Ordering::Relaxed);
        self.stats.written.fetch_add(1, Ordering::Relaxed);
        // Forgotten only once stored: a failed put is tried again with the
        // next snapshot, never skipped.
        if let Some(record) = self.root_pending.clone() {
            self.publish_root(&record, seq).await?;
            self.root_pending = None;
        }
        self.since_collect += 1;
        if self.since_collect >= COLLECT_EVERY {
            self.since_collect = 0;
            self.objects.collect(&self.vault, &root, &id).await;
        }
        Ok(())
    }

    /// The root and its id: held; or the store's, if its newest snapshot
    /// is of the key set this enclave holds; or made now, for a store that
    /// holds no deployment at all.
    async fn root(&mut self, payload: &Payload) -> Result<(Arc<Root>, String), PersistError> {
        if let Some(root) = self.vault.root() {
            return Ok(root);
        }
        if let Some(bytes) = self.vault.host.get_at_most(ROOT, MAX_MANIFEST).await? {
            return self.adopt(&bytes, payload).await;
        }
        if let Some(name) = self.vault.host.list(SNAPSHOTS).await?.first() {
            return Err(PersistError::Refused(format!(
                "the store holds snapshots ({name}, ...) but no `root`: the host withheld it; nothing is written until it is back"
            )));
        }
        tracing::warn!(deployment = %self.vault.deployment(), key = %self.vault.config.key, "starting this deployment's sealed root: the store holds none");
        let (ciphertext, root) = self.vault.kms.generate_root(&self.vault.context()).await?;
        let held = self.vault.set_root(Arc::new(root), &ciphertext);
        self.root_pending = Some(RootRecord {
            deployment: self.vault.deployment().to_string(),
            key: self.vault.config.key.clone(),
            ciphertext,
        });
        Ok(held)
    }

    /// Takes the store's root (made by another enclave of this deployment,
    /// a leader before this one) only if its newest snapshot is of the key
    /// set this enclave holds. A root the host hid at start and shows now
    /// is another key set's: writing this enclave's deployment over it
    /// would pass a wipe off as the next version.
    async fn adopt(
        &mut self,
        bytes: &[u8],
        payload: &Payload,
    ) -> Result<(Arc<Root>, String), PersistError> {
        let record = self.vault.root_record(bytes)?;
        let root = Arc::new(
            self.vault
                .kms
                .unwrap_root(&record.ciphertext, &self.vault.context())
                .await?,
        );
        let id = root_id(&record.ciphertext);
        let (manifest, seq) = self.vault.open_newest(&root, &id).await?.ok_or_else(|| {
            PersistError::Refused(
                "the store holds a root but no snapshot of it: the host withheld them; nothing is written until they are back".into(),
            )
        })?;
        let theirs = Payload::decode(&manifest.payload)
            .map_err(|e| PersistError::Refused(format!("snapshot {seq}: {}", e.0)))?;
        if theirs.lineage.id != payload.lineage.id {
            return Err(PersistError::Refused(format!(
                "the store's deployment is key set {} (snapshot {seq}), this enclave holds {}: the host hid the store when this enclave started, or two deployments share it; restart this enclave to start from the store",
                theirs.lineage.id, payload.lineage.id
            )));
        }
        Ok(self.vault.set_root(root, &record.ciphertext))
    }

    /// Writes the wrapped root of the deployment this enclave started,
    /// create-only, now that its first snapshot is stored. If another
    /// enclave's root got there first (two first enclaves at once), that
    /// one is the deployment's: this enclave's snapshots, under its own
    /// root id, are never used, and it says so.
    async fn publish_root(&mut self, record: &RootRecord, seq: u64) -> Result<(), PersistError> {
        let bytes = serde_json::to_vec(record)
            .map_err(|e| PersistError::Refused(format!("the root record: {e}")))?;
        if self.vault.host.put_new(ROOT, &bytes).await? {
            tracing::info!(
                seq,
                "the deployment's sealed root and first snapshot are in the store"
            );
        } else {
            tracing::error!(
                ours = %root_id(&record.ciphertext),
                "another enclave stored this deployment's root first: a cold start will use its snapshots, not this enclave's; restart this enclave to take part in that deployment"
            );
        }
        Ok(())
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
