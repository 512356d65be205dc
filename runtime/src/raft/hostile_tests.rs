//! The host on every Raft link at once: it drops, duplicates, replays
//! old frames and reorders, while guests increment through every node.
//! No acknowledged increment is lost or counted twice, and every node
//! ends on the same count.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::tests::{Test, incr, read};

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
