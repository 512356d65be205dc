use super::*;
use crate::auth::DeploymentKey;

const CLUSTER: ClusterId = [0xc1; 16];
const DEPLOYMENT: &str = "app.test:444";

fn key() -> RaftKey {
    RaftKey::derive(&DeploymentKey::from_bytes(&[7; 32]).unwrap(), DEPLOYMENT)
}

/// A request from node 1 to node 2, opened by node 2.
fn request(sealer: &Sealer, call: RaftCall, body: &[u8]) -> (Vec<u8>, Pending) {
    sealer.seal_request(call, &CLUSTER, 1, 2, body).unwrap()
}

#[test]
fn requests_and_answers_round_trip_for_every_call() {
    let key = key();
    let (one, two) = (Sealer::new(&key), Sealer::new(&key));
    for call in RaftCall::ALL {
        assert_eq!(RaftCall::from_path(call.path()), Some(call));
        let (frame, pending) = request(&one, call, b"entries");
        let opened = key.open_request(call, &frame, &CLUSTER, 2).unwrap();
        assert_eq!(opened.plaintext, b"entries");
        assert_eq!((opened.from, opened.to, opened.call), (1, 2, call));
        assert_eq!((opened.session, opened.cluster), (one.session(), CLUSTER));
        let answer = two.seal_answer(&opened, b"ok").unwrap();
        assert_eq!(pending.open_answer(&key, &answer).unwrap(), b"ok");
        // Empty bodies are bodies too.
        let answer = two.seal_answer(&opened, b"").unwrap();
        assert_eq!(pending.open_answer(&key, &answer).unwrap(), b"");
    }
    assert_eq!(RaftCall::from_path("/enclave/raft/append?x=1"), None);
    assert_eq!(RaftCall::from_path("/enclave/raft"), None);
    let labels: std::collections::HashSet<_> = RaftCall::ALL.iter().map(|c| c.label()).collect();
    assert_eq!(labels.len(), RaftCall::ALL.len());
}

#[test]
fn another_deployment_key_or_name_does_not_open() {
    let key = key();
    let (frame, _) = request(&Sealer::new(&key), RaftCall::Append, b"entries");
    let stranger = RaftKey::derive(&DeploymentKey::generate(), DEPLOYMENT);
    let renamed = RaftKey::derive(
        &DeploymentKey::from_bytes(&[7; 32]).unwrap(),
        "other.test:444",
    );
    for other in [stranger, renamed] {
        assert_eq!(
            other
                .open_request(RaftCall::Append, &frame, &CLUSTER, 2)
                .unwrap_err(),
            RaftFrameError::Unauthenticated
        );
    }
    assert!(
        key.open_request(RaftCall::Append, &frame, &CLUSTER, 2)
            .is_ok()
    );
}

#[test]
fn another_node_cluster_or_call_is_refused() {
    let key = key();
    let (frame, _) = request(&Sealer::new(&key), RaftCall::Vote, b"vote");
    assert_eq!(
        key.open_request(RaftCall::Vote, &frame, &CLUSTER, 3)
            .unwrap_err(),
        RaftFrameError::NotForThisNode { to: 2, me: 3 }
    );
    assert!(matches!(
        key.open_request(RaftCall::Vote, &frame, &[0; 16], 2),
        Err(RaftFrameError::WrongCluster { .. })
    ));
    // The host moved it to another path (Join's label is as long as Vote's).
    for other in RaftCall::ALL.into_iter().filter(|c| *c != RaftCall::Vote) {
        assert_eq!(
            key.open_request(other, &frame, &CLUSTER, 2).unwrap_err(),
            RaftFrameError::Unauthenticated,
            "a vote opens as {other:?}"
        );
    }
}

#[test]
fn a_changed_byte_anywhere_is_refused() {
    let key = key();
    let (one, two) = (Sealer::new(&key), Sealer::new(&key));
    let (frame, pending) = request(&one, RaftCall::Write, b"put a=1");
    let opened = key
        .open_request(RaftCall::Write, &frame, &CLUSTER, 2)
        .unwrap();
    let answer = two.seal_answer(&opened, b"done").unwrap();
    for i in 0..frame.len() {
        for bit in [0x01, 0x80] {
            let mut changed = frame.clone();
            changed[i] ^= bit;
            assert!(
                key.open_request(RaftCall::Write, &changed, &CLUSTER, 2)
                    .is_err(),
                "request byte {i} ^ {bit:#x} still opens"
            );
        }
    }
    for i in 0..answer.len() {
        for bit in [0x01, 0x80] {
            let mut changed = answer.clone();
            changed[i] ^= bit;
            assert!(
                pending.open_answer(&key, &changed).is_err(),
                "answer byte {i} ^ {bit:#x} still opens"
            );
        }
    }
    let longer = [&frame[..], &[0]].concat();
    assert!(matches!(
        key.open_request(RaftCall::Write, &longer, &CLUSTER, 2),
        Err(RaftFrameError::NotCbor(_))
    ));
    for cut in [0, 1, frame.len() / 2, frame.len() - 1] {
        assert!(
            key.open_request(RaftCall::Write, &frame[..cut], &CLUSTER, 2)
                .is_err()
        );
    }
}

#[test]
fn an_answer_opens_only_for_its_request() {
    let key = key();
    let (one, two) = (Sealer::new(&key), Sealer::new(&key));
    let (first, first_pending) = request(&one, RaftCall::Append, b"1");
    let (_, second_pending) = request(&one, RaftCall::Append, b"2");
    let opened = key
        .open_request(RaftCall::Append, &first, &CLUSTER, 2)
        .unwrap();
    let success = two.seal_answer(&opened, b"success").unwrap();
    assert!(first_pending.open_answer(&key, &success).is_ok());
    // The same session, the next counter: the old success does not open.
    assert_eq!(
        second_pending.open_answer(&key, &success).unwrap_err(),
        RaftFrameError::Unauthenticated
    );
    // Another session (a restarted sender), the same counter.
    let restarted = Sealer::new(&key);
    let (_, restarted_pending) = request(&restarted, RaftCall::Append, b"1");
    assert_eq!(restarted_pending.ctr, first_pending.ctr);
    assert_eq!(
        restarted_pending.open_answer(&key, &success).unwrap_err(),
        RaftFrameError::Unauthenticated
    );
    // From another node than the one asked.
    let (_, to_three) = one
        .seal_request(RaftCall::Append, &CLUSTER, 1, 3, b"1")
        .unwrap();
    assert_eq!(
        to_three.open_answer(&key, &success).unwrap_err(),
        RaftFrameError::NotFromPeer { from: 2, asked: 3 }
    );
}

#[test]
fn an_answer_for_another_call_or_a_reflected_request_is_refused() {
    let key = key();
    let (one, two) = (Sealer::new(&key), Sealer::new(&key));
    let (frame, pending) = request(&one, RaftCall::Vote, b"vote");
    let mut opened = key
        .open_request(RaftCall::Vote, &frame, &CLUSTER, 2)
        .unwrap();
    // Join's label is as long as Vote's: only the label tells them apart.
    for other in RaftCall::ALL.into_iter().filter(|c| *c != RaftCall::Vote) {
        opened.call = other;
        let answer = two.seal_answer(&opened, b"granted").unwrap();
        assert_eq!(
            pending.open_answer(&key, &answer).unwrap_err(),
            RaftFrameError::Unauthenticated,
            "an answer to {other:?} opens as a vote's"
        );
    }
    opened.call = RaftCall::Vote;
    assert!(
        pending
            .open_answer(&key, &two.seal_answer(&opened, b"ok").unwrap())
            .is_ok()
    );
    // A request from node 2 to node 1 is not an answer from 2 to 1.
    let (reflected, _) = two
        .seal_request(RaftCall::Vote, &CLUSTER, 2, 1, b"ok")
        .unwrap();
    assert_eq!(
        pending.open_answer(&key, &reflected).unwrap_err(),
        RaftFrameError::Unauthenticated
    );
}

#[test]
fn the_replay_window_takes_each_counter_once() {
    let s = [1; 16];
    let mut w = ReplayWindow::new(8);
    for ctr in [0, 1, 2, 5, 4, 3] {
        assert!(w.accept(1, s, ctr), "{ctr} refused");
    }
    for ctr in [0, 3, 5] {
        assert!(!w.accept(1, s, ctr), "{ctr} taken twice");
    }
    assert!(w.accept(1, s, 100));
    // 100 - 64 is too old to tell, 100 - 63 is within the window.
    assert!(!w.accept(1, s, 36));
    assert!(w.accept(1, s, 37));
    assert!(!w.accept(1, s, 37));
    assert!(!w.accept(1, s, 5));
    // A jump of more than the window forgets the bitmap, not the rule.
    assert!(w.accept(1, s, 1000));
    assert!(w.accept(1, s, 999));
    assert!(!w.accept(1, s, 100));
    // Another sender or session counts on its own.
    assert!(w.accept(2, s, 0));
    assert!(w.accept(1, [2; 16], 0));
    assert_eq!(w.len(), 3);
}

#[test]
fn the_replay_window_is_bounded_and_forgets_the_least_recent() {
    let mut w = ReplayWindow::new(2);
    assert!(w.accept(1, [1; 16], 0));
    assert!(w.accept(1, [2; 16], 0));
    assert!(w.accept(1, [1; 16], 1));
    // Full: the third session evicts session 2, the least recently used.
    assert!(w.accept(1, [3; 16], 0));
    assert_eq!(w.len(), 2);
    assert!(!w.accept(1, [1; 16], 1), "session 1 was forgotten");
    // Session 2 was: its old counter is taken again (the documented limit).
    assert!(w.accept(1, [2; 16], 0));
    assert_eq!(w.len(), 2);
}

#[test]
fn the_replay_window_admits_opened_requests() {
    let key = key();
    let (frame, _) = request(&Sealer::new(&key), RaftCall::Append, b"entries");
    let opened = key
        .open_request(RaftCall::Append, &frame, &CLUSTER, 2)
        .unwrap();
    let mut w = ReplayWindow::default();
    assert!(w.admit(&opened).is_ok());
    assert_eq!(
        w.admit(&opened).unwrap_err(),
        RaftFrameError::Replayed {
            from: 1,
            ctr: opened.ctr
        }
    );
}

#[test]
fn oversize_is_refused_before_decoding() {
    let key = key();
    // Not CBOR at all: refused for its size, so nothing was decoded.
    let huge = vec![0xff; MAX_FRAME + 1];
    assert_eq!(
        key.open_request(RaftCall::Snapshot, &huge, &CLUSTER, 2)
            .unwrap_err(),
        RaftFrameError::FrameTooLarge {
            len: MAX_FRAME + 1,
            max: MAX_FRAME
        }
    );
    let sealer = Sealer::new(&key);
    let most = vec![3u8; MAX_PLAINTEXT];
    let (frame, _) = request(&sealer, RaftCall::Snapshot, &most);
    assert!(frame.len() <= MAX_FRAME, "{} bytes", frame.len());
    let opened = key
        .open_request(RaftCall::Snapshot, &frame, &CLUSTER, 2)
        .unwrap();
    assert_eq!(opened.plaintext.len(), MAX_PLAINTEXT);
    let over = vec![3u8; MAX_PLAINTEXT + 1];
    assert_eq!(
        sealer
            .seal_request(RaftCall::Snapshot, &CLUSTER, 1, 2, &over)
            .unwrap_err(),
        RaftFrameError::PlaintextTooLarge {
            len: MAX_PLAINTEXT + 1,
            max: MAX_PLAINTEXT
        }
    );
}

#[test]
fn two_processes_never_share_a_key_stream() {
    let key = key();
    let body = [0u8; 64];
    // Both count from 0: the same nonce, the same AAD but for the session.
    let ciphertext = |sealer: &Sealer| {
        let (frame, pending) = request(sealer, RaftCall::Append, &body);
        assert_eq!(pending.ctr, 0);
        let frame = Frame::decode(&frame).unwrap();
        frame.sealed[..body.len()].to_vec()
    };
    // The check can fail: one session twice gives the same key stream.
    let same = ciphertext(&Sealer::with_session(&key, [5; 16]));
    assert_eq!(same, ciphertext(&Sealer::with_session(&key, [5; 16])));
    let (a, b) = (Sealer::new(&key), Sealer::new(&key));
    assert_ne!(a.session(), b.session());
    assert_ne!(ciphertext(&a), ciphertext(&b));
    // And within one process, the counter moves for every frame.
    let (_, first) = request(&a, RaftCall::Append, b"");
    let (_, second) = request(&a, RaftCall::Vote, b"");
    assert_eq!((first.ctr, second.ctr), (1, 2));
}

#[test]
fn a_spent_counter_refuses_to_seal() {
    let sealer = Sealer::new(&key());
    sealer.next.store(u64::MAX, Ordering::Relaxed);
    assert_eq!(
        sealer
            .seal_request(RaftCall::Append, &CLUSTER, 1, 2, b"")
            .unwrap_err(),
        RaftFrameError::Exhausted
    );
}

#[test]
fn malformed_frames_say_what_is_wrong() {
    let key = key();
    let future = Frame {
        v: 2,
        cluster: CLUSTER,
        from: 1,
        to: 2,
        session: [0; 16],
        ctr: 0,
        sealed: vec![0; 16],
    };
    assert_eq!(
        key.open_request(RaftCall::Append, &future.encode(), &CLUSTER, 2)
            .unwrap_err(),
        RaftFrameError::WrongVersion(2)
    );
    for garbage in [&b""[..], b"\xa0", b"\xff\x00", b"{\"v\":1}"] {
        assert!(matches!(
            key.open_request(RaftCall::Append, garbage, &CLUSTER, 2),
            Err(RaftFrameError::NotCbor(_))
        ));
    }
    // A 15-byte session is not the frame's shape.
    use ciborium::Value;
    let field = |k: &str, v: Value| (Value::Text(k.into()), v);
    let short = Value::Map(vec![
        field("v", Value::from(1u64)),
        field("cluster", Value::Bytes(CLUSTER.to_vec())),
        field("from", Value::from(1u64)),
        field("to", Value::from(2u64)),
        field("session", Value::Bytes(vec![0; 15])),
        field("ctr", Value::from(0u64)),
        field("sealed", Value::Bytes(vec![0; 16])),
    ]);
    let mut short_bytes = Vec::new();
    ciborium::into_writer(&short, &mut short_bytes).unwrap();
    let short = short_bytes;
    assert!(matches!(
        key.open_request(RaftCall::Append, &short, &CLUSTER, 2),
        Err(RaftFrameError::NotCbor(_))
    ));
    // Messages name the check, never key bytes; the sealer shows its session.
    let message = RaftFrameError::Unauthenticated.to_string();
    assert!(message.contains("raft key"), "{message}");
    let sealer = Sealer::with_session(&key, [0xab; 16]);
    assert!(format!("{sealer:?}").contains(&"ab".repeat(16)));
}
