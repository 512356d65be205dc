//! One entry for the fuzz target (`fuzz/`) and the test that replays its
//! corpus: any bytes, as the body of any sync endpoint or what is sealed
//! inside a delivery, or a Raft frame, through every parse and check a
//! peer's or the host's bytes meet. The first byte picks the message.

use crate::auth::{DeploymentKey, Label};
use crate::order::{Holding, admit};
use crate::raft::{ClusterId, Pending, RaftCall, RaftKey, ReplayWindow, Sealer};
use crate::seal::{Bundle, Payload, Recipient};
use crate::wire::{Delivery, Heartbeat, HeartbeatAnswer, LeaderAnswer, Lineage, Offer};

/// Runs `data` through the parser it picks; returns, never panics.
pub fn exercise(data: &[u8]) {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    // Fixed keys, so that a run is the same every time.
    let key = DeploymentKey::from_bytes(&[7; 32]).expect("32 bytes");
    let recipient = Recipient::from_secret(&[9; 32]).expect("an X25519 secret");
    match which % 8 {
        0 => {
            if let Ok(beat) = serde_json::from_slice::<Heartbeat>(body) {
                let _ = beat.check();
                let _ = beat.verify(&key);
                let _ = HeartbeatAnswer::new(true, &beat, Some(&key)).verify(&beat, &key);
            }
        }
        1 => {
            if let Ok(answer) = serde_json::from_slice::<HeartbeatAnswer>(body) {
                let beat: Heartbeat = serde_json::from_str(SEED_BEAT).expect("seed");
                let _ = answer.verify(&beat, &key);
            }
        }
        2 => {
            if let Ok(offer) = serde_json::from_slice::<Offer>(body) {
                let _ = offer.held();
            }
        }
        3 => {
            if let Ok(d) = serde_json::from_slice::<Delivery>(body) {
                let _ = recipient.open(d.encrypted_keys.as_bytes());
            }
            if let Ok(plain) = recipient.open(body)
                && let Ok(bundle) = Bundle::decode(&plain)
                && let Ok(payload) = Payload::decode(&bundle.payload)
            {
                take(&payload);
            }
        }
        4 => {
            if let Ok(bundle) = Bundle::decode(body)
                && let Ok(payload) = Payload::decode(&bundle.payload)
            {
                take(&payload);
            }
            if let Ok(payload) = Payload::decode(body) {
                take(&payload);
            }
        }
        5 => {
            if let Ok(answer) = serde_json::from_slice::<LeaderAnswer>(body)
                && let Some(tag) = answer.tag
            {
                let _ = key.verify(Label::Leads, &[&[1; 20]], &tag);
            }
        }
        6 => raft_frame(body),
        _ => replay_window(body),
    }
}

/// The cluster of the fuzz target's Raft frames; node 1 asks node 2.
const RAFT_CLUSTER: ClusterId = [0xc1; 16];

fn raft_key() -> RaftKey {
    let key = DeploymentKey::from_bytes(&[7; 32]).expect("32 bytes");
    RaftKey::derive(&key, "leader.test:444")
}

/// The seed request, from a fixed session: its frame and what node 1 keeps.
fn raft_request(key: &RaftKey) -> Option<(Vec<u8>, Pending)> {
    Sealer::with_session(key, [1; 16])
        .seal_request(RaftCall::Append, &RAFT_CLUSTER, 1, 2, b"entries")
        .ok()
}

/// The first byte picks the call; the rest is opened as a request to node
/// 2 and as the answer to the seed request. Whatever opens as a request
/// must take the replay window once, and its answer must open for its
/// sender: these panic, as a finding, if not.
fn raft_frame(body: &[u8]) {
    let Some((&pick, frame)) = body.split_first() else {
        return;
    };
    let call = RaftCall::ALL[usize::from(pick) % RaftCall::ALL.len()];
    let key = raft_key();
    if let Ok(request) = key.open_request(call, frame, &RAFT_CLUSTER, 2) {
        let _ = format!("{request:?}");
        let mut window = ReplayWindow::new(4);
        assert!(window.admit(&request).is_ok(), "a fresh window refused");
        assert!(window.admit(&request).is_err(), "a replay was taken");
        let answerer = Sealer::with_session(&key, [2; 16]);
        if let Ok(answer) = answerer.seal_answer(&request, &request.plaintext) {
            let opened = Pending::of(&request).open_answer(&key, &answer);
            assert_eq!(opened.as_deref().ok(), Some(&request.plaintext[..]));
        }
    }
    if let Some((_, pending)) = raft_request(&key) {
        let _ = pending.open_answer(&key, frame);
    }
}

/// Records of 3 bytes (which of 8 sessions, a 16-bit counter) into a
/// window of 8 sessions, so none is forgotten: a counter taken twice, or
/// one taken that far behind the newest, panics.
fn replay_window(body: &[u8]) {
    let mut window = ReplayWindow::new(8);
    let mut taken = std::collections::HashSet::new();
    let mut newest = std::collections::HashMap::new();
    for record in body.chunks_exact(3) {
        let which = record[0] % 8;
        let ctr = u64::from(u16::from_be_bytes([record[1], record[2]]));
        let from = u64::from(which % 2);
        if window.accept(from, [which; 16], ctr) {
            assert!(taken.insert((which, ctr)), "{ctr} taken twice");
            let top = newest.entry(which).or_insert(ctr);
            assert!(ctr + crate::raft::WINDOW > *top, "{ctr} too old, taken");
            *top = (*top).max(ctr);
        }
    }
    assert!(window.len() <= 8);
}

/// Valid messages of every kind, each behind the byte that picks it: the
/// fuzzer's seeds.
pub fn seeds() -> Vec<Vec<u8>> {
    let key = DeploymentKey::from_bytes(&[7; 32]).expect("32 bytes");
    let mut beat: Heartbeat = serde_json::from_str(SEED_BEAT).expect("seed");
    beat.lineage = Some(Lineage {
        id: "ab".repeat(16),
        created_ms: 5,
    });
    beat.sign(&key);
    let answer = HeartbeatAnswer::new(true, &beat, Some(&key));
    let offer = Offer {
        document: "AAAA".into(),
        nonce: "11".repeat(20),
        have: vec!["22".repeat(32)],
    };
    let payload = Payload {
        deployment: "leader.test:444".into(),
        lineage: Lineage {
            id: "ab".repeat(16),
            created_ms: 5,
        },
        version: 4,
        deployment_key: serde_bytes::ByteBuf::from(vec![7; 32]),
        tls_chain: vec![serde_bytes::ByteBuf::from(vec![0x30, 0x03, 1, 2, 3])],
        tls_key: serde_bytes::ByteBuf::from(vec![0x30, 0x01, 0]),
        states: [("p".to_string(), serde_bytes::ByteBuf::from(vec![3; 32]))].into(),
        guests: vec![crate::seal::GuestRecord {
            name: "p".into(),
            route: "/p".into(),
            tcp: None,
            allow: vec!["api.test:443".into()],
            component_sha256: serde_bytes::ByteBuf::from(vec![4; 32]),
        }],
        acme_account: Some("{}".into()),
        challenges: vec![],
    };
    let bundle = Bundle {
        payload: serde_bytes::ByteBuf::from(payload.encode()),
        blobs: vec![serde_bytes::ByteBuf::from(vec![5; 8])],
    };
    let public = Recipient::from_secret(&[9; 32])
        .map(|r| r.public_key())
        .unwrap_or_default();
    let sealed = crate::seal::seal(&public, &bundle.encode()).unwrap_or_default();
    let raft_key = raft_key();
    let (raft, answer_raft) = raft_request(&raft_key)
        .and_then(|(frame, _)| {
            let request = raft_key
                .open_request(RaftCall::Append, &frame, &RAFT_CLUSTER, 2)
                .ok()?;
            let answer = Sealer::with_session(&raft_key, [2; 16])
                .seal_answer(&request, b"success")
                .ok()?;
            Some((frame, answer))
        })
        .unwrap_or_default();
    let leads = LeaderAnswer {
        status: "this enclave leads".into(),
        tag: Some(key.tag(Label::Leads, &[&[1; 20]])),
    };
    vec![
        [&[0u8][..], &json(&beat)].concat(),
        [&[1u8][..], &json(&answer)].concat(),
        [&[2u8][..], &json(&offer)].concat(),
        [&[3u8][..], &sealed].concat(),
        [&[4u8][..], &bundle.encode()].concat(),
        [&[5u8][..], &json(&leads)].concat(),
        [&[6u8, 0][..], &raft].concat(),
        [&[6u8, 0][..], &answer_raft].concat(),
        // Session 0 counts 5, 3, 4, 3 (refused), 200, 100 (too old).
        vec![7, 0, 0, 5, 0, 0, 3, 0, 0, 4, 0, 0, 3, 0, 0, 200, 0, 0, 100],
    ]
}

fn json<T: serde::Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

/// Runs a payload through the order as a holder and as a fresh enclave.
fn take(payload: &Payload) {
    let held = Lineage {
        id: "ab".repeat(16),
        created_ms: 1,
    };
    let holding = Holding {
        lineage: &held,
        version: 3,
    };
    for h in [Some(holding), None] {
        let _ = admit(
            "leader.test:444",
            h,
            &payload.deployment,
            &payload.lineage,
            payload.version,
        );
    }
    let _ = DeploymentKey::from_bytes(&payload.deployment_key);
    let _ = format!("{payload:?}");
}

const SEED_BEAT: &str = r#"{"hashed_keys":null,"worker_hostname":"w.test:444","lineage":null,"version":0,"session":"00000000000000000000000000000000","seq":1,"tag":"0000000000000000000000000000000000000000000000000000000000000000"}"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_raft_seeds_open() {
        let seeds = seeds();
        let key = raft_key();
        let request = key
            .open_request(RaftCall::Append, &seeds[6][2..], &RAFT_CLUSTER, 2)
            .unwrap();
        assert_eq!(request.plaintext, b"entries");
        let (_, pending) = raft_request(&key).unwrap();
        assert_eq!(
            pending.open_answer(&key, &seeds[7][2..]).unwrap(),
            b"success"
        );
        // Run through the oracles, which panic on a failure.
        for seed in &seeds[6..] {
            exercise(seed);
        }
    }
}
