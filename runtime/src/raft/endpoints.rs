//! `/enclave/raft/*` on the sync listener: the receiving side of every
//! Raft message.
//!
//! A frame is opened (this deployment's key, this node, this incarnation,
//! not a replay) before its body is read; the sender must be a member of
//! the group as this node knows it, except for a join, and a learner
//! taking its first entries. The answer is sealed to the request.

use std::sync::Arc;

use bytes::Bytes;
use http::StatusCode;
use nacre_sync::raft::{OpenedRequest, RaftCall};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::network::{Append, Appended, last_sent, matched};
use super::service::WriteAnswer;
use super::types::{Cmd, Member, NodeId};
use super::wire::Cluster;
use super::{Engine, RaftNode};

/// A refusal: the status and why.
pub type Refused = (StatusCode, String);

/// A pristine node asks to join the group.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct JoinRequest {
    pub id: NodeId,
    pub member: Member,
}

/// The answer to a join.
#[derive(Debug, Serialize, Deserialize)]
pub(super) enum JoinAnswer {
    /// Added as a learner of incarnation `cluster`.
    Added {
        /// The incarnation.
        cluster: Cluster,
        /// The leader that added it.
        leader: NodeId,
    },
    /// This node does not lead; the leader it knows of (none during an
    /// election).
    NotLeader(Option<(NodeId, Member)>),
    /// This node is in no group itself.
    Outside,
    /// The asking node's id was removed from the group: it must start
    /// over under a new one (the answer is sealed, so only a member can
    /// say it).
    Removed,
    /// Refused, and why.
    Refused(String),
}

/// What the sync listener hands `/enclave/raft/*` to.
#[derive(Clone)]
pub struct RaftEndpoints {
    node: Arc<RaftNode>,
}

impl RaftEndpoints {
    /// The endpoints of `node`.
    pub fn new(node: Arc<RaftNode>) -> RaftEndpoints {
        RaftEndpoints { node }
    }

    /// Answers a frame posted to `path`, or refuses it. One life of the
    /// node opens, answers and seals it (a rejoin meanwhile leaves the
    /// old life to finish what it opened).
    pub async fn answer(&self, path: &str, frame: Bytes) -> Result<Vec<u8>, Refused> {
        let call = RaftCall::from_path(path)
            .ok_or((StatusCode::NOT_FOUND, format!("{path}: no such Raft call")))?;
        let e = self.node.e();
        let (wire, raft) = (&e.wire, &e.raft);
        match call {
            RaftCall::Append => {
                // Any incarnation member may lead: a learner's snapshot
                // may name an older membership than its leader's.
                let (req, body) = wire.open(call, &frame)?;
                wire.seal_answer(&req, &append(&e, body).await)
            }
            RaftCall::Vote => {
                let (req, body) = member_open(&e, call, &frame)?;
                wire.seal_answer(&req, &raft.vote(body).await)
            }
            RaftCall::Snapshot => {
                let (req, body) = wire.open(call, &frame)?;
                wire.seal_answer(&req, &raft.install_snapshot(body).await)
            }
            RaftCall::Write => {
                let (req, cmd): (_, Cmd) = member_open(&e, call, &frame)?;
                if cmd.id().origin != req.from {
                    return Err((
                        StatusCode::FORBIDDEN,
                        "a write forwarded under another node's id".into(),
                    ));
                }
                wire.seal_answer(&req, &self.write(cmd).await)
            }
            RaftCall::ReadIndex => {
                let (req, ()) = member_open(&e, call, &frame)?;
                let deadline = Instant::now() + self.node.settings.write_timeout;
                wire.seal_answer(&req, &self.node.leader_index(deadline).await)
            }
            RaftCall::Join => {
                let (req, join): (_, JoinRequest) = wire.open(call, &frame)?;
                wire.seal_answer(&req, &self.join(&req, join).await)
            }
        }
    }

    async fn write(&self, cmd: Cmd) -> WriteAnswer {
        let node = &self.node;
        let leadership = node.leadership();
        if leadership.leader.as_ref().map(|l| l.0) != Some(node.id()) {
            return WriteAnswer::NotLeader(leadership.leader);
        }
        let deadline = Instant::now() + node.settings.write_timeout;
        node.write_here(cmd, deadline).await
    }

    async fn join(&self, req: &OpenedRequest, join: JoinRequest) -> JoinAnswer {
        let node = &self.node;
        if join.id != req.from {
            return JoinAnswer::Refused("a join under another node's id".into());
        }
        if node.e().machine.was_removed(join.id) {
            return JoinAnswer::Removed;
        }
        let Some(cluster) = node.e().wire.cluster() else {
            return JoinAnswer::Outside;
        };
        let leadership = node.leadership();
        if leadership.leader.as_ref().map(|l| l.0) != Some(node.id()) {
            return JoinAnswer::NotLeader(leadership.leader);
        }
        match node.add_learner(join.id, join.member).await {
            Ok(()) => JoinAnswer::Added {
                cluster,
                leader: node.id(),
            },
            Err(why) => JoinAnswer::Refused(why),
        }
    }
}

/// Takes an append: openraft's answer, and this node's token if its
/// guests read. What it now holds of the sender's term is recorded before
/// the answer leaves, with the lease the append grants.
async fn append(e: &Engine, body: Append) -> Appended {
    let Append { rpc, grant } = body;
    let vote = rpc.vote.leader_id;
    let last = last_sent(&rpc);
    let answer = e.raft.append_entries(rpc).await;
    let matched = answer.as_ref().ok().and_then(|a| matched(a, last));
    if let (Some(matched), Some(leader)) = (matched, vote.voted_for()) {
        let matched = matched.map(|m| m.index);
        e.leasing.held.took(leader, vote.term, matched, grant);
    }
    Appended {
        answer,
        token: e.leasing.held.token(),
    }
}

/// Opens a frame of a member (or of anyone, while this node knows no
/// membership yet): votes, forwarded writes and read indexes. A removed
/// node cannot disrupt the group by standing for election; entries come
/// from whoever holds the term, as Raft has it.
fn member_open<Q: serde::de::DeserializeOwned>(
    e: &Engine,
    call: RaftCall,
    frame: &[u8],
) -> Result<(OpenedRequest, Q), Refused> {
    let (req, body) = e.wire.open(call, frame)?;
    let m = e.raft.metrics().borrow().membership_config.clone();
    let known = m.membership().get_node(&req.from).is_some();
    let pristine = m.membership().nodes().next().is_none();
    if !known && !pristine {
        return Err((
            StatusCode::FORBIDDEN,
            format!("node {:016x} is not a member", req.from),
        ));
    }
    Ok((req, body))
}
