//! One order for every change to the guest table: boot guests (`--guest`
//! without `--wait-for-app`, compiled after the listener opens) come
//! first, so an admin deploy or delete of the same name made while one
//! compiles stands, and a boot guest that fails never removes a guest the
//! admin API installed. In process, against a real engine, with no timing.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use nacre_runtime::attest::Dev;
use nacre_runtime::egress::Egress;
use nacre_runtime::guests::{
    DeployError, Deployed, EnclaveCtx, GuestConfig, GuestEngine, KvLimits, Limits, Registry,
};

fn registry() -> Registry {
    let dir = std::env::temp_dir().join(format!("nacre-boot-order-{}", std::process::id()));
    let attester = Arc::new(Dev::open(&dir).expect("dev attester"));
    let engine = GuestEngine::new(
        Limits {
            memory: 64 << 20,
            request_timeout: std::time::Duration::from_secs(5),
            max_body: 1 << 20,
            max_instances: 4,
            instances_per_guest: 4,
            memory_total: 1 << 30,
        },
        EnclaveCtx::local(
            attester,
            KvLimits {
                max_keys: 10,
                max_bytes: 1000,
            },
        ),
        Arc::new(Egress::new(None, None, None).expect("egress")),
    )
    .expect("engine");
    Registry::new(engine, None)
}

fn components() -> (Bytes, Bytes) {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest-examples/Cargo.toml");
    let paths = nacre_cli::guest_build::build_guests(&manifest, &["hello", "echo"])
        .expect("building guests");
    let read = |p: &Path| Bytes::from(std::fs::read(p).expect("component"));
    (read(&paths[0]), read(&paths[1]))
}

fn config(name: &str) -> GuestConfig {
    GuestConfig::new(name.parse().expect("name"), None, Vec::new()).expect("config")
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
