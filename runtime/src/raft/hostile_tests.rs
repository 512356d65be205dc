//! The host on the Raft links: it drops, duplicates, replays old frames
//! and reorders, while guests increment through every node (no
//! acknowledged increment is lost or counted twice, and every node ends
//! on the same count); it cuts a member off until the leader removes it,
//! then lets it back (it finds out and rejoins).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use openraft::ChangeMembers;

use super::RaftNode;

use super::tests::{Test, incr, read};
use super::types::Member;

/// A fourth node, added and joined through the leader `leader`; with the
/// members it joined through and as, to join again.
async fn join_new_node(t: &mut Test, leader: usize) -> (Arc<RaftNode>, Member, Member) {
    let node = t.add().await;
    let via = Member {
        advertise: t.nodes[leader].0.clone(),
    };
    let me = Member {
        advertise: t.nodes[3].0.clone(),
    };
    node.join(&via, &me).await.unwrap();
    (node, via, me)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drops_duplicates_replays_and_reordering_lose_and_double_nothing() {
    let t = Test::new(3).await;
    t.mesh.chaos.store(true, Ordering::Relaxed);
    let mut tasks = Vec::new();
    for task in 0..6usize {
        let kvs: Vec<_> = (0..3).map(|i| t.kv(i)).collect();
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for n in 0..20usize {
                if let Ok(v) = incr(&kvs[(task + n) % 3]).await {
                    acked.push(v);
                }
            }
            acked
        }));
    }
    let mut acked = Vec::new();
    for task in tasks {
        acked.extend(task.await.unwrap());
    }
    t.mesh.chaos.store(false, Ordering::Relaxed);
    let unique: BTreeSet<u64> = acked.iter().copied().collect();
    assert_eq!(
        unique.len(),
        acked.len(),
        "an increment acknowledged twice: {acked:?}"
    );
    assert!(
        acked.len() >= 60,
        "only {} of 120 acknowledged",
        acked.len()
    );
    // Settled, without chaos: every node reads one count, which covers
    // every acknowledged increment and no more than were attempted.
    let leader = t.leader().unwrap();
    let last = read(&t.kv(leader)).await.unwrap().unwrap();
    let count: u64 = String::from_utf8(last).unwrap().parse().unwrap();
    assert!(count >= *unique.last().unwrap() && count <= 120, "{count}");
    for i in 0..3 {
        let seen = read(&t.kv(i)).await.unwrap().unwrap();
        assert_eq!(seen, count.to_string().into_bytes(), "node {i}");
    }
    let replayed = t.mesh.seen.lock().unwrap().len();
    eprintln!(
        "{} acknowledged of 120, final count {count}, {replayed} frames sent",
        acked.len()
    );
    let _ = Duration::ZERO;
}

/// A learner never stands for election, so one the leader removed while
/// the host cut it off (paused it, or held its appends past their
/// timeout) still names that leader when it is let back: it must learn,
/// sealed, that it was removed and start a new life, not wait on that
/// leader for ever with every read refused. Before the fix it kept its
/// old id and this test timed out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_learner_removed_while_cut_off_rejoins_under_a_new_id() {
    let mut t = Test::new(3).await;
    assert_eq!(incr(&t.kv(0)).await.unwrap(), 1);
    let leader = t.leader().unwrap();
    let (learner, via, me) = join_new_node(&mut t, leader).await;
    let old_id = learner.id();
    t.until(|t| t.nodes[3].1.applied() >= t.nodes[leader].1.applied())
        .await;
    assert_eq!(read(&t.kv(3)).await.unwrap().as_deref(), Some(&b"1"[..]));

    t.cut(3, true);
    t.until(|t| t.nodes[leader].1.e().machine.was_removed(old_id))
        .await;
    assert!(
        learner.leadership().leader.is_some(),
        "cut off, the learner still names the leader it last heard"
    );
    t.cut(3, false);
    t.until(|t| t.nodes[3].1.id() != old_id).await;
    assert!(read(&t.kv(3)).await.is_err(), "outside the group, no reads");
    learner.join(&via, &me).await.unwrap();
    assert_eq!(incr(&t.kv(leader)).await.unwrap(), 2);
    t.until(|t| t.nodes[3].1.applied() >= t.nodes[leader].1.applied())
        .await;
    assert_eq!(read(&t.kv(3)).await.unwrap().as_deref(), Some(&b"2"[..]));
}

/// A node the leader added but never reached (the host held its first
/// entries, or it was too slow to answer them) knows no member but the
/// one that added it; once removed it must still find out and start over,
/// not wait for ever outside the group. Before the fix it kept its id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_removed_before_its_first_entry_came_rejoins() {
    let mut t = Test::new(3).await;
    assert_eq!(incr(&t.kv(0)).await.unwrap(), 1);
    let leader = t.leader().unwrap();
    let (learner, via, me) = join_new_node(&mut t, leader).await;
    t.cut(3, true);
    let old_id = learner.id();
    let known = learner
        .e()
        .raft
        .metrics()
        .borrow()
        .membership_config
        .membership()
        .nodes()
        .count();
    assert_eq!(
        known, 0,
        "an entry came before the cut: the case is not the one tested"
    );
    t.until(|t| t.nodes[leader].1.e().machine.was_removed(old_id))
        .await;
    t.cut(3, false);
    t.until(|t| t.nodes[3].1.id() != old_id).await;
    learner.join(&via, &me).await.unwrap();
    t.until(|t| t.nodes[3].1.applied() >= t.nodes[leader].1.applied())
        .await;
    assert_eq!(read(&t.kv(3)).await.unwrap().as_deref(), Some(&b"1"[..]));
}

/// The host kills the leader the moment it has promoted a learner: the
/// promotion committed on the old voters, and the new voter never
/// received it (it still thinks it is a learner). The survivor needs the
/// new voter's vote, which it must get: a learner votes like a voter.
/// The leader's own membership loop is stopped and the promotion made by
/// hand (the call the loop makes), so the new voter is cut off before it
/// can be sent anything, every run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_killed_between_a_promotion_and_its_delivery_is_replaced() {
    let mut t = Test::new(3).await;
    assert_eq!(incr(&t.kv(0)).await.unwrap(), 1);
    let leader = t.leader().unwrap();
    let (gone, survivor) = match leader {
        0 => (1, 2),
        1 => (2, 0),
        _ => (0, 1),
    };
    t.cut(gone, true);
    t.until(|t| t.voters(leader) == 2 && t.voters(survivor) == 2)
        .await;
    t.stop_tending(leader);

    let (learner, _, _) = join_new_node(&mut t, leader).await;
    let new = learner.id();
    t.until(|t| t.nodes[3].1.applied() >= t.nodes[leader].1.applied())
        .await;
    t.cut(3, true);
    let raft = t.nodes[leader].1.e().raft.clone();
    raft.change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([new])), false)
        .await
        .unwrap();
    t.until(|t| t.voters(survivor) == 3).await;
    assert_eq!(t.voters(3), 2, "the new voter has not heard of it");

    t.cut(leader, true);
    t.cut(3, false);
    t.until(|t| t.leader().is_some()).await;
    assert_eq!(incr(&t.kv(survivor)).await.unwrap(), 2);
    assert_eq!(incr(&t.kv(3)).await.unwrap(), 3);
}
