//! Reads: on a follower holding a read lease, what it applied (the rules
//! are in [`super::leases`]); on a leader holding its lease, what it
//! applied; otherwise after a read index.
//!
//! Read indexes, coalesced: a read is served by a round in which the
//! leader confirms it still leads a majority, started after the read
//! arrived; every read that arrives while a round is in flight shares the
//! next one.
//!
//! A round that started after a read arrived is as good as one of its
//! own: the leader confirmed its leadership after the read began, so the
//! index it names covers every write completed before the read. Under
//! load that is one round per batch of reads, not per read. Rounds run in
//! a task of their own, one after the other, and publish their results
//! to every waiter at once: a read waits for at most the rest of the
//! round in flight and one more, and a read whose caller goes away takes
//! no round with it.

use std::sync::Arc;

use nacre_sync::raft::RaftCall;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::time::Instant;

use super::service::Failed;
use super::types::{Member, NodeId};
use super::{Engine, RaftNode};

/// How many rounds may be in flight at once: a read that arrives while
/// one is under way starts another at once rather than wait for it to
/// end; past this many, reads wait for the next to start.
const IN_FLIGHT: usize = 4;

/// The rounds of one life of the node.
pub(super) struct Reads {
    rounds: std::sync::Mutex<Rounds>,
    done: watch::Sender<Finished>,
}

/// The number of the round started last, how many are in flight, and
/// whether a read waits for a round not started yet.
#[derive(Default)]
struct Rounds {
    started: u64,
    in_flight: usize,
    wanted: bool,
}

/// The latest round that ended: its number and what it named (`None`:
/// it could not be confirmed).
#[derive(Clone, Copy, Default)]
struct Finished {
    round: u64,
    index: Option<Option<u64>>,
}

impl Default for Reads {
    fn default() -> Reads {
        Reads {
            rounds: std::sync::Mutex::new(Rounds::default()),
            done: watch::Sender::new(Finished::default()),
        }
    }
}

impl Reads {
    /// The round a read arriving now must wait for, and whether the
    /// caller starts it.
    fn want(&self) -> (u64, bool) {
        let Ok(mut r) = self.rounds.lock() else {
            return (u64::MAX, false);
        };
        if r.in_flight < IN_FLIGHT {
            r.in_flight += 1;
            r.started += 1;
            return (r.started, true);
        }
        r.wanted = true;
        (r.started + 1, false)
    }

    /// Records that a round ended: the number of the next round to start
    /// now, if reads wait for one.
    fn ended(&self) -> Option<u64> {
        let mut r = self.rounds.lock().ok()?;
        if !r.wanted {
            r.in_flight -= 1;
            return None;
        }
        r.wanted = false;
        r.started += 1;
        Some(r.started)
    }

    /// Publishes what round `round` named; rounds may end out of order,
    /// and a later one serves every read an earlier one would.
    fn publish(&self, round: u64, index: Option<Option<u64>>) {
        self.done.send_if_modified(|f| {
            let later = round > f.round;
            if later {
                *f = Finished { round, index };
            }
            later
        });
    }
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
    pub(super) async fn read_index(
        self: &Arc<Self>,
        deadline: Instant,
    ) -> Result<Option<u64>, Failed> {
        // A leader holding its lease needs no round at all.
        if let Some(index) = self.leased_index() {
            return self.revealed(index, deadline).await;
        }
        let engine = self.e();
        let mut done = engine.reads.done.subscribe();
        let (round, start) = engine.reads.want();
        if start {
            tokio::spawn(Arc::clone(self).run_rounds(engine, round));
        }
        let finished = tokio::time::timeout_at(deadline, done.wait_for(|f| f.round >= round))
            .await
            .map_err(|_| Failed::NoRead)?
            .map_err(|_| Failed::NoRead)?;
        finished.index.ok_or(Failed::NoRead)
    }

    /// Runs round `round`, then the next ones while reads wait for one.
    /// Rounds run in tasks of their own, so a read whose caller goes away
    /// takes no round with it.
    async fn run_rounds(self: Arc<Self>, engine: Arc<Engine>, round: u64) {
        let mut round = Some(round);
        while let Some(r) = round {
            let deadline = Instant::now() + self.settings.write_timeout;
            let index = self.index_round(deadline).await.ok();
            engine.reads.publish(r, index);
            round = engine.reads.ended();
        }
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
        let index = match self.leased_index() {
            Some(index) => index,
            None => {
                match tokio::time::timeout_at(deadline, self.e().raft.get_read_log_id()).await {
                    Ok(Ok((read, _applied))) => read.map(|l| l.index),
                    Ok(Err(e)) => {
                        return match e.forward_to_leader() {
                            Some(f) => {
                                ReadAnswer::NotLeader(f.leader_id.zip(f.leader_node.clone()))
                            }
                            None => ReadAnswer::Failed,
                        };
                    }
                    Err(_) => return ReadAnswer::Failed,
                }
            }
        };
        match self.revealed(index, deadline).await {
            Ok(index) => ReadAnswer::Index(index),
            Err(_) => ReadAnswer::Failed,
        }
    }

    /// `index`, once it may be revealed: raised to what followers may have
    /// read already, and held by every follower whose read lease may
    /// still run (see [`super::leases`]).
    async fn revealed(&self, index: Option<u64>, deadline: Instant) -> Result<Option<u64>, Failed> {
        let book = &self.e().leasing.book;
        let index = index.max(book.visible());
        if book.reveal(index, deadline).await {
            Ok(index)
        } else {
            Err(Failed::NoRead)
        }
    }

    /// On a follower holding a read lease: waits until it applied all it
    /// acknowledged to the leader that granted it, at most until the lease
    /// or `deadline` runs out. `true`: it may read what it applied.
    pub(super) async fn leased_read(&self, deadline: Instant) -> bool {
        let e = self.e();
        e.leasing.held.reading();
        let (leader, term) = {
            let m = e.raft.metrics();
            let m = m.borrow();
            (m.current_leader, m.current_term)
        };
        if leader == Some(self.id()) {
            return false;
        }
        let Some((index, until)) = e.leasing.held.valid(leader, term) else {
            return false;
        };
        if index.is_none() || e.machine.applied().map(|l| l.index) >= index {
            return true;
        }
        let left = until
            .min(deadline)
            .saturating_duration_since(Instant::now());
        e.raft
            .wait(Some(left))
            .applied_index_at_least(index, "leased read")
            .await
            .is_ok()
    }
}

impl RaftNode {
    /// On a leader holding its lease ([`super::leases::Leasing::leading`]),
    /// the index reads must wait for, without a round.
    ///
    /// The index is what this leader has applied, once that includes an
    /// entry of its own term: every entry committed before the term
    /// precedes that one, and every write completed since was applied
    /// here before its answer left (the leader answers writes after
    /// applying them). So it covers every write completed before the
    /// call, and reading here needs no wait.
    fn leased_index(&self) -> Option<Option<u64>> {
        let e = self.e();
        let term = e.leasing.leading(&e.wire)?;
        let applied = e.machine.applied()?;
        (applied.leader_id.term == term).then_some(Some(applied.index))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_start_rounds_up_to_the_limit_then_share_the_next() {
        let reads = Reads::default();
        for n in 1..=IN_FLIGHT as u64 {
            assert_eq!(reads.want(), (n, true), "a read starts its own round");
        }
        let next = IN_FLIGHT as u64 + 1;
        assert_eq!(reads.want(), (next, false), "past the limit it waits");
        assert_eq!(reads.want(), (next, false), "and shares the next");
        // A round ends: the next starts at once, for the waiting reads.
        assert_eq!(reads.ended(), Some(next));
        // No read waits now: ending rounds frees their places.
        for _ in 0..IN_FLIGHT {
            assert_eq!(reads.ended(), None);
        }
        assert_eq!(
            reads.want(),
            (next + 1, true),
            "a free place: a round at once"
        );
    }

    #[test]
    fn a_later_round_serves_what_an_earlier_one_would() {
        let reads = Reads::default();
        let mut seen = reads.done.subscribe();
        reads.publish(3, Some(Some(30)));
        reads.publish(2, Some(Some(20)));
        let last = *seen.borrow_and_update();
        assert_eq!((last.round, last.index), (3, Some(Some(30))));
        reads.publish(4, None);
        assert_eq!(seen.borrow().index, None, "a failed round fails its reads");
    }
}
