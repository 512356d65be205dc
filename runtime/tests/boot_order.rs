//! One order for every change to the guest table: boot guests (`--guest`
//! without `--wait-for-app`, compiled after the listener opens) come
//! first, so an admin deploy or delete of the same name made while one
//! compiles stands, and a boot guest that fails never removes a guest the
//! admin API installed. In process, against a real engine, with no timing.

mod common;

use bytes::Bytes;
use common::{attester, components, config};
use nacre_runtime::guests::{DeployError, Deployed, Registry};

fn registry() -> std::sync::Arc<Registry> {
    common::registry(attester().0)
}

fn sha(registry: &Registry, name: &str) -> Option<String> {
    registry
        .snapshot()
        .guests()
        .find(|g| g.config.name.as_str() == name)
        .map(|g| hex::encode(g.sha256))
}

#[tokio::test(flavor = "multi_thread")]
async fn boot_guests_come_before_every_admin_change() {
    let (hello, echo) = components();
    let echo_sha = hex::encode(sha2_256(&echo));

    // Undisturbed, a boot guest lands and stops "starting".
    let r = registry();
    r.mark_starting(vec![config("a")]).await;
    assert!(r.snapshot().starting("/a").is_some());
    let d = r
        .deploy_boot(config("a"), hello.clone())
        .await
        .expect("boot");
    assert!(matches!(d, Deployed::Created(_)));
    assert!(r.snapshot().starting("/a").is_none());

    // A DELETE while it compiles answers "removed" and stands: the boot
    // deploy that finishes afterwards installs nothing.
    let r = registry();
    r.mark_starting(vec![config("a")]).await;
    assert!(r.remove(&"a".parse().expect("name")).await);
    let e = r.deploy_boot(config("a"), hello.clone()).await.unwrap_err();
    assert!(matches!(e, DeployError::Superseded(_)), "{e}");
    assert_eq!(sha(&r, "a"), None, "a deleted guest came back");
    assert!(r.snapshot().starting("/a").is_none());

    // A PUT while it compiles stands: the boot deploy does not overwrite it.
    let r = registry();
    r.mark_starting(vec![config("a")]).await;
    r.deploy(config("a"), echo.clone())
        .await
        .expect("admin deploy");
    let e = r.deploy_boot(config("a"), hello.clone()).await.unwrap_err();
    assert!(matches!(e, DeployError::Superseded(_)), "{e}");
    assert_eq!(
        sha(&r, "a"),
        Some(echo_sha.clone()),
        "the admin's guest was overwritten"
    );

    // A boot guest that fails removes nothing the admin API installed.
    let r = registry();
    r.mark_starting(vec![config("a"), config("b")]).await;
    r.deploy(config("a"), echo.clone())
        .await
        .expect("admin deploy");
    let bad = Bytes::from_static(b"not a component");
    assert!(r.deploy_boot(config("a"), bad.clone()).await.is_err());
    r.abandon_boot(&"a".parse().expect("name")).await;
    assert_eq!(
        sha(&r, "a"),
        Some(echo_sha),
        "a failed boot guest removed the admin's"
    );
    // ...and one that fails on its own just stops "starting".
    assert!(r.deploy_boot(config("b"), bad).await.is_err());
    r.abandon_boot(&"b".parse().expect("name")).await;
    assert!(r.snapshot().starting("/b").is_none());
    assert_eq!(sha(&r, "b"), None);
}

fn sha2_256(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).into()
}

/// Every change of the guest table is published in order, with each
/// guest's configuration and component bytes: what a follower mirrors.
#[tokio::test(flavor = "multi_thread")]
async fn every_change_is_published_with_the_component_bytes() {
    let (hello, echo) = components();
    let r = registry();
    let mut feed = r.subscribe();
    assert_eq!(feed.borrow_and_update().guests().count(), 0);
    r.deploy(config("a"), hello.clone())
        .await
        .expect("deploy a");
    feed.changed().await.expect("a change");
    {
        let snap = feed.borrow_and_update();
        let a = snap.guests().next().expect("a");
        assert_eq!(a.config.name.as_str(), "a");
        assert_eq!(a.bytes, hello, "the bytes are kept");
    }
    r.deploy(config("a"), echo.clone())
        .await
        .expect("replace a");
    r.remove(&"a".parse().expect("name")).await;
    // A follower that looks only now sees the latest table: a is gone.
    feed.changed().await.expect("a change");
    assert_eq!(feed.borrow_and_update().guests().count(), 0);
    assert!(!feed.has_changed().expect("open"));
}
