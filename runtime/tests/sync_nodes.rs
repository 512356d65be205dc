//! Several sync nodes in one process, joined by an in-memory link the test
//! plays the hostile host on (`sync_support`): designation, convergence,
//! writes reaching workers, and what a worker refuses whatever the host
//! does with the link.

mod common;
mod sync_support;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use nacre_runtime::fleet::{Deployment, Role};
use nacre_runtime::guests::GuestName;
use nacre_runtime::guests::state::{StateError, StateStore};
use nacre_sync::wire::Heartbeat;
use sync_support::{Enclave, Fault, LEADER, Net, Record, attester, until};

/// Genesis waits this long for a sign of the deployment: short, as
/// nothing else is out there.
const GENESIS: Duration = Duration::from_millis(200);
/// Long enough for a few heartbeats (one a second) and exchanges.
const LIMIT: Duration = Duration::from_secs(20);

fn slot(name: &str) -> GuestName {
    name.parse().expect("guest name")
}

fn worker() -> Role {
    Role::Worker {
        leader: LEADER.into(),
    }
}

/// A leader at `a.test:444` (the name leads there) and workers at
/// `b.test:444`, `c.test:444`…, converged on the leader's key set.
async fn deployment(net: &Arc<Net>, workers: &[&str]) -> (Enclave, Vec<Enclave>) {
    let dev = attester();
    net.name(LEADER, "a.test:444");
    let a = Enclave::start(net, dev.clone(), "a.test:444", LEADER, GENESIS);
    let ws: Vec<Enclave> = workers
        .iter()
        .map(|w| Enclave::start(net, dev.clone(), w, LEADER, GENESIS))
        .collect();
    until(LIMIT, "a leader and workers holding its key set", || {
        let Some(keys) = a.node.key_set() else {
            return false;
        };
        a.role() == Role::Leader
            && ws
                .iter()
                .all(|w| w.role() == worker() && w.node.key_set().as_ref() == Some(&keys))
    })
    .await;
    (a, ws)
}

/// The requests from `from` to `to` by `method` at a path beginning with
/// `path` that got `status`.
fn answered(
    net: &Net,
    from: &str,
    to: &str,
    method: &str,
    path: &str,
    status: StatusCode,
) -> Vec<Record> {
    net.records(|r| {
        r.from == from
            && r.to == to
            && r.method == method
            && r.path.starts_with(path)
            && r.status == Some(status)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_and_two_workers_converge_and_a_write_on_the_leader_reaches_both() {
    let net = Net::new();
    // The host is slow to one worker; it still converges.
    net.fault(None, "c.test:444", Fault::Delay(Duration::from_millis(200)));
    let (a, ws) = deployment(&net, &["b.test:444", "c.test:444"]).await;
    let keys = a.node.key_set().expect("the leader holds keys");
    assert_eq!(keys.version, 1, "genesis makes version 1");
    for w in &ws {
        // The deployment key, certificate and state are in the payload
        // whose hash is compared: the workers hold the leader's, and serve
        // its certificate.
        assert_eq!(w.node.key_set(), Some(keys.clone()));
        assert_eq!(w.identity.leaf_sha256(), a.identity.leaf_sha256());
        assert!(w.node.holds_keys());
        assert!(
            w.node
                .stats()
                .received
                .load(std::sync::atomic::Ordering::Relaxed)
                >= 1
        );
    }
    assert!(
        a.node
            .stats()
            .sent
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 2
    );
    for w in &ws {
        assert_ne!(
            w.own_cert, a.own_cert,
            "every enclave starts with a certificate of its own"
        );
    }

    // A write where writes happen: the leader.
    a.state
        .put(&slot("hello"), Arc::from(&b"written on the leader"[..]))
        .await
        .expect("the leader takes writes");
    until(LIMIT, "the write on both workers", || {
        ws.iter().all(|w| {
            w.state.read(&slot("hello")).ok().flatten().as_deref()
                == Some(&b"written on the leader"[..])
        })
    })
    .await;
    let after = a.node.key_set().expect("keys");
    assert_eq!(after.lineage, keys.lineage, "a write keeps the key set");
    assert!(
        after.version > keys.version,
        "a write makes a later version"
    );
    until(LIMIT, "the workers at the leader's version", || {
        ws.iter().all(|w| w.node.key_set() == a.node.key_set())
    })
    .await;
    // Workers do not take writes.
    assert!(matches!(
        ws[0]
            .state
            .put(&slot("hello"), Arc::from(&b"on a worker"[..]))
            .await,
        Err(StateError::NotLeader)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_heartbeat_is_refused_and_a_changed_one_is_not_believed() {
    let net = Net::new();
    let (a, ws) = deployment(&net, &["b.test:444"]).await;
    let b = &ws[0];
    // Another heartbeat, so one recorded was sent holding the keys.
    let seen = answered(
        &net,
        &b.address,
        LEADER,
        "POST",
        "/enclave/heartbeat",
        StatusCode::OK,
    )
    .len();
    until(LIMIT, "a heartbeat holding keys", || {
        answered(
            &net,
            &b.address,
            LEADER,
            "POST",
            "/enclave/heartbeat",
            StatusCode::OK,
        )
        .len()
            > seen + 1
    })
    .await;
    let recorded = answered(
        &net,
        &b.address,
        LEADER,
        "POST",
        "/enclave/heartbeat",
        StatusCode::OK,
    )
    .pop()
    .expect("a heartbeat");
    let beat: Heartbeat = serde_json::from_slice(&recorded.body).expect("heartbeat");
    assert!(beat.tag.is_some(), "a member's heartbeat is tagged");

    let (status, body) = net.replay(&recorded, &a.address).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(
        String::from_utf8_lossy(&body).contains("a replayed heartbeat"),
        "{body:?}"
    );

    // A later count the host wrote in: the tag no longer holds.
    let mut changed = beat.clone();
    changed.seq += 1000;
    let (status, body) = net
        .send(
            &a.address,
            "POST",
            "/enclave/heartbeat",
            Bytes::from(serde_json::to_vec(&changed).expect("json")),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(
        String::from_utf8_lossy(&body).contains("not tagged with this deployment's key"),
        "{body:?}"
    );
}

/// A heartbeat of a worker holding nothing (untagged): anyone on the host
/// can make one, naming any address.
fn stranger_beat(worker: &str) -> Bytes {
    let beat = Heartbeat {
        hashed_keys: None,
        worker_hostname: worker.into(),
        lineage: None,
        version: 0,
        session: "5a".repeat(16),
        seq: 1,
        tag: None,
    };
    Bytes::from(serde_json::to_vec(&beat).expect("json"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_enclave_of_the_deployment_cannot_roll_a_worker_back() {
    let net = Net::new();
    let (a, ws) = deployment(&net, &["b.test:444", "c.test:444"]).await;
    let (b, c) = (&ws[0], &ws[1]);
    let old = c.node.key_set().expect("c holds version 1");
    // The host cuts c off, and the deployment moves on without it.
    net.fault(Some(&c.address), "*", Fault::Drop);
    net.fault(None, &c.address, Fault::Drop);
    a.state
        .put(&slot("hello"), Arc::from(&b"version two"[..]))
        .await
        .expect("write");
    until(LIMIT, "b at the new version", || {
        b.node.key_set().is_some_and(|k| k.version > old.version)
            && b.node.key_set() == a.node.key_set()
    })
    .await;
    let new = b.node.key_set().expect("keys");
    until(LIMIT, "c noticing its leader gone", || {
        c.role() == Role::Designating
    })
    .await;
    // Then resurrects c as a leader, to itself only, lets it reach b, and
    // forges a heartbeat naming b: c sends b its older version.
    net.fault(Some(&c.address), LEADER, Fault::Redirect(c.address.clone()));
    net.fault(
        Some(&c.address),
        &b.address,
        Fault::Redirect(b.address.clone()),
    );
    until(LIMIT, "c leading", || c.role() == Role::Leader).await;
    let (status, _) = net
        .send(
            &c.address,
            "POST",
            "/enclave/heartbeat",
            stranger_beat(&b.address),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "c takes a stranger's heartbeat");
    until(LIMIT, "c's delivery to b refused", || {
        !answered(
            &net,
            &c.address,
            &b.address,
            "POST",
            "/enclave/sync",
            StatusCode::CONFLICT,
        )
        .is_empty()
    })
    .await;
    let refused = answered(
        &net,
        &c.address,
        &b.address,
        "POST",
        "/enclave/sync",
        StatusCode::CONFLICT,
    );
    assert!(
        refused[0].answer_text().contains(&format!(
            "these keys are not taken: version {} is not later than version {}",
            old.version, new.version
        )),
        "{}",
        refused[0].answer_text()
    );
    assert_eq!(b.node.key_set(), Some(new), "b keeps the later version");
    assert_eq!(
        b.state.get(&slot("hello")).await.ok().flatten().as_deref(),
        Some(&b"version two"[..])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranger_at_the_leaders_name_gives_a_worker_nothing() {
    let net = Net::new();
    let (a, ws) = deployment(&net, &["b.test:444"]).await;
    let b = &ws[0];
    let ours = b.node.key_set().expect("b holds the deployment's keys");
    // An enclave of the same image and deployment name, started apart
    // (the name leads to it, for it): its own key set.
    // (The host sends its probes to itself from its first one on: it never
    // meets the deployment.)
    net.fault(
        Some("s.test:444"),
        LEADER,
        Fault::Redirect("s.test:444".into()),
    );
    let s = Enclave::start(&net, a.attester.clone(), "s.test:444", LEADER, GENESIS);
    until(LIMIT, "the stranger leading with keys of its own", || {
        s.role() == Role::Leader && s.node.key_set().is_some()
    })
    .await;
    let theirs = s.node.key_set().expect("keys");
    assert_ne!(theirs.lineage, ours.lineage);

    // The host sends b's traffic for the leader's name to the stranger.
    net.fault(Some(&b.address), LEADER, Fault::Redirect(s.address.clone()));
    until(LIMIT, "b's heartbeat refused by the stranger", || {
        answered(
            &net,
            &b.address,
            LEADER,
            "POST",
            "/enclave/heartbeat",
            StatusCode::CONFLICT,
        )
        .iter()
        .any(|r| r.reached.as_deref() == Some(s.address.as_str()))
    })
    .await;
    let split = answered(
        &net,
        &b.address,
        LEADER,
        "POST",
        "/enclave/heartbeat",
        StatusCode::CONFLICT,
    );
    assert!(
        split[0].answer_text().contains("the deployment is split"),
        "{}",
        split[0].answer_text()
    );

    // And makes the stranger push its keys to b.
    let (status, _) = net
        .send(
            &s.address,
            "POST",
            "/enclave/heartbeat",
            stranger_beat(&b.address),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    until(LIMIT, "the stranger's offer request refused", || {
        !answered(
            &net,
            &s.address,
            &b.address,
            "GET",
            "/enclave/sync",
            StatusCode::FORBIDDEN,
        )
        .is_empty()
    })
    .await;
    let refused = answered(
        &net,
        &s.address,
        &b.address,
        "GET",
        "/enclave/sync",
        StatusCode::FORBIDDEN,
    );
    assert!(
        refused[0]
            .answer_text()
            .contains("this enclave holds keys: the request must carry its deployment key's tag"),
        "{}",
        refused[0].answer_text()
    );
    assert!(
        answered(
            &net,
            &s.address,
            &b.address,
            "POST",
            "/enclave/sync",
            StatusCode::OK
        )
        .is_empty()
    );
    assert_eq!(
        b.node.key_set(),
        Some(ours),
        "b keeps its deployment's keys"
    );
    assert_eq!(b.identity.leaf_sha256(), a.identity.leaf_sha256());
    assert_ne!(b.identity.leaf_sha256(), s.identity.leaf_sha256());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enclave_holding_nothing_refuses_another_deployments_keys() {
    let net = Net::new();
    let dev = attester();
    // d is of `leader.test`, whose leader nobody answers: it holds
    // nothing. o leads `other.test` and holds that deployment's keys.
    net.fault(None, LEADER, Fault::Drop);
    net.name("other.test:444", "o.test:444");
    let d = Enclave::start(&net, dev.clone(), "d.test:444", LEADER, GENESIS);
    let o = Enclave::start(&net, dev, "o.test:444", "other.test:444", GENESIS);
    until(LIMIT, "o leading with keys", || {
        o.role() == Role::Leader && o.node.key_set().is_some()
    })
    .await;
    let cert = d.identity.leaf_sha256();
    let (status, _) = net
        .send(
            &o.address,
            "POST",
            "/enclave/heartbeat",
            stranger_beat(&d.address),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    until(LIMIT, "o's delivery to d refused", || {
        !answered(
            &net,
            &o.address,
            &d.address,
            "POST",
            "/enclave/sync",
            StatusCode::CONFLICT,
        )
        .is_empty()
    })
    .await;
    let refused = answered(
        &net,
        &o.address,
        &d.address,
        "POST",
        "/enclave/sync",
        StatusCode::CONFLICT,
    );
    assert!(
        refused[0].answer_text().contains(
            "these keys are not taken: it belongs to deployment other.test:444, this enclave to leader.test:444"
        ),
        "{}",
        refused[0].answer_text()
    );
    assert_eq!(d.node.key_set(), None);
    assert!(!d.node.holds_keys());
    assert_eq!(
        d.identity.leaf_sha256(),
        cert,
        "d serves its own certificate still"
    );
    assert_eq!(d.role(), Role::Designating);
}
