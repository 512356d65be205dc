//! A sealed deployment of several enclaves: every one killed, new ones
//! come back with the certificate (no new ACME order), guests, state and
//! key-value data; a store rolled back under a live deployment does not
//! roll it back.

use std::time::{Duration, Instant};

use nacre_tests::fleet::{Deployment, Forwarder, LeaderName, Member, MemberSpec, SyncPorts};
use nacre_tests::pebble::Pebble;

use super::*;

/// The name certificates are ordered for; Pebble's DNS answers 127.0.0.1.
const FQDN: &str = "app.nacre.test";

/// Three enclaves with a Pebble certificate, a guest, state and key-value
/// data; all three killed; three new ones serve the same certificate
/// (Pebble counted one order), guest, state and data. The host's links
/// (KMS, store, sync, ACME) never carried them in the clear.
#[tokio::test(flavor = "multi_thread")]
async fn three_enclaves_killed_come_back_from_the_sealed_snapshot() {
    let balancer = Forwarder::held();
    let pebble = Pebble::start(balancer.port).await;
    let directory = pebble.directory();
    let name = LeaderName::start().await;
    let ports = SyncPorts::hold(3);
    name.point_to(ports[0]);
    let world = World::new(None);
    let ca = pebble.extra_ca().display().to_string();
    let mut flags: Vec<String> = [
        "--fqdn",
        FQDN,
        "--acme-directory",
        &directory,
        "--extra-ca",
        &ca,
        "--metrics-listen",
        "tcp://127.0.0.1:0",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    flags.extend(world.kms.runtime_flags());
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mut proxy = world.kms.proxy_flags(&world.store);
    proxy.extend([
        "--egress-allow-private-to".to_string(),
        format!("localhost:{}", pebble.port),
    ]);
    let spec = |i: usize| MemberSpec {
        extra: &flags,
        proxy_extra: &proxy,
        ..MemberSpec::new(&name, &world.dev_root, &ports, i)
    };
    let b = Member::start(spec(1)).await;
    let c = Member::start(spec(2)).await;
    balancer.spread_over(&[b.proxy.inbound_tcp(), c.proxy.inbound_tcp()]);
    let a = Member::start(spec(0)).await;
    within(
        Duration::from_secs(90),
        "one CA certificate everywhere",
        || async {
            let mut certs = std::collections::BTreeSet::new();
            for m in [&a, &b, &c] {
                certs.insert(m.certificate().await);
            }
            let source = a.config().await["tls_certificate"]
                .as_str()
                .map(str::to_string);
            a.leads().await && certs.len() == 1 && source.as_deref() == Some("acme")
        },
    )
    .await;
    let cert = a.certificate().await;
    let info = a.rt.deploy_ok("p", &guest("kv-probe"), "").await;
    let state = "STATE-fleet-sealed-31d9";
    let value = "KV-fleet-sealed-8e2a";
    assert_eq!(put(&a.rt, "/p/state", state).await.0, 200);
    assert_eq!(put(&a.rt, "/p/k/box/key", value).await.0, 200);
    until_written(&a.rt, 0.0).await;
    let before = [&a, &b, &c];
    let mut seen = Vec::new();
    for m in before {
        seen.extend(m.egress.recorded());
        seen.extend(m.control.recorded());
    }
    drop((a, b, c));

    // Three new enclaves; the load balancer now sends the CA (which has
    // nothing to validate) to them.
    let started = Instant::now();
    let a = Member::start(spec(0)).await;
    let b = Member::start(spec(1)).await;
    let c = Member::start(spec(2)).await;
    balancer.spread_over(&[b.proxy.inbound_tcp(), c.proxy.inbound_tcp()]);
    let mut last = Vec::new();
    loop {
        last.clear();
        for m in [&a, &b, &c] {
            last.push((
                m.role().await,
                m.certificate().await == cert,
                m.rt.get("/p/state").await,
                m.rt.get("/p/k/box/key").await,
            ));
        }
        let back = last.iter().all(|(_, same, s, v)| {
            *same && *s == (200, state.to_string()) && *v == (200, value.to_string())
        });
        if back && last[0].0 == "leader" {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the deployment not back within 60 s: {last:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let took = started.elapsed();
    eprintln!(
        "cold start of three enclaves: serving the deployment {took:?} after the first started ({:?} in all)",
        started.elapsed()
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        (pebble.orders(), pebble.issued()),
        (1, 1),
        "{}",
        pebble.log()
    );
    for m in [&a, &b, &c] {
        let (ok, out) = attest(&m.rt, &world.dev_root, "p", &info.sha256);
        assert!(ok, "{out}");
    }

    for m in [&a, &b, &c] {
        seen.extend(m.egress.recorded());
        seen.extend(m.control.recorded());
    }
    never_in_the_clear(&seen, state, value);
}

/// A live deployment and a store the host rolls back: a worker and then
/// the leader restarted from the older snapshot end up with the newer
/// state the live members hold (they join the live group rather than
/// start one from what the store showed them), and a cold start after
/// that has it too. Three enclaves: the replicated data survives the
/// loss of one, never of two.
#[tokio::test(flavor = "multi_thread")]
async fn a_store_rolled_back_under_a_live_deployment_rolls_nothing_back() {
    let d = Deployment::new(3).await;
    let world = World::in_root(d.root.clone(), None);
    let mut flags = vec!["--metrics-listen".to_string(), "tcp://127.0.0.1:0".into()];
    flags.extend(world.kms.runtime_flags());
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let proxy = world.kms.proxy_flags(&world.store);
    let spec = |i: usize| MemberSpec {
        extra: &flags,
        proxy_extra: &proxy,
        ..d.spec(i)
    };
    let a = Member::start(spec(0)).await;
    let b = Member::start(spec(1)).await;
    let c = Member::start(spec(2)).await;
    within(Duration::from_secs(30), "designation", || async {
        a.leads().await && b.role().await == "worker" && a.voters().await == 3
    })
    .await;
    a.rt.deploy_ok("p", &guest("kv-probe"), "").await;
    assert_eq!(put(&a.rt, "/p/state", "older").await.0, 200);
    let seq = until_written(&a.rt, 0.0).await;
    let older = temp_dir("older-store");
    copy_dir(&world.store, &older);
    assert_eq!(put(&a.rt, "/p/state", "newer").await.0, 200);
    until_written(&a.rt, seq).await;

    // The host puts the older store back and restarts a worker.
    let _ = std::fs::remove_dir_all(&world.store);
    copy_dir(&older, &world.store);
    drop(b);
    let b = Member::start(spec(1)).await;
    within(
        Duration::from_secs(20),
        "the worker with the newer state, a voter again",
        || async {
            b.rt.get("/p/state").await == (200, "newer".to_string())
                && a.voters_are(&[&a, &b, &c]).await
        },
    )
    .await;

    // Then the leader, whose name still leads to it: the others elect a
    // leader among themselves, and the restarted enclave at the name
    // joins them.
    drop(a);
    let a = Member::start(spec(0)).await;
    within(
        Duration::from_secs(30),
        "the restarted enclave with the newer state",
        || async {
            a.rt.get("/p/state").await == (200, "newer".to_string())
                && (b.leads().await || c.leads().await)
                && b.voters_are(&[&a, &b, &c]).await
        },
    )
    .await;
    assert!(
        !a.rt
            .log()
            .contains("started the deployment's replicated data here"),
        "the enclave restarted from an older store started a group of its own"
    );
    let leader = if b.leads().await { &b } else { &c };
    until_written(&leader.rt, 0.0).await;

    // Everyone stops; the store, as the host left it, brings back the
    // newer state.
    drop((a, b, c));
    let a = Member::start(spec(0)).await;
    within(
        Duration::from_secs(30),
        "a cold start with the newer state",
        || async { a.rt.get("/p/state").await == (200, "newer".to_string()) },
    )
    .await;
}

/// Copies `from` into `to`, recursively.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("dir");
    for e in std::fs::read_dir(from).expect("read dir").flatten() {
        let target = to.join(e.file_name());
        if e.path().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).expect("copy");
        }
    }
}
