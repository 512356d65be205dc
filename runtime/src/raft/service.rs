//! What guests call: every write committed by a majority before the guest
//! sees success, every read after a read index, on any enclave.
//!
//! A follower forwards its guests' writes to the leader (sealed, with the
//! write's id: a repeat takes effect once) and asks the leader for a read
//! index. With no majority, a call fails within `--kv-write-timeout`,
//! saying whether anything may have been written.

use std::sync::Arc;
use std::time::Duration;

use nacre_sync::raft::RaftCall;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::RaftNode;
use super::types::{Cmd, Member, NodeId, Reply};
use super::wire::WireError;
use crate::guests::GuestName;
use crate::guests::kv::{KeyValue, KvError, KvFuture, KvOp, KvReply, MemoryKv};
use crate::guests::state::{StateError, StateFuture, StateStore};

/// The largest encoded write one log entry may carry (a frame carries
/// 16 MiB; an append batches entries up to 8 MiB).
pub const MAX_ENTRY: usize = 4 << 20;

/// Why a replicated call failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Failed {
    /// Nothing was written: there was no leader with a majority.
    NoMajority,
    /// The write may or may not take effect: it was sent, and no answer
    /// came in time.
    Unknown,
    /// A linearizable read could not be confirmed.
    NoRead,
}

impl Failed {
    fn message(&self, timeout: Duration) -> String {
        match self {
            Failed::NoMajority => {
                "no majority: the deployment cannot commit writes now; nothing was written".into()
            }
            Failed::Unknown => format!(
                "no majority: the write was not confirmed in {}; it may or may not take effect",
                humantime::format_duration(timeout)
            ),
            Failed::NoRead => "no majority: a linearizable read cannot be confirmed now".into(),
        }
    }
}

/// A forwarded write's answer.
#[derive(Debug, Serialize, Deserialize)]
pub(super) enum WriteAnswer {
    /// Committed and applied: the reply.
    Applied(Reply),
    /// This node does not lead; the leader it knows of.
    NotLeader(Option<(NodeId, Member)>),
    /// It failed on the leader.
    Failed(Failed),
}

impl RaftNode {
    /// Waits until a leader is known, at most until `deadline`.
    pub(super) async fn leader_until(&self, deadline: Instant) -> Option<(NodeId, Member)> {
        let mut changes = self.e().raft.metrics();
        loop {
            if let Some(l) = self.leadership().leader {
                return Some(l);
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => {}
                _ => return None,
            }
        }
    }

    /// Whether this leader heard a majority recently enough that a write
    /// proposed now can commit (an isolated openraft leader never steps
    /// down by itself: without this a write would wait out its deadline).
    fn majority_recent(&self) -> bool {
        let metrics = self.e().raft.metrics();
        let m = metrics.borrow();
        self.majority_heard(m.membership_config.membership(), self.settings.election.0)
    }

    /// Proposes `cmd` here, as the leader: its reply once committed.
    pub(super) async fn write_here(&self, cmd: Cmd, deadline: Instant) -> WriteAnswer {
        if !self.majority_recent() {
            return WriteAnswer::Failed(Failed::NoMajority);
        }
        match tokio::time::timeout_at(deadline, self.e().raft.client_write(cmd)).await {
            // Applied here only once every follower whose read lease may
            // run holds it (the machine's gate).
            Ok(Ok(done)) => WriteAnswer::Applied(done.data),
            Ok(Err(e)) => match e.forward_to_leader() {
                // Proposed, then leadership moved: it may still commit.
                Some(f) => WriteAnswer::NotLeader(f.leader_id.zip(f.leader_node.clone())),
                None => WriteAnswer::Failed(Failed::Unknown),
            },
            Err(_) => WriteAnswer::Failed(Failed::Unknown),
        }
    }

    /// Commits `cmd` through whoever leads: its reply, or why not. A
    /// repeat of the same write (after an unanswered forward) takes effect
    /// once, so the loop may resend it.
    pub async fn write(&self, cmd: Cmd) -> Result<Reply, Failed> {
        let deadline = Instant::now() + self.settings.write_timeout;
        let mut sent = false;
        let unsure = |sent: bool| {
            if sent {
                Failed::Unknown
            } else {
                Failed::NoMajority
            }
        };
        loop {
            let Some((leader, member)) = self.leader_until(deadline).await else {
                return Err(unsure(sent));
            };
            let answer = if leader == self.id() {
                self.write_here(cmd.clone(), deadline).await
            } else {
                let left = deadline.saturating_duration_since(Instant::now());
                match self
                    .e()
                    .wire
                    .call(RaftCall::Write, leader, &member, &cmd, left)
                    .await
                {
                    Ok(answer) => answer,
                    Err(WireError::Unreachable(_)) | Err(WireError::Malformed(_)) => {
                        WriteAnswer::Failed(Failed::Unknown)
                    }
                    Err(WireError::Refused(..)) => WriteAnswer::NotLeader(None),
                }
            };
            match answer {
                WriteAnswer::Applied(reply) => return Ok(reply),
                WriteAnswer::Failed(Failed::NoMajority) => return Err(unsure(sent)),
                WriteAnswer::Failed(_) | WriteAnswer::NotLeader(_) => sent = true,
            }
            if Instant::now() + Duration::from_millis(20) >= deadline {
                return Err(unsure(sent));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until this node has applied everything committed before the
    /// call (its read lease, or a read index from the leader).
    pub async fn read_barrier(self: &Arc<Self>) -> Result<(), Failed> {
        let deadline = Instant::now() + self.settings.write_timeout;
        if self.leased_read(deadline).await {
            return Ok(());
        }
        let index = self.read_index(deadline).await?;
        // Most reads find it applied already: no wait, no metrics copy.
        let applied = self.e().machine.applied().map(|l| l.index);
        if index.is_none() || applied >= index {
            return Ok(());
        }
        let left = deadline.saturating_duration_since(Instant::now());
        self.e()
            .raft
            .wait(Some(left))
            .applied_index_at_least(index, "read index")
            .await
            .map(|_| ())
            .map_err(|_| Failed::NoRead)
    }
}

/// `wasi:keyvalue` over the deployment's Raft group.
pub struct ReplicatedKv {
    node: Arc<RaftNode>,
}

impl ReplicatedKv {
    /// Guests' key-value calls through `node`.
    pub fn new(node: Arc<RaftNode>) -> ReplicatedKv {
        ReplicatedKv { node }
    }

    fn local(&self) -> &MemoryKv {
        &self.node.kv
    }

    async fn call_owned(&self, ns: GuestName, op: KvOp) -> Result<KvReply, KvError> {
        let timeout = self.node.settings.write_timeout;
        if self.node.settings.unsafe_local_ack {
            // The deliberately broken store (tests only): no consensus.
            return self.local().apply(&ns, &op, self.local().limits());
        }
        if op.is_read() {
            self.node
                .read_barrier()
                .await
                .map_err(|f| KvError::Other(f.message(timeout)))?;
            return self.local().apply(&ns, &op, self.local().limits());
        }
        // Buckets are never deleted: one that exists here exists on
        // every member that applied as far, and opening it changes nothing.
        if let KvOp::Open { bucket } = &op
            && self.local().has_bucket(&ns, bucket)
        {
            return Ok(KvReply::Unit);
        }
        let op_bound = op.size_bound().map(|b| b + ns.as_str().len());
        let cmd = Cmd::Kv {
            id: self.node.next_write(),
            ns: ns.to_string(),
            op,
            quota: self.local().limits().into(),
        };
        // One entry must fit one frame, or no append could ever carry it
        // and the log would stall behind it: refused before it is
        // proposed, as the guest's error.
        // The namespace, write id and quota add less than a kilobyte.
        let size = match op_bound {
            Some(bound) if bound + 1024 <= MAX_ENTRY => bound,
            _ => super::wire::encode(&cmd).len(),
        };
        if size > MAX_ENTRY {
            return Err(KvError::Other(format!(
                "a write of {size} bytes is over the {MAX_ENTRY} bytes one replicated write may carry: split it"
            )));
        }
        match self.node.write(cmd).await {
            Ok(Reply::Kv(result)) => result,
            Ok(other) => Err(KvError::Other(format!("unexpected reply {other:?}"))),
            Err(f) => Err(KvError::Other(f.message(timeout))),
        }
    }
}

impl KeyValue for ReplicatedKv {
    fn call<'a>(&'a self, ns: &'a GuestName, op: KvOp) -> KvFuture<'a> {
        Box::pin(self.call_owned(ns.clone(), op))
    }

    fn max_bytes(&self) -> u64 {
        self.local().max_bytes()
    }

    fn usage(&self) -> Vec<(String, u64, u64)> {
        self.local().usage()
    }
}

/// `nacre:enclave/state` over the deployment's Raft group: a put on any
/// enclave is committed by a majority; a get reads after a read index.
pub struct ReplicatedState {
    node: Arc<RaftNode>,
    slots: Arc<dyn super::Slots>,
}

impl ReplicatedState {
    /// State calls through `node`, reading `slots` (what the machine
    /// applies to).
    pub fn new(node: Arc<RaftNode>, slots: Arc<dyn super::Slots>) -> ReplicatedState {
        ReplicatedState { node, slots }
    }
}

impl StateStore for ReplicatedState {
    fn get<'a>(&'a self, guest: &'a GuestName) -> StateFuture<'a, Option<Arc<[u8]>>> {
        Box::pin(async move {
            self.node
                .read_barrier()
                .await
                .map_err(|_| StateError::DesignationInProgress)?;
            Ok(self.slots.get(guest))
        })
    }

    fn put<'a>(&'a self, guest: &'a GuestName, value: Arc<[u8]>) -> StateFuture<'a, ()> {
        Box::pin(async move {
            let cmd = Cmd::State {
                id: self.node.next_write(),
                guest: guest.to_string(),
                value: value.to_vec(),
            };
            match self.node.write(cmd).await {
                Ok(Reply::Stored) => Ok(()),
                _ => Err(StateError::DesignationInProgress),
            }
        })
    }
}
