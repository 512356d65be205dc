//! The replicated data against its host and its guests: an enclave of
//! another image cannot join or vote; frames the host makes up are refused
//! before anything is read into Raft; a guest reaches only its own
//! namespace, whichever enclave takes its call and forwards it; a leader
//! the host pauses past its lease serves no stale read when it wakes, nor
//! does a follower paused or cut off while it holds a read lease.

use std::time::{Duration, Instant};

use nacre_sync::auth::DeploymentKey;
use nacre_sync::raft::{RaftCall, RaftKey, Sealer};
use nacre_tests::fleet::{Deployment, Member, MemberSpec, other_image, within};
use nacre_tests::guest;

/// Three members, settled: the first leads, three voters.
async fn three(d: &Deployment) -> (Member, Member, Member) {
    let (a, b, c) = (d.start(0).await, d.start(1).await, d.start(2).await);
    within(Duration::from_secs(40), "three voters", || async {
        a.leads().await && a.voters_are(&[&a, &b, &c]).await
    })
    .await;
    (a, b, c)
}

/// Deploys the guest `lin` through `a` and waits until all three serve it.
async fn lin_everywhere(a: &Member, b: &Member, c: &Member) {
    a.rt.deploy_ok("lin", &guest("kv-lin"), "").await;
    within(Duration::from_secs(10), "the guest everywhere", || async {
        for m in [a, b, c] {
            if m.rt.get("/lin/k/none").await.1.contains("no guest") {
                return false;
            }
        }
        true
    })
    .await;
}

/// A client of a sync port as the host is: any certificate.
fn host_client() -> reqwest::Client {
    reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

/// An enclave of another image, at the name or not, gets no key, so it
/// can neither join nor vote: for 10 s the voters stay the three, the
/// term does not move, and the leader's log names the check that refused
/// it. Frames the host makes up (garbage, or sealed under a key of its
/// own) get 403, and a GET gets 405.
#[tokio::test(flavor = "multi_thread")]
async fn another_image_and_the_host_cannot_join_vote_or_speak_raft() {
    let d = Deployment::new(4).await;
    let (a, b, c) = three(&d).await;
    let term = a.raft().await["term"].clone();
    let stranger = Member::start(MemberSpec {
        program: Some(other_image()),
        ..d.spec(3)
    })
    .await;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(10) {
        assert!(a.voters_are(&[&a, &b, &c]).await, "{}", a.raft().await);
        assert_eq!(a.raft().await["term"], term, "the term moved");
        let theirs = stranger.raft().await;
        assert!(
            theirs["cluster"].is_null() && theirs["voters"].as_array().is_none_or(Vec::is_empty),
            "the other image is in a group: {theirs}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(a.rt.log().contains("PCR0 differs"), "no refusal logged");

    let client = host_client();
    let url = |call: RaftCall| format!("https://localhost:{}{}", d.ports[1], call.path());
    for call in RaftCall::ALL {
        let r = client
            .post(url(call))
            .body(vec![0xa5u8; 300])
            .send()
            .await
            .expect("an answer");
        assert_eq!(r.status(), 403, "garbage to {}", call.path());
    }
    let forged = Sealer::new(&RaftKey::derive(&DeploymentKey::generate(), "any"));
    let (frame, _) = forged
        .seal_request(RaftCall::Vote, &[7u8; 16], 9, 1, b"not a vote")
        .expect("sealed");
    let r = client
        .post(url(RaftCall::Vote))
        .body(frame)
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status(), 403);
    let r = client
        .get(url(RaftCall::Append))
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status(), 405);
    assert_eq!(a.raft().await["term"], term, "the term moved");
}

/// Two guest names of one component: what one writes through one
/// follower (forwarded to the leader) the other never reads, through any
/// enclave; its own name reads it everywhere.
#[tokio::test(flavor = "multi_thread")]
async fn a_guest_reads_only_its_own_namespace_through_any_enclave() {
    let d = Deployment::new(3).await;
    let (a, b, c) = three(&d).await;
    a.rt.deploy_ok("lin-a", &guest("kv-lin"), "").await;
    a.rt.deploy_ok("lin-b", &guest("kv-lin"), "").await;
    within(
        Duration::from_secs(10),
        "both guests everywhere",
        || async {
            for m in [&a, &b, &c] {
                for g in ["lin-a", "lin-b"] {
                    if m.rt
                        .get(&format!("/{g}/k/none"))
                        .await
                        .1
                        .contains("no guest")
                    {
                        return false;
                    }
                }
            }
            true
        },
    )
    .await;
    assert_eq!(b.rt.put("/lin-a/k/secret", "only-for-a").await, 200);
    for m in [&a, &b, &c] {
        assert_eq!(
            m.rt.get("/lin-a/k/secret").await,
            (200, "only-for-a".into())
        );
        let (status, body) = m.rt.get("/lin-b/k/secret").await;
        assert_eq!(status, 404, "lin-b read {body:?}");
    }
}

/// The host pauses the leader (SIGSTOP) just after it served a read from
/// its lease, lets the two others elect a leader and take a write, then
/// resumes it cut off from them, so nothing tells it it was deposed: its
/// first read after it wakes fails, and never names the old value. Its
/// lease was measured on a clock that ran on while it slept, so it
/// lapsed, and the read must ask a majority, which it cannot reach. Let
/// back in, it reads the new value.
#[tokio::test(flavor = "multi_thread")]
async fn a_leader_paused_past_its_lease_serves_no_stale_read() {
    let d = Deployment::new(3).await;
    let (a, b, c) = three(&d).await;
    lin_everywhere(&a, &b, &c).await;
    assert_eq!(a.rt.put("/lin/k/x", "old").await, 200);
    assert_eq!(a.rt.get("/lin/k/x").await, (200, "old".into()));
    a.rt.pause();
    within(Duration::from_secs(30), "b or c leads", || async {
        b.leads().await || c.leads().await
    })
    .await;
    let new = if b.leads().await { &b } else { &c };
    within(
        Duration::from_secs(10),
        "a write through the new leader",
        || async { new.rt.put("/lin/k/x", "new").await == 200 },
    )
    .await;
    a.isolate(&d.ports, true);
    a.rt.resume();
    let (status, body) = a.rt.get("/lin/k/x").await;
    assert!(
        status != 200,
        "the old leader, resumed alone, read {status} {body:?} after the new leader took \"new\""
    );
    a.isolate(&d.ports, false);
    within(
        Duration::from_secs(20),
        "the old leader reads the new value",
        || async { a.rt.get("/lin/k/x").await == (200, "new".to_string()) },
    )
    .await;
}

/// The guest `lin` on three settled members, `b` a follower holding a read
/// lease after reading "old" (its `read_lease_ms` says so).
async fn a_follower_with_a_lease(d: &Deployment) -> (Member, Member, Member) {
    let (a, b, c) = three(d).await;
    lin_everywhere(&a, &b, &c).await;
    assert_eq!(a.rt.put("/lin/k/x", "old").await, 200);
    within(Duration::from_secs(10), "b holds a read lease", || async {
        assert_eq!(b.rt.get("/lin/k/x").await, (200, "old".into()));
        b.raft().await["read_lease_ms"].as_u64().is_some()
    })
    .await;
    (a, b, c)
}

/// The host pauses a follower (SIGSTOP) while it holds a read lease. The
/// leader's write waits out that lease (a write is answered only once
/// every follower whose lease may run holds it) and then succeeds; the
/// follower, resumed cut off from the others, finds its lease lapsed
/// (measured from its own clock, which ran on) and never reads "old".
#[tokio::test(flavor = "multi_thread")]
async fn a_follower_paused_holding_a_read_lease_serves_no_stale_read() {
    let d = Deployment::new(3).await;
    let (a, b, _c) = a_follower_with_a_lease(&d).await;
    b.rt.pause();
    assert_eq!(
        a.rt.put("/lin/k/x", "new").await,
        200,
        "the write waits out the lease"
    );
    b.isolate(&d.ports, true);
    b.rt.resume();
    cut_off_reads_nothing_stale(&d, &b, "resumed alone").await;
}

/// The host cuts a follower off while it holds a read lease, then a
/// client writes through the leader: the write is answered only after the
/// follower's lease ran out, so a read on the follower that starts after
/// the answer finds no lease, cannot reach a majority, and fails rather
/// than answer "old".
#[tokio::test(flavor = "multi_thread")]
async fn a_partition_while_leases_run_delays_the_write_and_fails_the_read() {
    let d = Deployment::new(3).await;
    let (a, b, _c) = a_follower_with_a_lease(&d).await;
    b.isolate(&d.ports, true);
    assert_eq!(a.rt.put("/lin/k/x", "new").await, 200);
    cut_off_reads_nothing_stale(&d, &b, "cut off").await;
}

/// `b`, cut off after the leader took "new", fails to read rather than
/// answer "old"; let back in, it reads "new".
async fn cut_off_reads_nothing_stale(d: &Deployment, b: &Member, how: &str) {
    let (status, body) = b.rt.get("/lin/k/x").await;
    assert!(
        status != 200,
        "the follower, {how}, read {status} {body:?} after the leader took \"new\""
    );
    b.isolate(&d.ports, false);
    within(Duration::from_secs(20), "b reads the new value", || async {
        b.rt.get("/lin/k/x").await == (200, "new".to_string())
    })
    .await;
}
