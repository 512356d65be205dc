//! A deployment of several enclaves orders one certificate, and a
//! restarted leader orders nothing.

use super::*;

/// Three enclaves: one issuance, the CA validated through a worker (the
/// load balancer sends it there), all three serve the certificate; the
/// leader restarted takes it back from the workers and orders nothing.
#[tokio::test(flavor = "multi_thread")]
async fn a_deployment_orders_once_and_a_restarted_leader_orders_nothing() {
    let balancer = Forwarder::held();
    let pebble = Pebble::start(balancer.port).await;
    let directory = pebble.directory();
    let ca = pebble.extra_ca().display().to_string();
    let root = temp_dir("acme-fleet-root");
    let name = LeaderName::start().await;
    let ports = SyncPorts::hold(3);
    name.point_to(ports[0]);
    let flags = [
        "--fqdn",
        FQDN,
        "--acme-directory",
        directory.as_str(),
        "--extra-ca",
        ca.as_str(),
    ];
    // Pebble lives on loopback, as the peers do.
    let allow = [
        "--egress-allow-private-to".to_string(),
        format!("localhost:{}", pebble.port),
    ];
    let spec = |i: usize| MemberSpec {
        extra: &flags,
        proxy_extra: &allow,
        ..MemberSpec::new(&name, &root, &ports, i)
    };
    // The workers first, so they are in the deployment when the leader
    // orders: the CA will be sent to them.
    let b = Member::start(spec(1)).await;
    let c = Member::start(spec(2)).await;
    balancer.spread_over(&[b.proxy.inbound_tcp(), c.proxy.inbound_tcp()]);
    let a = Member::start(spec(0)).await;

    let all: [&Member; 3] = [&a, &b, &c];
    let took = within(
        Duration::from_secs(90),
        "one CA certificate everywhere",
        || async {
            let mut certs = std::collections::BTreeSet::new();
            for m in all {
                certs.insert(served(&m.rt).await.1);
            }
            served(&a.rt).await.0 == "acme" && certs.len() == 1
        },
    )
    .await;
    eprintln!("three enclaves serve the CA's certificate {took:?} after the leader started");
    assert_eq!(a.role().await, "leader");
    assert_eq!(
        (pebble.orders(), pebble.issued()),
        (1, 1),
        "{}",
        pebble.log()
    );
    let issuing_root = pebble.root_file().await;
    for m in all {
        let (ok, out) = curl_verified(&issuing_root, m.proxy.inbound_tcp().port());
        assert!(ok, "{out}");
    }
    let cert = served(&a.rt).await.1;
    // The leader's account reached the workers: each shows and logs it.
    let uri = account(&a.rt).await.expect("the leader's account");
    for m in [&b, &c] {
        until_account(&m.rt, &uri).await;
    }

    // The leader's enclave restarts; the name still leads to its parent.
    drop(a);
    let restarted = Instant::now();
    let a = Member::start(spec(0)).await;
    within(
        Duration::from_secs(60),
        "the restarted leader holding the certificate",
        || async { a.role().await == "leader" && served(&a.rt).await.1 == cert },
    )
    .await;
    // Long enough for a keeper that wanted to order to have done so.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        (pebble.orders(), pebble.issued()),
        (1, 1),
        "the restarted leader ordered again {:?} after it started",
        restarted.elapsed()
    );
    for m in [&a, &b, &c] {
        assert_eq!(served(&m.rt).await.1, cert);
    }
    assert!(
        !a.rt.log().contains("ordering a certificate"),
        "{}",
        a.rt.log()
    );
    // It took the account back too, and says which.
    until_account(&a.rt, &uri).await;
}
