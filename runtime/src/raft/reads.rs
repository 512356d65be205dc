//! Read indexes, coalesced: a read waits for one round in which the leader
//! confirms it still leads a majority, and every read that arrived before
//! a round started shares it.
//!
//! A round that started after a read arrived is as good as one of its
//! own: the leader confirmed its leadership after the read began, so the
//! index it names covers every write completed before the read. Under
//! load that is one heartbeat round per batch of reads, not per read.

use nacre_sync::raft::RaftCall;
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;
use tokio::time::Instant;

use super::RaftNode;
use super::service::Failed;
use super::types::{Member, NodeId};

/// The last round: when it started, the index it named.
#[derive(Default)]
pub(super) struct Reads {
    last: Mutex<Option<(Instant, Option<u64>)>>,
}

/// A read index's answer.
#[derive(Debug, Serialize, Deserialize)]
pub(super) enum ReadAnswer {
    /// Everything committed before the request is at or below this index.
    Index(Option<u64>),
    /// This node does not lead; the leader it knows of.
    NotLeader(Option<(NodeId, Member)>),
    /// It could not be confirmed.
    Failed,
}

impl RaftNode {
    /// An index covering every write completed before the call.
    pub(super) async fn read_index(&self, deadline: Instant) -> Result<Option<u64>, Failed> {
        let arrived = Instant::now();
        let engine = self.e();
        let mut last = tokio::time::timeout_at(deadline, engine.reads.last.lock())
            .await
            .map_err(|_| Failed::NoRead)?;
        if let Some((started, index)) = *last
            && started >= arrived
        {
            return Ok(index);
        }
        let started = Instant::now();
        let index = self.index_round(deadline).await?;
        *last = Some((started, index));
        Ok(index)
    }

    /// One round: here on the leader, or asked of it.
    async fn index_round(&self, deadline: Instant) -> Result<Option<u64>, Failed> {
        let (leader, member) = self.leader_until(deadline).await.ok_or(Failed::NoRead)?;
        if leader == self.id() {
            return match self.leader_index(deadline).await {
                ReadAnswer::Index(i) => Ok(i),
                _ => Err(Failed::NoRead),
            };
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match self
            .e()
            .wire
            .call(RaftCall::ReadIndex, leader, &member, &(), left)
            .await
        {
            Ok(ReadAnswer::Index(i)) => Ok(i),
            _ => Err(Failed::NoRead),
        }
    }

    /// On the leader: confirms a majority still follows it, and names the
    /// index reads must wait for.
    pub(super) async fn leader_index(&self, deadline: Instant) -> ReadAnswer {
        if let Some(index) = self.leased_index().await {
            return ReadAnswer::Index(index);
        }
        match tokio::time::timeout_at(deadline, self.e().raft.get_read_log_id()).await {
            Ok(Ok((read, _applied))) => ReadAnswer::Index(read.map(|l| l.index)),
            Ok(Err(e)) => match e.forward_to_leader() {
                Some(f) => ReadAnswer::NotLeader(f.leader_id.zip(f.leader_node.clone())),
                None => ReadAnswer::Failed,
            },
            Err(_) => ReadAnswer::Failed,
        }
    }
}

impl RaftNode {
    /// On a leader holding a lease, the index reads must wait for,
    /// without a round: a majority of the voters took an append of this
    /// term sent less than half the shortest election timeout ago, so no
    /// other leader can have been elected since (a follower stands for
    /// election only after that long without its leader, and votes for
    /// no one while it hears one), and this term already committed an
    /// entry. One host's monotonic clock measures all of it.
    async fn leased_index(&self) -> Option<Option<u64>> {
        let e = self.e();
        let lease = self.settings.election.0 / 2;
        let (term, voters) = {
            let metrics = e.raft.metrics();
            let m = metrics.borrow();
            if m.current_leader != Some(self.id()) {
                return None;
            }
            let voters: Vec<NodeId> = m.membership_config.membership().voter_ids().collect();
            (m.current_term, voters)
        };
        let acked = voters
            .iter()
            .filter(|v| {
                **v == self.id() || e.wire.acked(**v).is_some_and(|at| at.elapsed() < lease)
            })
            .count();
        if acked * 2 <= voters.len() {
            return None;
        }
        let committed = e.raft.with_raft_state(|st| st.committed).await.ok()?;
        let committed = committed?;
        (committed.leader_id.term == term).then_some(Some(committed.index))
    }
}
