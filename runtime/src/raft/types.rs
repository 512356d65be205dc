//! What the Raft log carries ([`Cmd`]), what applying an entry answers
//! ([`Reply`]), and who a member is ([`Member`]).
//!
//! Every command is deterministic given the data it is applied to: the
//! quotas it is checked against travel in the command (stamped by the
//! enclave that proposed it), so two enclaves started with different
//! `--kv-max-*` flags during an upgrade still apply the same entry the same
//! way.

use std::fmt;
use std::io::Cursor;

use serde::{Deserialize, Serialize};

use crate::guests::kv::{KvError, KvLimits, KvOp, KvReply};

openraft::declare_raft_types!(
    /// The deployment's Raft: node ids are random per process, a member is
    /// where its sync listener is reached.
    pub TypeConfig:
        D = Cmd,
        R = Reply,
        NodeId = u64,
        Node = Member,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime
);

/// A node id: 64 random bits drawn at process start, never reused.
pub type NodeId = u64;

/// A member of the deployment's Raft group, as the log records it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Where its sync listener is reached through the host
    /// (`--sync-advertise`, said by its host proxy), `HOST:PORT`.
    pub advertise: String,
}

impl fmt::Display for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.advertise)
    }
}

/// Which write a command is: the node that proposed it and its count
/// there. Applying the same id twice answers the first reply again, so a
/// forwarded write the host replays, or a follower retries, takes effect
/// once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct WriteId {
    /// The proposing node.
    pub origin: NodeId,
    /// Its count of writes, from 1.
    pub seq: u64,
}

/// The quotas a key-value write is checked against, as the proposer's
/// flags say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quota {
    /// `--kv-max-keys`.
    pub max_keys: u64,
    /// `--kv-max-bytes`.
    pub max_bytes: u64,
}

impl From<KvLimits> for Quota {
    fn from(l: KvLimits) -> Quota {
        Quota {
            max_keys: l.max_keys,
            max_bytes: l.max_bytes,
        }
    }
}

impl From<Quota> for KvLimits {
    fn from(q: Quota) -> KvLimits {
        KvLimits {
            max_keys: q.max_keys,
            max_bytes: q.max_bytes,
        }
    }
}

/// One entry of the deployment's log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Cmd {
    /// A guest's `wasi:keyvalue` write in its namespace.
    Kv {
        /// Which write.
        id: WriteId,
        /// The guest's name: its namespace.
        ns: String,
        /// The operation.
        op: KvOp,
        /// What it is checked against.
        quota: Quota,
    },
    /// A guest's `nacre:enclave/state` put.
    State {
        /// Which write.
        id: WriteId,
        /// The guest's name: its slot.
        guest: String,
        /// The new state.
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
    },
}

impl Cmd {
    /// Which write this is.
    pub fn id(&self) -> WriteId {
        match self {
            Cmd::Kv { id, .. } | Cmd::State { id, .. } => *id,
        }
    }
}

/// What applying an entry answered.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub enum Reply {
    /// An entry of Raft's own (blank, membership).
    #[default]
    None,
    /// A key-value write's answer, errors (quotas, sizes) included: they
    /// are the guest's to handle, never the log's.
    Kv(Result<KvReply, KvError>),
    /// A state put was stored.
    Stored,
    /// A state put named no valid guest.
    Refused(String),
}
