//! Who is in the group: joining (a pristine node asks the deployment's
//! name), and the leader's care of the membership (learners promoted once
//! caught up, silent members removed so a dead minority never blocks the
//! majority).
//!
//! A node can seal a join only with the deployment key, which it got
//! through the attested exchange: membership follows attestation.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use nacre_sync::raft::RaftCall;
use openraft::ChangeMembers;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::RaftNode;
use super::endpoints::{JoinAnswer, JoinRequest};
use super::types::{Member, NodeId};

/// Why a join did not happen.
#[derive(Debug, Clone, thiserror::Error)]
pub enum JoinError {
    /// Nothing there is in a group (or nothing answered).
    #[error("no group there: {0}")]
    NoGroup(String),
    /// A member of a live group answered, but did not add this node now.
    #[error("{0}")]
    Group(String),
}

/// How often the membership is looked after.
const TICK: Duration = Duration::from_millis(250);
/// At most this many voters, and always an odd number; other members
/// stay learners (they still serve guests: reads after a read index,
/// writes forwarded).
const MAX_VOTERS: usize = 5;
/// A learner this close to the leader's log is promoted.
const CAUGHT_UP: u64 = 50;
/// How long one membership change may take.
const CHANGE_TIMEOUT: Duration = Duration::from_secs(5);

impl RaftNode {
    /// Adds `id` as a learner (the leader only), without waiting for it to
    /// catch up.
    pub(super) async fn add_learner(&self, id: NodeId, member: Member) -> Result<(), String> {
        let m = self.e().raft.metrics().borrow().membership_config.clone();
        if m.membership().get_node(&id).is_some() {
            return Ok(());
        }
        match tokio::time::timeout(CHANGE_TIMEOUT, self.e().raft.add_learner(id, member, false))
            .await
        {
            Ok(Ok(_)) => {
                tracing::info!(node = %format!("{id:016x}"), "raft: learner added");
                Ok(())
            }
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("the membership change did not commit in time".into()),
        }
    }

    /// Asks the member at `via` (the deployment's name, or a leader it
    /// named) to add this node; follows one redirect to the leader.
    pub async fn join(&self, via: &Member, me: &Member) -> Result<(), JoinError> {
        if self.in_group() {
            return Err(JoinError::Group("this node is in a group already".into()));
        }
        let request = JoinRequest {
            id: self.id(),
            member: me.clone(),
        };
        let mut to = (0, via.clone());
        for _ in 0..2 {
            let answer: JoinAnswer = self
                .e()
                .wire
                .call(
                    RaftCall::Join,
                    to.0,
                    &to.1,
                    &request,
                    Duration::from_secs(3),
                )
                .await
                .map_err(|e| JoinError::NoGroup(e.to_string()))?;
            match answer {
                JoinAnswer::Added { cluster, leader } => {
                    // What this enclave held (restored from a sealed
                    // snapshot) gives way to the group's, which comes by
                    // snapshot before any entry.
                    self.e()
                        .machine
                        .wipe()
                        .map_err(|e| JoinError::NoGroup(e.to_string()))?;
                    self.e().wire.set_cluster(cluster);
                    if let Ok(mut v) = self.joined_via.lock() {
                        *v = Some(to.clone());
                    }
                    tracing::info!(leader = %format!("{leader:016x}"), "raft: joined as a learner");
                    return Ok(());
                }
                JoinAnswer::NotLeader(Some(leader)) => to = leader,
                JoinAnswer::NotLeader(None) => {
                    return Err(JoinError::Group("a member answered: no leader yet".into()));
                }
                JoinAnswer::Outside => {
                    return Err(JoinError::NoGroup("it is in no group itself".into()));
                }
                JoinAnswer::Removed => {
                    return Err(JoinError::Group(
                        "this node's id was removed; it joins under a new one".into(),
                    ));
                }
                JoinAnswer::Refused(why) => return Err(JoinError::Group(why)),
            }
        }
        Err(JoinError::Group("redirected more than once".into()))
    }

    /// Whether a member of the group this node knows says, sealed, that
    /// this node's id was removed.
    async fn was_removed(&self) -> bool {
        let e = self.e();
        let mut members: Vec<(NodeId, Member)> = {
            let metrics = e.raft.metrics();
            let m = metrics.borrow();
            m.membership_config
                .membership()
                .nodes()
                .filter(|(id, _)| **id != self.id())
                .map(|(id, m)| (*id, m.clone()))
                .collect()
        };
        // Added, then removed before its first entries came (the host held
        // them, or the node was too slow to answer): it knows no member
        // but the one that added it.
        if members.is_empty()
            && let Some(via) = self.joined_via.lock().ok().and_then(|v| v.clone())
        {
            members.push(via);
        }
        let request = JoinRequest {
            id: self.id(),
            member: Member::default(),
        };
        for (id, member) in members {
            let answer: Result<JoinAnswer, _> = e
                .wire
                .call(
                    RaftCall::Join,
                    id,
                    &member,
                    &request,
                    Duration::from_secs(2),
                )
                .await;
            if matches!(answer, Ok(JoinAnswer::Removed)) {
                return true;
            }
        }
        false
    }

    /// The membership loop: on the leader, one change per tick at most.
    pub async fn tend(self: Arc<Self>, shutdown: CancellationToken) {
        let mut leading_since: Option<Instant> = None;
        let mut leaderless_since: Option<Instant> = None;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(TICK) => {}
            }
            let leadership = self.leadership();
            if self.in_group() && self.no_leader_heard(&leadership) {
                let since = *leaderless_since.get_or_insert_with(Instant::now);
                // Leaderless for long enough to have been removed: a
                // member says so, sealed (silence alone never makes a
                // node leave: a partition of everyone must heal, not
                // dissolve the group).
                if since.elapsed() > self.settings.remove_after && self.was_removed().await {
                    if let Err(e) = self.rejoin().await {
                        tracing::error!(error = %e, "raft: rejoining failed");
                    }
                    (leaderless_since, leading_since) = (None, None);
                    continue;
                }
            } else {
                leaderless_since = None;
            }
            let leads = leadership.leader.is_some_and(|l| l.0 == self.id());
            if !leads {
                leading_since = None;
                continue;
            }
            let since = *leading_since.get_or_insert_with(Instant::now);
            if let Err(e) = self.tend_once(since).await {
                tracing::warn!(error = %e, "raft: membership change failed");
            }
        }
    }

    /// No leader, or one this node has not heard from for an election
    /// timeout. A learner never stands for election, and a follower the
    /// leader stopped sending to (it removed it: the node was paused, or
    /// its appends timed out) keeps the leader it last saw: without this,
    /// a node removed that way would wait on that leader for ever, its
    /// reads refused ("not a member"), and never rejoin.
    fn no_leader_heard(&self, leadership: &super::Leadership) -> bool {
        match &leadership.leader {
            None => true,
            Some((id, _)) if *id == self.id() => false,
            Some((id, _)) => self
                .e()
                .wire
                .heard(*id)
                .is_none_or(|at| at.elapsed() > self.settings.election.1),
        }
    }

    async fn tend_once(&self, leading_since: Instant) -> Result<(), String> {
        let m = self.e().raft.metrics().borrow().clone();
        let membership = m.membership_config.membership().clone();
        if membership.get_joint_config().len() > 1 {
            return Ok(()); // a change is under way
        }
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let learners: BTreeSet<NodeId> = membership.learner_ids().collect();
        let silent = |id: &NodeId| {
            let last = self
                .e()
                .wire
                .heard(*id)
                .map(Instant::from_std)
                .unwrap_or(leading_since)
                .max(leading_since);
            *id != self.id() && last.elapsed() > self.settings.remove_after
        };
        if let Some(id) = voters.iter().find(|id| silent(id)).copied() {
            tracing::warn!(node = %format!("{id:016x}"), "raft: removing a silent voter");
            return self
                .change(ChangeMembers::RemoveVoters(BTreeSet::from([id])))
                .await;
        }
        if let Some(id) = learners.iter().find(|id| silent(id)).copied() {
            tracing::warn!(node = %format!("{id:016x}"), "raft: removing a silent learner");
            return self
                .change(ChangeMembers::RemoveNodes(BTreeSet::from([id])))
                .await;
        }
        // Voters stay an odd number: four tolerate no more failures than
        // three, and lose their majority to two failures at once.
        let v = voters.len();
        let want = if v.is_multiple_of(2) { v + 1 } else { v + 2 };
        if want > MAX_VOTERS {
            return Ok(());
        }
        let last = m.last_log_index.unwrap_or(0);
        let replication = m.replication.unwrap_or_default();
        let ready: BTreeSet<NodeId> = learners
            .iter()
            .filter(|id| {
                let matched = replication.get(id).copied().flatten().map(|l| l.index);
                matched.is_some_and(|i| i + CAUGHT_UP >= last)
            })
            .take(want - v)
            .copied()
            .collect();
        if ready.len() == want - v {
            tracing::info!(nodes = ?ready.iter().map(|id| format!("{id:016x}")).collect::<Vec<_>>(), "raft: promoting learners to voters");
            return self.change(ChangeMembers::AddVoterIds(ready)).await;
        }
        Ok(())
    }

    async fn change(&self, change: ChangeMembers<NodeId, Member>) -> Result<(), String> {
        match tokio::time::timeout(
            CHANGE_TIMEOUT,
            self.e().raft.change_membership(change, false),
        )
        .await
        {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("the membership change did not commit in time".into()),
        }
    }
}
