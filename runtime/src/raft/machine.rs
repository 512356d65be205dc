//! The replicated state machine: guests' key-value data and state slots,
//! applied from the committed log in the same order on every enclave.
//!
//! The data lives where the rest of the runtime already reads it (the
//! enclave's [`MemoryKv`] and state slots), so the sealed-snapshot writer
//! and the metrics see the replicated data without knowing of Raft. Every
//! change to it goes through [`Machine`]'s lock, which is what makes a
//! snapshot (taken under the same lock) the data at exactly one log id.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Cursor;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use openraft::storage::RaftStateMachine;
use openraft::{
    Entry, EntryPayload, LogId, RaftSnapshotBuilder, Snapshot, SnapshotMeta, StorageError,
    StorageIOError, StoredMembership,
};
use serde::{Deserialize, Serialize};

use super::leases::Book;

use super::types::{Cmd, Member, NodeId, Reply, TypeConfig, WriteId};
use crate::guests::GuestName;
use crate::guests::kv::{KvError, KvExport, MemoryKv};

type StorageResult<T> = Result<T, StorageError<NodeId>>;

/// Replies kept per proposing node, to answer a repeated write.
const DEDUP_WINDOW: usize = 1024;
/// Proposing nodes remembered (a node is a process: restarts add one).
const DEDUP_ORIGINS: usize = 256;
/// Removed node ids remembered, never to be let in again.
const REMOVED_KEPT: usize = 4096;

/// The state slots, wherever the runtime keeps them.
pub trait Slots: Send + Sync {
    /// Replaces `guest`'s slot: a committed write, whatever this
    /// enclave's role.
    fn store(&self, guest: &GuestName, value: Arc<[u8]>);
    /// `guest`'s slot.
    fn get(&self, guest: &GuestName) -> Option<Arc<[u8]>>;
    /// Every slot.
    fn export(&self) -> BTreeMap<String, Arc<[u8]>>;
    /// Replaces every slot.
    fn import(&self, slots: BTreeMap<String, Vec<u8>>);
}

/// Replies to recent writes of one proposing node.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Recent {
    /// The log index of its latest write, to forget the quietest first.
    last_index: u64,
    replies: BTreeMap<u64, Reply>,
}

/// What the machine holds besides the guests' data.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Meta {
    applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, Member>,
    recent: BTreeMap<NodeId, Recent>,
    removed: BTreeSet<NodeId>,
}

/// A snapshot's bytes (CBOR): the data at `meta.applied`.
#[derive(Serialize, Deserialize)]
struct Image {
    meta: Meta,
    kv: KvExport,
    slots: BTreeMap<String, serde_bytes::ByteBuf>,
}

struct Inner {
    meta: Meta,
    snapshot: Option<(SnapshotMeta<NodeId, Member>, Vec<u8>)>,
    built: u64,
}

/// The state machine; cheap to clone, every clone the same machine.
#[derive(Clone)]
pub struct Machine {
    inner: Arc<Mutex<Inner>>,
    kv: Arc<MemoryKv>,
    slots: Arc<dyn Slots>,
    /// What an entry waits for before it is applied here: every follower
    /// whose read lease may run holds it (see [`super::leases`]).
    gate: Arc<Book>,
}

fn poisoned() -> StorageError<NodeId> {
    StorageIOError::write_state_machine(&std::io::Error::other("the machine's lock is poisoned"))
        .into()
}

impl Machine {
    /// A machine over the enclave's key-value data and state slots,
    /// applying an entry once `gate` lets it be revealed.
    pub fn new(kv: Arc<MemoryKv>, slots: Arc<dyn Slots>, gate: Arc<Book>) -> Machine {
        Machine {
            inner: Arc::new(Mutex::new(Inner {
                meta: Meta::default(),
                snapshot: None,
                built: 0,
            })),
            kv,
            slots,
            gate,
        }
    }

    // openraft's StorageError is what its traits return; boxing it here
    // would only be unboxed again at every call.
    #[allow(clippy::result_large_err)]
    fn lock(&self) -> StorageResult<MutexGuard<'_, Inner>> {
        self.inner.lock().map_err(|_| poisoned())
    }

    /// The last applied entry.
    pub fn applied(&self) -> Option<LogId<NodeId>> {
        self.inner.lock().ok().and_then(|g| g.meta.applied)
    }

    /// Whether `id` was a member once and was removed: it never comes back
    /// (a restarted enclave joins under a new id).
    pub fn was_removed(&self, id: NodeId) -> bool {
        self.inner
            .lock()
            .map(|g| g.meta.removed.contains(&id))
            .unwrap_or(true)
    }

    /// Empties a pristine machine's data before it joins a group.
    // openraft's StorageError is what its traits return; boxing it here
    // would only be unboxed again at every call.
    #[allow(clippy::result_large_err)]
    pub fn wipe(&self) -> StorageResult<()> {
        let g = self.lock()?;
        if g.meta.applied.is_some() {
            return Ok(());
        }
        self.kv.import(KvExport::new());
        self.slots.import(BTreeMap::new());
        Ok(())
    }

    fn apply_cmd(&self, meta: &mut Meta, index: u64, cmd: Cmd) -> Reply {
        let id = cmd.id();
        if let Some(done) = repeated(meta, id) {
            return done;
        }
        let reply = match cmd {
            Cmd::Kv { ns, op, quota, .. } => match ns.parse::<GuestName>() {
                Ok(name) => Reply::Kv(self.kv.apply(&name, &op, quota.into())),
                Err(_) => Reply::Kv(Err(KvError::Other(format!("{ns:?} is not a guest name")))),
            },
            Cmd::State { guest, value, .. } => match guest.parse::<GuestName>() {
                Ok(name) => {
                    self.slots.store(&name, Arc::from(value));
                    Reply::Stored
                }
                Err(_) => Reply::Refused(format!("{guest:?} is not a guest name")),
            },
        };
        remember(meta, index, id, reply.clone());
        reply
    }

    fn image(&self, meta: &Meta) -> Image {
        Image {
            meta: meta.clone(),
            kv: self.kv.export(),
            slots: self
                .slots
                .export()
                .into_iter()
                .map(|(k, v)| (k, serde_bytes::ByteBuf::from(v.to_vec())))
                .collect(),
        }
    }
}

/// The reply `id` got, when it was applied before.
fn repeated(meta: &Meta, id: WriteId) -> Option<Reply> {
    let recent = meta.recent.get(&id.origin)?;
    if let Some(reply) = recent.replies.get(&id.seq) {
        return Some(reply.clone());
    }
    let oldest = recent.replies.keys().next().copied()?;
    (id.seq < oldest && recent.replies.len() >= DEDUP_WINDOW).then(|| {
        Reply::Kv(Err(KvError::Other(format!(
            "write {} of node {:016x} was applied long ago; its answer is no longer kept",
            id.seq, id.origin
        ))))
    })
}

fn remember(meta: &mut Meta, index: u64, id: WriteId, reply: Reply) {
    // Kept for repeats only: an error's text need not be whole.
    let reply = match reply {
        Reply::Kv(Err(KvError::Other(why))) if why.len() > 200 => {
            let mut cut = 200;
            while !why.is_char_boundary(cut) {
                cut -= 1;
            }
            Reply::Kv(Err(KvError::Other(format!("{}…", &why[..cut]))))
        }
        other => other,
    };
    let recent = meta.recent.entry(id.origin).or_default();
    recent.last_index = index;
    recent.replies.insert(id.seq, reply);
    while recent.replies.len() > DEDUP_WINDOW {
        recent.replies.pop_first();
    }
    while meta.recent.len() > DEDUP_ORIGINS {
        // Deterministic: every enclave forgets the same node, one that is
        // no member any more first (a member's held-back write could
        // otherwise come back and apply twice).
        let members: BTreeSet<NodeId> = meta.membership.nodes().map(|(id, _)| *id).collect();
        let quietest = meta
            .recent
            .iter()
            .min_by_key(|(origin, r)| (members.contains(origin), r.last_index, **origin))
            .map(|(origin, _)| *origin);
        match quietest {
            Some(origin) => meta.recent.remove(&origin),
            None => break,
        };
    }
}

fn note_membership(
    meta: &mut Meta,
    log_id: LogId<NodeId>,
    m: openraft::Membership<NodeId, Member>,
) {
    let before: BTreeSet<NodeId> = meta.membership.nodes().map(|(id, _)| *id).collect();
    let after: BTreeSet<NodeId> = m.nodes().map(|(id, _)| *id).collect();
    meta.removed.extend(before.difference(&after));
    while meta.removed.len() > REMOVED_KEPT {
        meta.removed.pop_first();
    }
    meta.membership = StoredMembership::new(Some(log_id), m);
}

impl RaftStateMachine<TypeConfig> for Machine {
    type SnapshotBuilder = Machine;

    async fn applied_state(
        &mut self,
    ) -> StorageResult<(Option<LogId<NodeId>>, StoredMembership<NodeId, Member>)> {
        let g = self.lock()?;
        Ok((g.meta.applied, g.meta.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> StorageResult<Vec<Reply>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<_> = entries.into_iter().collect();
        // On a leader, nothing enters the data its guests read until
        // every lease holder has it: waits at most for one lease to run
        // out (a follower that stops answering gets no new grant).
        if let Some(last) = entries.last() {
            let wait = tokio::time::Instant::now() + Duration::from_secs(60);
            if !self.gate.reveal(Some(last.log_id.index), wait).await {
                tracing::error!(
                    index = last.log_id.index,
                    "raft: a lease holder held an entry back for a minute"
                );
            }
        }
        let mut g = self.lock()?;
        let mut replies = Vec::new();
        for entry in entries {
            g.meta.applied = Some(entry.log_id);
            let reply = match entry.payload {
                EntryPayload::Blank => Reply::None,
                EntryPayload::Membership(m) => {
                    note_membership(&mut g.meta, entry.log_id, m);
                    Reply::None
                }
                EntryPayload::Normal(cmd) => self.apply_cmd(&mut g.meta, entry.log_id.index, cmd),
            };
            replies.push(reply);
        }
        Ok(replies)
    }

    async fn get_snapshot_builder(&mut self) -> Machine {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> StorageResult<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, Member>,
        data: Box<Cursor<Vec<u8>>>,
    ) -> StorageResult<()> {
        let bytes = data.into_inner();
        let image: Image = ciborium::from_reader(bytes.as_slice())
            .map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), &e))?;
        let mut g = self.lock()?;
        self.kv.import(image.kv);
        // Whatever this enclave seals next must hold all of it.
        self.kv.mark_all(self.kv.namespaces().into_iter().collect());
        self.slots.import(
            image
                .slots
                .into_iter()
                .map(|(k, v)| (k, v.into_vec()))
                .collect(),
        );
        g.meta = image.meta;
        g.snapshot = Some((meta.clone(), bytes));
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> StorageResult<Option<Snapshot<TypeConfig>>> {
        let g = self.lock()?;
        Ok(g.snapshot.clone().map(|(meta, bytes)| Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(bytes)),
        }))
    }
}

impl RaftSnapshotBuilder<TypeConfig> for Machine {
    async fn build_snapshot(&mut self) -> StorageResult<Snapshot<TypeConfig>> {
        // Copied under the lock (no entry applies meanwhile), encoded
        // outside it.
        let (image, built) = {
            let mut g = self.lock()?;
            g.built += 1;
            (self.image(&g.meta), g.built)
        };
        let mut bytes = Vec::new();
        ciborium::into_writer(&image, &mut bytes)
            .map_err(|e| StorageIOError::read_state_machine(&e))?;
        let meta = SnapshotMeta {
            last_log_id: image.meta.applied,
            last_membership: image.meta.membership.clone(),
            snapshot_id: format!(
                "{}-{built}",
                image.meta.applied.map(|l| l.index).unwrap_or(0)
            ),
        };
        self.lock()?.snapshot = Some((meta.clone(), bytes.clone()));
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(bytes)),
        })
    }
}
