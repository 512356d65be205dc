//! Several enclaves, one service: each behind its own host proxy,
//! one shared dev root, the leader's name a forwarder the test points.

use std::time::Duration;

use nacre_tests::fleet::{LeaderName, Member, MemberSpec, SyncPorts, other_image, pcr0, within};
use nacre_tests::net::contains;
use nacre_tests::{bin, guest, nacre, temp_dir};

/// Every member's certificate hash equals `cert`.
async fn all_serve(members: &[&Member], cert: &str) -> bool {
    for m in members {
        if m.certificate().await != cert {
            return false;
        }
    }
    true
}

async fn put_state(m: &Member, value: &'static str) -> (u16, String) {
    let r =
        m.rt.client()
            .put(format!("{}/p/state", m.rt.url()))
            .body(value)
            .send()
            .await
            .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// Three enclaves settle on one leader and share its certificate, guests
/// and state (replicated: written on any of them); the leader dies, the
/// others elect one of themselves, with the same keys and state, and the
/// dead one is removed; a fourth, fresh enclave joins and gets them too;
/// the leader dies again and the name moves to a fresh enclave, which joins
/// rather than start a deployment of its own. No key, state or component
/// byte crosses the host in the clear.
#[tokio::test(flavor = "multi_thread")]
async fn a_deployment_shares_keys_state_and_guests_and_survives_its_leader() {
    let root = temp_dir("fleet-root");
    let name = LeaderName::start().await;
    let ports = SyncPorts::hold(5);
    name.point_to(ports[0]);
    let spec = |i: usize| MemberSpec {
        // The first leader's key is the test's, to look for on the wire.
        test_certificate: i == 0,
        ..MemberSpec::new(&name, &root, &ports, i)
    };
    let started = std::time::Instant::now();
    let mut a = Some(Member::start(spec(0)).await);
    let mut b = Some(Member::start(spec(1)).await);
    let mut c = Some(Member::start(spec(2)).await);
    let leader = a.as_ref().unwrap();
    let b_ref = b.as_ref().unwrap();
    let c_ref = c.as_ref().unwrap();
    let fleet_cert = leader.certificate().await;

    // Designation settles on the enclave at the name, which starts the
    // deployment and its replicated data; the others join as voters and
    // end up serving its certificate.
    within(
        Duration::from_secs(30),
        "designation, first sync and three voters",
        || async {
            leader.leads().await
                && b_ref.role().await == "worker"
                && c_ref.role().await == "worker"
                && leader.voters().await == 3
                && all_serve(&[leader, b_ref, c_ref], &fleet_cert).await
        },
    )
    .await;
    eprintln!(
        "three enclaves synchronized {:?} after the first started",
        started.elapsed()
    );
    // One notion of who leads: the workers name the leader's address and
    // its Raft node.
    let leader_node = leader.raft().await["node"].clone();
    within(
        Duration::from_secs(5),
        "one notion of who leads",
        || async {
            let config = b_ref.config().await;
            config["sync"]["leader"] == leader.advertise().as_str()
                && config["sync"]["raft"]["leader"] == leader_node
        },
    )
    .await;

    // A guest deployed on the leader answers on every enclave; every
    // enclave serves the same manifest. (Each worker compiles the guests
    // itself, three processes on CI's two cores: the time it took is
    // printed, and bounded loosely so that load is no failure.)
    leader.rt.deploy_ok("hello", &guest("hello"), "").await;
    leader.rt.deploy_ok("p", &guest("kv-probe"), "").await;
    // A TCP guest too: its port and TLS mode travel with it (the manifest
    // compared below has them).
    leader
        .rt
        .deploy_ok("t", &guest("tcp-echo"), "tcp=8080&tls=guest")
        .await;
    let took = within(
        Duration::from_secs(10),
        "the deploy reaching the workers",
        || async {
            b_ref.rt.get("/hello/world").await.0 == 200
                && c_ref.rt.get("/hello/world").await.0 == 200
        },
    )
    .await;
    eprintln!("a deploy on the leader answered on both workers after {took:?}");
    let manifest = leader.rt.get("/enclave/manifest").await.1;
    within(
        Duration::from_secs(10),
        "the same manifest everywhere",
        || async {
            b_ref.rt.get("/enclave/manifest").await.1 == manifest
                && c_ref.rt.get("/enclave/manifest").await.1 == manifest
        },
    )
    .await;

    // Admin writes go to the leader, which a worker names.
    let r = b_ref.rt.deploy("other", &guest("hello"), "").await;
    assert_eq!(r.status(), 409);
    assert!(r.text().await.unwrap().contains(&leader.advertise()));

    // State is one for the deployment: a put on the leader or on a worker
    // is committed by a majority before it answers, and read everywhere
    // at once after.
    let secret_state = "STATE-secret-4e1d";
    assert_eq!(put_state(leader, secret_state).await.0, 200);
    assert_eq!(
        b_ref.rt.get("/p/state").await,
        (200, secret_state.to_string())
    );
    assert_eq!(
        c_ref.rt.get("/p/state").await,
        (200, secret_state.to_string())
    );
    let from_worker = "STATE-from-a-worker";
    assert_eq!(put_state(b_ref, from_worker).await.0, 200);
    assert_eq!(
        leader.rt.get("/p/state").await,
        (200, from_worker.to_string())
    );
    assert_eq!(put_state(leader, secret_state).await.0, 200);

    // `nacre attest` passes against each, and they all bind one
    // certificate.
    for m in [leader, b_ref, c_ref] {
        let root_pem = root.join("root.pem").display().to_string();
        let (ok, out, err) = nacre(&["attest", &m.rt.url(), "--root", &root_pem]);
        assert!(ok, "{err}");
        assert!(out.contains(&fleet_cert), "{out}");
    }

    // The host saw ciphertext only: not the state, not the TLS key, not a
    // component's bytes.
    let key = std::fs::read(leader.rt.ca_file().unwrap().with_file_name("key.pem")).unwrap();
    let key_der =
        nacre_transport::pem::private_key(&leader.rt.ca_file().unwrap().with_file_name("key.pem"))
            .unwrap();
    let component = std::fs::read(guest("kv-probe")).unwrap();
    let recorded: Vec<u8> = [&leader.egress, &b_ref.egress, &c_ref.egress]
        .iter()
        .flat_map(|r| r.recorded())
        .collect();
    assert!(
        recorded.len() > 10_000,
        "the sync links carried {} bytes",
        recorded.len()
    );
    for (what, needle) in [
        ("the state", secret_state.as_bytes()),
        ("the state written on a worker", from_worker.as_bytes()),
        ("the TLS key (PEM)", &key[40..100]),
        ("the TLS key (DER)", &key_der.secret_der()[10..60]),
        (
            "a component",
            &component[component.len() / 2..component.len() / 2 + 64],
        ),
    ] {
        assert!(
            !contains(&recorded, needle),
            "{what} crossed the host in the clear"
        );
    }

    // The leader dies; the other two elect one of themselves with the
    // same keys and state, and remove the dead voter. The name follows.
    drop(a.take());
    let took = within(Duration::from_secs(15), "failover", || async {
        let (lb, lc) = (b_ref.leads().await, c_ref.leads().await);
        (lb ^ lc) && b_ref.voters().await == 2 && c_ref.voters().await == 2
    })
    .await;
    eprintln!("failover to a new leader, the dead voter removed, took {took:?}");
    let (new, other) = if b_ref.leads().await {
        (b_ref, c_ref)
    } else {
        (c_ref, b_ref)
    };
    name.point_to(new.sync_port);
    assert_eq!(new.certificate().await, fleet_cert);
    // Removing the dead voter may bring one more short election, during
    // which calls fail fast; then the state is there.
    within(
        Duration::from_secs(5),
        "the state after failover",
        || async { new.rt.get("/p/state").await == (200, secret_state.to_string()) },
    )
    .await;
    let moved_on = "STATE-after-failover";
    within(Duration::from_secs(5), "a write after failover", || async {
        put_state(other, moved_on).await.0 == 200
    })
    .await;
    within(Duration::from_secs(5), "the write read back", || async {
        new.rt.get("/p/state").await == (200, moved_on.to_string())
    })
    .await;

    // A fourth, fresh enclave joins and gets the same keys, guests and
    // state, and becomes the third voter.
    let d = Member::start(spec(3)).await;
    within(Duration::from_secs(20), "a new enclave joining", || async {
        d.role().await == "worker"
            && d.certificate().await == fleet_cert
            && d.rt.get("/p/state").await == (200, moved_on.to_string())
            && new.voters().await == 3
            // The new voter itself holds its promotion before the next
            // fault: a leader dying within milliseconds of a promotion
            // is a case of its own (see the issue note), not this test's.
            && d.voters().await == 3
    })
    .await;

    // The leader dies again and the name moves to a fresh enclave while
    // the others hold the keys: it takes theirs and joins (the state is
    // there) rather than split the deployment with keys of its own.
    let b_led = std::ptr::eq(new, b_ref);
    if b_led {
        drop(b.take());
    } else {
        drop(c.take());
    }
    name.point_to(ports[4]);
    let e = Member::start(spec(4)).await;
    let took = within(
        Duration::from_secs(30),
        "a fresh enclave at the name joining with the deployment's keys",
        || async {
            e.certificate().await == fleet_cert
                && e.rt.get("/p/state").await == (200, moved_on.to_string())
                && e.raft().await["voters"]
                    .as_array()
                    .is_some_and(|v| v.len() == 3)
        },
    )
    .await;
    eprintln!("a fresh enclave at the name joined the deployment after {took:?}");
}

/// A peer running another image, or chaining to another root, gets no
/// keys, and the leader's log names the check that refused it; the same
/// image is accepted when both sides list each other's PCR0 (a rolling
/// upgrade).
#[tokio::test(flavor = "multi_thread")]
async fn peers_of_another_image_or_root_get_no_keys_unless_accepted() {
    let root = temp_dir("fleet-root");
    let name = LeaderName::start().await;
    let ports = SyncPorts::hold(3);
    name.point_to(ports[0]);
    let other = other_image();
    let (ours, theirs) = (pcr0(&bin("nacre-runtime")), pcr0(&other));
    assert_ne!(ours, theirs);
    let stranger_root = temp_dir("stranger-root");
    let spec = |i: usize, program: Option<std::path::PathBuf>, dev_root| MemberSpec {
        program,
        ..MemberSpec::new(&name, dev_root, &ports, i)
    };
    let leader = Member::start(spec(0, None, &root)).await;
    let upgraded = Member::start(spec(1, Some(other.clone()), &root)).await;
    let stranger = Member::start(spec(2, None, &stranger_root)).await;
    let cert = leader.certificate().await;
    within(Duration::from_secs(30), "both refusals logged", || async {
        let log = leader.rt.log();
        log.contains("PCR0 differs") && log.contains("chain untrusted")
    })
    .await;
    for m in [&upgraded, &stranger] {
        assert_ne!(m.certificate().await, cert, "a refused peer got the keys");
    }
    drop((upgraded, stranger, leader));

    // A rolling upgrade: each side accepts the other's PCR0.
    let name = LeaderName::start().await;
    let ports = SyncPorts::hold(2);
    name.point_to(ports[0]);
    let accept_theirs = ["--sync-accept-pcr0", theirs.as_str()];
    let accept_ours = ["--sync-accept-pcr0", ours.as_str()];
    let leader = Member::start(MemberSpec {
        extra: &accept_theirs,
        ..MemberSpec::new(&name, &root, &ports, 0)
    })
    .await;
    let upgraded = Member::start(MemberSpec {
        program: Some(other),
        extra: &accept_ours,
        ..MemberSpec::new(&name, &root, &ports, 1)
    })
    .await;
    let cert = leader.certificate().await;
    within(
        Duration::from_secs(30),
        "the upgraded image synchronized",
        || async { upgraded.certificate().await == cert },
    )
    .await;
}
