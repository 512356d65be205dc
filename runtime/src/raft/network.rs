//! openraft's network, over [`Wire`]: append, vote and snapshot chunks as
//! sealed calls to the peer's `/enclave/raft/*`.

use std::sync::Arc;
use std::time::Duration;

use nacre_sync::raft::RaftCall;
use openraft::LogId;
use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError,
    Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::leases::{Grant, Leasing};
use super::types::{Member, NodeId, TypeConfig};
use super::wire::{Wire, WireError};

/// Entries sent in one append at most; a larger batch is refused by the
/// sender here and openraft sends fewer.
const MAX_APPEND_BYTES: usize = 8 << 20;

/// The shortest deadline a message gets.
const MIN_TTL: Duration = Duration::from_millis(1000);

/// Hands openraft a connection per peer: a clone of the wire.
pub struct Network {
    pub(super) wire: Arc<Wire>,
    pub(super) leasing: Arc<Leasing>,
}

/// One peer, as openraft addresses it.
pub struct Peer {
    wire: Arc<Wire>,
    leasing: Arc<Leasing>,
    to: NodeId,
    member: Member,
}

/// An append as it travels: openraft's request, and maybe a read lease.
#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
pub(super) struct Append {
    pub rpc: AppendEntriesRequest<TypeConfig>,
    pub grant: Option<Grant>,
}

/// An append's answer: the receiver's, and its token if it asks for
/// read leases.
#[derive(Serialize, Deserialize)]
pub(super) struct Appended {
    pub answer: Remote<AppendEntriesResponse<NodeId>, openraft::error::Infallible>,
    pub token: Option<u64>,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: NodeId, node: &Member) -> Peer {
        Peer {
            wire: self.wire.clone(),
            leasing: self.leasing.clone(),
            to: target,
            member: node.clone(),
        }
    }
}

/// An answer of the receiver's Raft: its response or its error.
pub(super) type Remote<T, E> = Result<T, RaftError<NodeId, E>>;

impl Peer {
    async fn send<Q, T, E>(
        &self,
        call: RaftCall,
        body: &Q,
        ttl: Duration,
    ) -> Result<T, RPCError<NodeId, Member, RaftError<NodeId, E>>>
    where
        Q: Serialize,
        T: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let answer: Result<Remote<T, E>, WireError> = self
            .wire
            .call(call, self.to, &self.member, body, ttl_of(ttl))
            .await;
        match answer {
            Ok(Ok(t)) => Ok(t),
            Ok(Err(e)) => Err(self.remote(e)),
            Err(e) => Err(unreached(e)),
        }
    }

    /// openraft's error for the receiver's Raft error.
    fn remote<E: std::error::Error>(
        &self,
        e: RaftError<NodeId, E>,
    ) -> RPCError<NodeId, Member, RaftError<NodeId, E>> {
        RPCError::RemoteError(RemoteError::new_with_node(self.to, self.member.clone(), e))
    }
}

/// openraft's error for a message that got no answer, or a refusal.
fn unreached<E: std::error::Error>(e: WireError) -> RPCError<NodeId, Member, E> {
    let io = std::io::Error::other(e.to_string());
    match e {
        // A refusal (not in the group yet, not a member) or no answer:
        // openraft backs off before trying that peer again, rather than
        // spin on it.
        WireError::Unreachable(_) | WireError::Refused(..) => {
            RPCError::Unreachable(Unreachable::new(&io))
        }
        WireError::Malformed(_) => RPCError::Network(NetworkError::new(&io)),
    }
}

impl RaftNetwork<TypeConfig> for Peer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, Member, RaftError<NodeId>>> {
        let size: usize = rpc
            .entries
            .iter()
            .map(|e| match &e.payload {
                openraft::EntryPayload::Normal(cmd) => approx_size(cmd),
                _ => 64,
            })
            .sum();
        if size > MAX_APPEND_BYTES && rpc.entries.len() > 1 {
            return Err(RPCError::PayloadTooLarge(
                PayloadTooLarge::new_entries_hint((rpc.entries.len() / 2) as u64),
            ));
        }
        let term = rpc.vote.leader_id.term;
        let leasing = &self.leasing;
        let leased = leasing.leading(&self.wire) == Some(term);
        let (commit, grant) = leasing
            .book
            .sending(self.to, term, rpc.leader_commit, leased);
        let mut rpc = rpc;
        rpc.leader_commit = commit;
        let last = last_sent(&rpc);
        let sent = std::time::Instant::now();
        let body = Append { rpc, grant };
        let ttl = ttl_of(option.hard_ttl());
        let answer: Result<Appended, WireError> = self
            .wire
            .call(RaftCall::Append, self.to, &self.member, &body, ttl)
            .await;
        let (answer, token) = match answer {
            Ok(Appended {
                answer: Ok(r),
                token,
            }) => (Ok(r), token),
            Ok(Appended { answer: Err(e), .. }) => (Err(self.remote(e)), None),
            Err(e) => (Err(unreached(e)), None),
        };
        // Taken in this term (not refused for a higher vote): evidence, as
        // of when it was sent, that this follower still follows.
        let matched = match &answer {
            Ok(AppendEntriesResponse::Conflict) => Some(None),
            Ok(taken) => matched(taken, last),
            Err(_) => None,
        };
        if let Some(matched) = matched {
            self.wire.mark_acked(self.to, sent);
            if leasing.book.acked(self.to, term, matched, token) {
                leasing.kick();
            }
        }
        answer
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, Member, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.send(RaftCall::Snapshot, &rpc, option.hard_ttl()).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, Member, RaftError<NodeId>>> {
        self.send(RaftCall::Vote, &rpc, option.hard_ttl()).await
    }
}

/// The last entry an append names: its last entry, or the one it follows.
pub(super) fn last_sent(rpc: &AppendEntriesRequest<TypeConfig>) -> Option<LogId<NodeId>> {
    rpc.entries.last().map(|e| e.log_id).or(rpc.prev_log_id)
}

/// What a follower that gave `answer` to an append whose last entry is
/// `last` holds of the leader's log (`None`: it took nothing).
pub(super) fn matched(
    answer: &AppendEntriesResponse<NodeId>,
    last: Option<LogId<NodeId>>,
) -> Option<Option<LogId<NodeId>>> {
    match answer {
        AppendEntriesResponse::Success => Some(last),
        AppendEntriesResponse::PartialSuccess(m) => Some(*m),
        _ => None,
    }
}

/// openraft's deadline for a heartbeat is one heartbeat interval: too
/// short for a first connection through two host proxies. A late answer
/// only delays that peer's next message.
fn ttl_of(ttl: Duration) -> Duration {
    ttl.max(MIN_TTL)
}

/// Roughly how many bytes a command takes on the wire.
fn approx_size(cmd: &super::types::Cmd) -> usize {
    use crate::guests::kv::KvOp;
    match cmd {
        super::types::Cmd::State { value, .. } => value.len() + 64,
        super::types::Cmd::Kv { op, ns, .. } => {
            ns.len()
                + 64
                + match op {
                    KvOp::Set { key, value, .. } => key.len() + value.len(),
                    KvOp::CompareAndSwap { key, old, new, .. } => {
                        key.len() + new.len() + old.as_ref().map_or(0, Vec::len)
                    }
                    KvOp::SetMany { pairs, .. } => {
                        pairs.iter().map(|(k, v)| k.len() + v.len()).sum()
                    }
                    KvOp::DeleteMany { keys, .. } | KvOp::GetMany { keys, .. } => {
                        keys.iter().map(String::len).sum()
                    }
                    _ => 128,
                }
        }
    }
}
