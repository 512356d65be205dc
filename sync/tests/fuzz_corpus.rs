//! Replays the corpus `cargo fuzz run sync_bodies` found: every input must
//! return, never panic; and the seeds, valid messages of every kind, must
//! still parse (a parser that refused everything would pass the replay).

use nacre_sync::auth::DeploymentKey;
use nacre_sync::raft::{RaftCall, RaftKey};
use nacre_sync::seal::{Bundle, Payload, Recipient};
use nacre_sync::wire::{Heartbeat, HeartbeatAnswer, LeaderAnswer, Offer};

#[test]
fn fuzz_corpus_replays_without_panics() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/sync_bodies");
    let entries: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    assert!(
        entries.len() >= 100,
        "the corpus in {} is missing or tiny",
        dir.display()
    );
    for path in entries {
        nacre_sync::fuzzing::exercise(&std::fs::read(&path).unwrap());
    }
}

#[test]
fn the_seeds_are_valid_messages() {
    let seeds = nacre_sync::fuzzing::seeds();
    assert_eq!(seeds.len(), 9);
    serde_json::from_slice::<Heartbeat>(&seeds[0][1..])
        .unwrap()
        .check()
        .unwrap();
    serde_json::from_slice::<HeartbeatAnswer>(&seeds[1][1..]).unwrap();
    assert_eq!(
        serde_json::from_slice::<Offer>(&seeds[2][1..])
            .unwrap()
            .held()
            .len(),
        1
    );
    let plain = Recipient::from_secret(&[9; 32])
        .unwrap()
        .open(&seeds[3][1..])
        .unwrap();
    Payload::decode(&Bundle::decode(&plain).unwrap().payload).unwrap();
    Payload::decode(&Bundle::decode(&seeds[4][1..]).unwrap().payload).unwrap();
    assert!(
        serde_json::from_slice::<LeaderAnswer>(&seeds[5][1..])
            .unwrap()
            .tag
            .is_some()
    );
    let raft = RaftKey::derive(
        &DeploymentKey::from_bytes(&[7; 32]).unwrap(),
        "leader.test:444",
    );
    let request = raft
        .open_request(RaftCall::Append, &seeds[6][2..], &[0xc1; 16], 2)
        .unwrap();
    assert_eq!(request.plaintext, b"entries");
}
