//! A deployment against its host: the host starts, pauses (SIGSTOP), kills
//! and restarts enclaves at the worst moment, keeps a stale one alive,
//! stops relaying links and forges what is not sealed. Nothing it does
//! rolls the deployment back, wipes it, or makes a member read a large
//! body it did not ask for.

use std::time::{Duration, Instant};

use nacre_tests::fleet::{Deployment, Member, MemberSpec, within};
use nacre_tests::guest;

async fn put_state(m: &Member, value: &str) -> u16 {
    m.rt.put("/p/state", value).await
}

async fn state(m: &Member) -> String {
    let (status, body) = m.rt.get("/p/state").await;
    if status == 200 {
        body
    } else {
        format!("{status}: {body}")
    }
}

/// A client of the sync listener at host port `port`, as the host (or
/// anyone who reaches it) would be: any certificate.
fn sync_client() -> reqwest::Client {
    reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

/// A heartbeat as the host would forge it: from `worker`, claiming
/// `lineage` (or none), in `session` at `seq`, with `tag` (or none).
fn forged_heartbeat(
    worker: &str,
    lineage: Option<serde_json::Value>,
    session: &str,
    seq: u64,
    tag: Option<String>,
) -> serde_json::Value {
    serde_json::json!({
        "hashed_keys": lineage.as_ref().map(|_| "cd".repeat(32)),
        "worker_hostname": worker,
        "lineage": lineage,
        "version": if lineage.is_some() { 99 } else { 0 },
        "session": session,
        "seq": seq,
        "tag": tag,
    })
}

/// POSTs `heartbeat` to the sync listener at host port `port`; the status
/// (0 if no answer).
async fn post_heartbeat(client: &reqwest::Client, port: u16, heartbeat: &serde_json::Value) -> u16 {
    client
        .post(format!("https://localhost:{port}/enclave/heartbeat"))
        .json(heartbeat)
        .send()
        .await
        .map_or(0, |r| r.status().as_u16())
}

/// Checks `check` holds on every poll for `span`.
async fn always<F, Fut>(span: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let end = Instant::now() + span;
    while Instant::now() < end {
        if let Err(e) = check().await {
            panic!("{what}: {e}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A stale enclave, frozen (SIGSTOP) while the deployment moved on, then
/// made to lead at the name while the up-to-date worker can reach no one:
/// it never serves its old state and never leads (it has no majority, and
/// the worker's newer log wins any election it could stand in); the key
/// material it pushes on forged heartbeats is refused; once the worker is
/// reachable again the two elect the worker's log and both serve the
/// newer state.
#[tokio::test(flavor = "multi_thread")]
async fn a_stale_enclave_cannot_roll_the_deployment_back() {
    let d = Deployment::new(3).await;
    let (name, ports) = (&d.name, &d.ports);
    // Frozen longer than the default test removal (4 s): kept a member.
    let slow_removal = [
        "--raft-heartbeat",
        "100ms",
        "--raft-election-timeout",
        "600ms-1200ms",
        "--raft-remove-after",
        "120s",
    ];
    let spec = |i: usize| MemberSpec {
        extra: &slow_removal,
        ..d.spec(i)
    };
    let mut a = Some(Member::start(spec(0)).await);
    let w = Member::start(spec(1)).await;
    let e = Member::start(spec(2)).await;
    let leader = a.as_ref().expect("a");
    within(Duration::from_secs(30), "designation", || async {
        leader.leads().await
            && w.role().await == "worker"
            && e.role().await == "worker"
            && leader.voters().await == 3
    })
    .await;
    leader.rt.deploy_ok("p", &guest("kv-probe"), "").await;
    assert_eq!(put_state(leader, "old").await, 200);
    within(Duration::from_secs(10), "the guest everywhere", || async {
        state(&w).await == "old" && state(&e).await == "old"
    })
    .await;

    // The host freezes E at the old version; the deployment moves on
    // (the leader and W are a majority).
    e.rt.pause();
    for i in 0..5 {
        assert_eq!(put_state(leader, &format!("new-{i}")).await, 200);
    }
    assert_eq!(state(&w).await, "new-4");

    // The leader dies; W can reach no one; the stale E is at the name.
    drop(a.take());
    w.egress.block(true);
    w.egress.stall(true);
    name.point_to(ports[2]);
    e.rt.resume();

    // Forged heartbeats make E push its keys to W's address.
    let client = sync_client();
    for seq in 1..=5u64 {
        let w_address = format!("localhost:{}", ports[1]);
        let forged = forged_heartbeat(&w_address, None, &"00".repeat(16), seq, None);
        post_heartbeat(&client, ports[2], &forged).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    always(
        Duration::from_secs(5),
        "the old state served, or the stale enclave leading",
        || async {
            let (se, sw, role) = (state(&e).await, state(&w).await, e.role().await);
            if se == "old" || sw == "old" || role == "leader" {
                Err(format!("E serves {se:?} as {role}, W serves {sw:?}"))
            } else {
                Ok(())
            }
        },
    )
    .await;

    // W reachable again: the two elect W's log; nothing was lost.
    w.egress.block(false);
    w.egress.stall(false);
    within(
        Duration::from_secs(30),
        "E and W on the newer state",
        || async { state(&e).await == "new-4" && state(&w).await == "new-4" },
    )
    .await;
    assert_eq!(e.certificate().await, w.certificate().await);
}

/// The leader hangs (SIGSTOP) and the name moves to a fresh enclave: the
/// other two elect a leader among themselves and remove the hung one; the
/// fresh enclave takes the deployment's keys and joins rather than start
/// its own. The hung leader, resumed, acts for nothing (it was removed).
/// Even when the host keeps every member away from a fresh enclave told
/// to start a key set after 1 s, no member takes its keys or its data:
/// nothing is wiped.
#[tokio::test(flavor = "multi_thread")]
async fn a_failover_to_a_fresh_enclave_wipes_nothing() {
    let d = Deployment::new(5).await;
    let (name, ports) = (&d.name, &d.ports);
    let a = d.start(0).await;
    let w = d.start(1).await;
    let x = d.start(2).await;
    within(Duration::from_secs(30), "designation", || async {
        a.leads().await && w.role().await == "worker" && a.voters().await == 3
    })
    .await;
    a.rt.deploy_ok("p", &guest("kv-probe"), "").await;
    assert_eq!(put_state(&a, "kept").await, 200);
    within(Duration::from_secs(10), "the guest everywhere", || async {
        state(&w).await == "kept" && state(&x).await == "kept"
    })
    .await;
    let cert = w.certificate().await;

    // A hangs; the name moves to a fresh enclave, which waits as long as a
    // production deployment would before starting a key set.
    a.rt.pause();
    name.point_to(ports[3]);
    let default_wait = ["--sync-genesis-after", "30s"];
    let f = Member::start(MemberSpec {
        extra: &default_wait,
        ..d.spec(3)
    })
    .await;
    let took = within(
        Duration::from_secs(25),
        "F joining with W's keys",
        || async {
            f.certificate().await == cert
                && state(&f).await == "kept"
                && f.raft().await["voters"]
                    .as_array()
                    .is_some_and(|v| v.len() == 3)
        },
    )
    .await;
    eprintln!("a fresh enclave held the deployment {took:?} after it started");
    assert_eq!(state(&w).await, "kept");
    assert!(!f.rt.log().contains("first key set"));

    // A comes back: it was removed, so it leads nothing. What it still
    // takes it can only forward to the leader: one set of data.
    a.rt.resume();
    tokio::time::sleep(Duration::from_secs(2)).await;
    always(
        Duration::from_secs(5),
        "the removed leader leading",
        || async {
            match a.role().await.as_str() {
                "leader" => Err("A says it leads".to_string()),
                _ => Ok(()),
            }
        },
    )
    .await;
    if put_state(&a, "via-the-removed-one").await == 200 {
        assert_eq!(state(&w).await, "via-the-removed-one");
        assert_eq!(put_state(&w, "kept").await, 200);
    }
    assert_eq!(state(&w).await, "kept");
    drop((a, f));

    // Worse: the host keeps every member away from a fresh enclave told to
    // start a key set after 1 s. The members keep what they hold.
    w.egress.block(true);
    w.egress.stall(true);
    x.egress.block(true);
    x.egress.stall(true);
    name.point_to(ports[4]);
    let hasty = ["--sync-genesis-after", "1s"];
    let g = Member::start(MemberSpec {
        extra: &hasty,
        ..d.spec(4)
    })
    .await;
    within(Duration::from_secs(20), "G starting a key set", || async {
        g.role().await == "leader" && g.rt.log().contains("first key set")
    })
    .await;
    w.egress.block(false);
    w.egress.stall(false);
    x.egress.block(false);
    x.egress.stall(false);
    within(Duration::from_secs(20), "W and X serving again", || async {
        state(&w).await == "kept" && state(&x).await == "kept"
    })
    .await;
    // Delayed frames from the cut-off time may start one more election (a
    // read then fails, saying so); what is served is never G's.
    always(Duration::from_secs(8), "W or X wiped", || async {
        for m in [&w, &x] {
            let (c, s) = (m.certificate().await, state(m).await);
            let failed = s.starts_with("5");
            if c != cert || (s != "kept" && !failed) {
                return Err(format!("a member serves certificate {c} and state {s:?}"));
            }
        }
        Ok(())
    })
    .await;
    assert_eq!(state(&w).await, "kept");
    assert_ne!(g.certificate().await, cert);
}

/// The sync port to strangers: no body is read for a delivery without an
/// open offer (and, to an enclave holding keys, a tag), offers to it need
/// the deployment key, the few offer slots of an enclave that holds
/// nothing cannot all be held, and forged heartbeats are refused or
/// bounded. Memory stays flat under 200 MiB bodies.
#[tokio::test(flavor = "multi_thread")]
async fn the_sync_port_reads_nothing_expensive_for_strangers() {
    let d = Deployment::new(2).await;
    let ports = &d.ports;
    let m = d.start(0).await;
    within(Duration::from_secs(30), "keys held", || async {
        m.role().await == "leader" && m.rt.log().contains("first key set")
    })
    .await;
    let client = sync_client();
    let url = |path: &str| format!("https://localhost:{}{path}", ports[0]);
    let rss_before = m.rt.rss();

    // Four 200 MiB deliveries, none for an open offer.
    let mut posts = Vec::new();
    for _ in 0..4 {
        let client = client.clone();
        let target = url(&format!("/enclave/sync?offer={}", "22".repeat(20)));
        posts.push(tokio::spawn(async move {
            let body = reqwest::Body::wrap_stream(futures::stream::iter(
                (0..200).map(|_| Ok::<_, std::io::Error>(vec![b'x'; 1 << 20])),
            ));
            client
                .post(target)
                .header("content-length", (200u64 << 20).to_string())
                .body(body)
                .send()
                .await
                .map(|r| r.status().as_u16())
        }));
    }
    for p in posts {
        // Refused at once, or the connection closed under the sender.
        if let Ok(Ok(status)) = p.await {
            assert_eq!(status, 403, "a delivery without the deployment key");
        }
    }
    let grew = m.rt.rss().saturating_sub(rss_before);
    assert!(grew < 64 << 20, "the runtime grew by {} MiB", grew >> 20);

    // An offer from a stranger to an enclave that holds keys.
    let r = client
        .get(url(&format!("/enclave/sync?nonce={}", "11".repeat(20))))
        .send()
        .await
        .expect("offer");
    assert_eq!(r.status(), 403);
    assert!(
        r.text()
            .await
            .unwrap_or_default()
            .contains("deployment key")
    );

    // Heartbeats claiming a key set, untagged or with a made-up tag.
    let lineage = serde_json::json!({ "id": "ef".repeat(16), "created_ms": 1 });
    for tag in [None, Some("ab".repeat(32))] {
        let forged = forged_heartbeat(
            "evil.test:444",
            Some(lineage.clone()),
            &"01".repeat(16),
            1,
            tag,
        );
        let status = post_heartbeat(&client, ports[0], &forged).await;
        assert!(
            status == 403 || status == 409,
            "a forged heartbeat: {status}"
        );
    }
    // Strangers holding nothing: a few are kept, then refused.
    let mut refused = 0;
    for i in 0..20 {
        let worker = format!("stranger-{i}.test:444");
        let forged = forged_heartbeat(&worker, None, &format!("{i:032x}"), 1, None);
        if post_heartbeat(&client, ports[0], &forged).await == 429 {
            refused += 1;
        }
    }
    assert!(refused >= 10, "only {refused} of 20 strangers refused");
    // A heartbeat over its bound is refused before it is parsed.
    let r = client
        .post(url("/enclave/heartbeat"))
        .body(vec![b' '; 10_000])
        .send()
        .await
        .expect("heartbeat");
    assert_eq!(r.status(), 413);
}
