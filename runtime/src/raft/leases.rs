//! Follower read leases: a follower that holds one reads what it has
//! applied, with no round to the leader.
//!
//! The rules, and why each is needed:
//!
//! - **A lease starts when the follower asked for it.** Each answer to an
//!   append carries a token, the follower's own clock when it answered
//!   (only while its guests read: a follower that serves no reads takes no
//!   lease and costs writes nothing). The leader's next append echoes the
//!   latest token; the follower's lease runs from that token, on its own
//!   clock. The echo was sent after the token was made, so however long the
//!   host holds either message, the lease ends before the leader's own
//!   bound on it: the instant it sent the echo plus [`Book`]'s span.
//! - **Only a leader holding its own lease grants one**: a majority took
//!   appends of its term sent less than half the shortest election timeout
//!   ago, and a voter that took an append refuses votes for the longest
//!   election timeout after. So no other leader is elected before the
//!   echo's send time plus half the shortest election timeout: the span.
//!   A follower counts a little less than the span, for clocks that run at
//!   slightly different rates.
//! - **Nothing is revealed until every live lease holder has it in its
//!   log.** A leader answers a write, answers a read index, reads what it
//!   applied, or tells a follower an index is committed (the follower
//!   would apply it and its guests read it) only once every follower whose
//!   lease may still run has acknowledged holding that index. So a write
//!   completed before a leased read began is in the reader's log.
//! - **A lease holder reads only after applying all it acknowledged from
//!   the leader that granted it**, in that leader's term. That covers every
//!   write completed and every value read anywhere before its read began.
//! - **A grant goes only to a follower that holds every index revealed so
//!   far**, so a new lease never starts behind what was read elsewhere.
//!
//! A follower the host pauses or cuts off keeps its lease only until it
//! runs out: meanwhile the leader's writes wait for it (at most the span),
//! and its own reads after that ask for a read index as before.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use openraft::{LogId, RaftMetrics};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::types::{Member, NodeId};
use super::wire::Wire;

/// A follower that read within this long asks for leases.
const WANT_FOR: Duration = Duration::from_secs(1);

/// An append's grant of a read lease, echoing the follower's token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Grant {
    /// The follower's clock when it asked (its token).
    pub token: u64,
}

/// One follower as the leader's book has it.
#[derive(Default)]
struct Holder {
    /// Past this instant no lease granted to it runs.
    until: Option<Instant>,
    /// The last index it acknowledged holding, in the book's term.
    matched: Option<LogId<NodeId>>,
    /// Its latest token (it asks for leases), if any.
    token: Option<u64>,
}

#[derive(Default)]
struct Pages {
    term: u64,
    /// The highest index revealed in this term.
    visible: Option<u64>,
    /// The highest commit index an append carried less of than openraft
    /// had (a holder lacked it): once every holder has it, an append must
    /// go out to say so.
    owed: Option<u64>,
    holders: HashMap<NodeId, Holder>,
}

impl Pages {
    /// Moves the book to `term`: leases of an earlier term ran out before
    /// this term's leader was elected. Older terms are ignored (`false`).
    fn at(&mut self, term: u64) -> bool {
        if term > self.term {
            *self = Pages {
                term,
                ..Pages::default()
            };
        }
        term == self.term
    }

    /// The followers whose lease may still run.
    fn live(&self, now: Instant) -> impl Iterator<Item = &Holder> {
        self.holders
            .values()
            .filter(move |h| h.until.is_some_and(|u| u > now))
    }

    /// The highest entry every live holder holds; `None` with no live
    /// holder (nothing is held back).
    fn held_by_all(&self, now: Instant) -> Option<Option<LogId<NodeId>>> {
        self.live(now).map(|h| h.matched).min()
    }

    /// `Ok` if every live holder holds `index`; else when the first of
    /// those that do not runs out.
    fn fenced(&self, index: u64, now: Instant) -> Result<(), Instant> {
        let behind = self
            .live(now)
            .filter(|h| h.matched.is_none_or(|m| m.index < index))
            .filter_map(|h| h.until)
            .min();
        behind.map_or(Ok(()), Err)
    }
}

/// The leader's book of the leases it granted.
pub(super) struct Book {
    pages: Mutex<Pages>,
    /// Bumped at every acknowledgement: waiters look again.
    changed: watch::Sender<u64>,
    /// How long past its send time a grant may run.
    span: Duration,
}

impl Book {
    /// A book whose grants run at most `span` past their send time.
    pub fn new(span: Duration) -> Book {
        Book {
            pages: Mutex::new(Pages::default()),
            changed: watch::Sender::new(0),
            span,
        }
    }

    /// Before an append of `term` to `to` leaves: the commit index it may
    /// carry (`commit` lowered to what every live holder holds), and a
    /// grant if `leased` (this leader holds its lease), `to` asked and
    /// holds everything revealed.
    pub fn sending(
        &self,
        to: NodeId,
        term: u64,
        commit: Option<LogId<NodeId>>,
        leased: bool,
    ) -> (Option<LogId<NodeId>>, Option<Grant>) {
        let Ok(mut p) = self.pages.lock() else {
            return (None, None);
        };
        if !p.at(term) {
            return (None, None);
        }
        let now = Instant::now();
        let wanted = commit;
        let commit = p.held_by_all(now).map_or(commit, |held| commit.min(held));
        if commit < wanted {
            p.owed = p.owed.max(wanted.map(|c| c.index));
        }
        p.visible = p.visible.max(commit.map(|c| c.index));
        let visible = p.visible;
        let span = self.span;
        let h = p.holders.entry(to).or_default();
        // Each token is echoed once: a follower that stopped answering
        // (paused, cut off) gets no more grants, so its lease runs out.
        let grant = match h.token {
            Some(token) if leased && h.matched.map(|m| m.index) >= visible => {
                h.until = Some(now + span);
                h.token = None;
                Some(Grant { token })
            }
            _ => None,
        };
        (commit, grant)
    }

    /// `from` acknowledged an append of `term`: it holds `matched`, and
    /// asks for leases with `token` (or no longer does). `true` if an
    /// append must now go out to tell followers of a commit held back.
    pub fn acked(
        &self,
        from: NodeId,
        term: u64,
        matched: Option<LogId<NodeId>>,
        token: Option<u64>,
    ) -> bool {
        let mut kick = false;
        if let Ok(mut p) = self.pages.lock()
            && p.at(term)
        {
            let h = p.holders.entry(from).or_default();
            h.matched = h.matched.max(matched);
            h.token = token;
            let held = p.held_by_all(Instant::now());
            if p.owed.is_some() && held.is_none_or(|h| h.map(|l| l.index) >= p.owed) {
                p.owed = None;
                kick = true;
            }
        }
        self.changed.send_modify(|n| *n += 1);
        kick
    }

    /// The highest index revealed in this term: a leader's own read must
    /// cover it (a follower may have applied it before this leader did).
    pub fn visible(&self) -> Option<u64> {
        self.pages.lock().ok().and_then(|p| p.visible)
    }

    /// Waits until every live holder holds `index` (or its lease ran out),
    /// at most until `deadline`; then `index` counts as revealed.
    pub async fn reveal(&self, index: Option<u64>, deadline: Instant) -> bool {
        let Some(index) = index else { return true };
        loop {
            let (wake, mut changes) = {
                let Ok(mut p) = self.pages.lock() else {
                    return false;
                };
                match p.fenced(index, Instant::now()) {
                    Ok(()) => {
                        p.visible = p.visible.max(Some(index));
                        return true;
                    }
                    // Subscribed under the lock: an acknowledgement that
                    // changes the book after this look also wakes us.
                    Err(runs_out) => (runs_out.min(deadline), self.changed.subscribe()),
                }
            };
            if Instant::now() >= deadline {
                return false;
            }
            tokio::select! {
                _ = changes.changed() => {}
                () = tokio::time::sleep_until(wake) => {}
            }
        }
    }
}

/// The lease a follower holds, from one leader in one term.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Lease {
    term: u64,
    leader: NodeId,
    /// It runs until then (none granted yet in this term).
    until: Option<Instant>,
    /// The last index acknowledged to that leader in that term.
    acked: Option<u64>,
}

/// A follower's side: its lease and its tokens.
pub(super) struct Held {
    lease: Mutex<Option<Lease>>,
    /// When a guest last read here, in nanoseconds from `base`.
    last_read: AtomicU64,
    base: Instant,
    /// How long a lease runs from its token: a little less than the
    /// leader's span.
    span: Duration,
}

impl Held {
    /// A follower's side, leases running `span` from their token.
    pub fn new(span: Duration) -> Held {
        Held {
            lease: Mutex::new(None),
            last_read: AtomicU64::new(0),
            base: Instant::now(),
            span,
        }
    }

    fn clock(&self) -> u64 {
        // Zero means "never read": the clock starts at one.
        self.base.elapsed().as_nanos() as u64 + 1
    }

    /// A guest reads here: the next answers ask for leases.
    pub fn reading(&self) {
        self.last_read.store(self.clock(), Ordering::Relaxed);
    }

    /// The token an answer carries now: the clock, if a guest read here
    /// lately.
    pub fn token(&self) -> Option<u64> {
        let last = self.last_read.load(Ordering::Relaxed);
        let now = self.clock();
        (last != 0 && now.saturating_sub(last) < WANT_FOR.as_nanos() as u64).then_some(now)
    }

    /// This node took an append of `leader` in `term` and holds up to
    /// `matched`; with the append came `grant`, if any.
    pub fn took(&self, leader: NodeId, term: u64, matched: Option<u64>, grant: Option<Grant>) {
        let Ok(mut l) = self.lease.lock() else { return };
        let same = l.is_some_and(|l| l.term == term && l.leader == leader);
        if !same {
            *l = Some(Lease {
                term,
                leader,
                until: None,
                acked: None,
            });
        }
        let Some(lease) = l.as_mut() else { return };
        lease.acked = lease.acked.max(matched);
        // A token from the future is not one of ours.
        if let Some(g) = grant
            && g.token <= self.clock()
        {
            let from = self.base + Duration::from_nanos(g.token.saturating_sub(1));
            lease.until = lease.until.max(Some(from + self.span));
        }
    }

    /// If a lease runs now from `leader` in `term`: the index to have
    /// applied before reading, and when the lease runs out.
    pub fn valid(&self, leader: Option<NodeId>, term: u64) -> Option<(Option<u64>, Instant)> {
        let l = (*self.lease.lock().ok()?)?;
        let until = l.until?;
        (Some(l.leader) == leader && l.term == term && Instant::now() < until)
            .then_some((l.acked, until))
    }
}

/// What the network and the read path share of leases, in one life of
/// the node.
pub(super) struct Leasing {
    /// The leader's side.
    pub book: Arc<Book>,
    /// The follower's side.
    pub held: Held,
    /// The node's metrics, once its Raft runs.
    pub metrics: OnceLock<watch::Receiver<RaftMetrics<NodeId, Member>>>,
    /// Half the shortest election timeout: a leader's lease, and how long
    /// past its send time a grant may run.
    pub lease: Duration,
    /// Asks for an append to go out at once, to tell followers of a
    /// commit held back.
    kick: mpsc::Sender<()>,
}

impl Leasing {
    /// Leases for a group whose shortest election timeout is `election`.
    pub fn new(election: Duration, kick: mpsc::Sender<()>) -> Leasing {
        let lease = election / 2;
        Leasing {
            book: Arc::new(Book::new(lease)),
            // Clocks may run at slightly different rates.
            held: Held::new(lease * 4 / 5),
            metrics: OnceLock::new(),
            lease,
            kick,
        }
    }

    /// Asks for an append to go out at once (one pending ask is enough).
    pub fn kick(&self) {
        let _ = self.kick.try_send(());
    }

    /// The term in which this node leads holding its lease: a majority of
    /// the voters (itself counted) took an append of this node's term sent
    /// less than [`Leasing::lease`] ago. A voter that took one refuses
    /// votes for the longest election timeout after it, so no other leader
    /// can have been elected since. One host's monotonic clock measures
    /// all of it.
    pub fn leading(&self, wire: &Wire) -> Option<u64> {
        let m = self.metrics.get()?.borrow();
        let me = wire.me();
        if m.current_leader != Some(me) {
            return None;
        }
        let voters = m.membership_config.membership().voter_ids();
        let (mut all, mut acked) = (0, 0);
        for v in voters {
            all += 1;
            if v == me || wire.acked(v).is_some_and(|at| at.elapsed() < self.lease) {
                acked += 1;
            }
        }
        (acked * 2 > all).then_some(m.current_term)
    }
}

#[cfg(test)]
#[path = "leases_tests.rs"]
mod tests;
