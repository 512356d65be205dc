//! Cold starts that must not start: a snapshot changed or withheld, KMS
//! gone, an image or a signer outside the key policy, KMS answers that do
//! not open. Each says which and why, starts nothing new, and (where the
//! cause goes away) starts by itself once it has.

use std::time::Duration;

use nacre_tests::fleet::other_image;
use nacre_tests::sealed::wait_for_line;

use super::*;

/// A stopped enclave's store with a deployment in it: a guest and state.
async fn with_a_deployment(world: &World, parent: &Parent) -> String {
    let rt = parent.start_runtime(None, &world.flags(parent, &[]));
    rt.deploy_ok("p", &guest("kv-probe"), "").await;
    assert_eq!(put(&rt, "/p/state", "before").await.0, 200);
    until_written(&rt, 0.0).await;
    certificate(&rt).await
}

/// The store's files and their bytes: what a start that refused must
/// leave as it was.
fn store_files(world: &World) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files: Vec<_> = walk(&world.store)
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap_or_default();
            (p, bytes)
        })
        .collect();
    files.sort();
    files
}

/// A start that must not start: a runtime with `flags` (of `program`),
/// whose log says `needle`; checked to listen on nothing and to leave the
/// store as it was. The child, still retrying, and the line.
fn refused_start(
    world: &World,
    parent: &Parent,
    program: Option<&Path>,
    flags: &[String],
    needle: &str,
) -> (nacre_cli::process::Supervised, String) {
    let before = store_files(world);
    let mut child = parent.spawn_runtime(program, flags);
    let line = wait_for_line(&mut child, Duration::from_secs(30), needle);
    // Its next try says the same: it retries, and still starts nothing.
    wait_for_line(&mut child, Duration::from_secs(30), needle);
    assert!(!parent.is_served(), "it serves: {}", child.output());
    assert!(
        !child
            .output()
            .contains("starting this deployment's sealed root")
    );
    assert_eq!(
        store_files(world),
        before,
        "a refused start wrote to the store"
    );
    (child, line)
}

/// The newest snapshot with one byte changed: refused and reported, never
/// used, nothing started or written; the byte put back, the same enclave
/// (retrying) starts with the deployment.
#[tokio::test(flavor = "multi_thread")]
async fn a_changed_snapshot_is_refused_and_reported() {
    let world = World::new(None);
    let parent = world.parent().await;
    let cert = with_a_deployment(&world, &parent).await;
    let newest = world
        .store
        .join(stored(&world.store, "snapshots").pop().expect("a snapshot"));
    let good = std::fs::read(&newest).expect("snapshot");
    let mut bad = good.clone();
    let i = bad.len() / 2;
    bad[i] ^= 0x01;
    std::fs::write(&newest, &bad).expect("tamper");
    let flags = world.flags(&parent, &[]);
    let (mut child, line) = refused_start(&world, &parent, None, &flags, "failed authentication");
    assert!(line.contains("snapshots/"), "{line}");
    assert!(line.contains("ERROR"), "{line}");

    std::fs::write(&newest, &good).expect("put the byte back");
    wait_for_line(&mut child, Duration::from_secs(60), "deployment restored");
    drop(child);
    let rt = parent.start_runtime(None, &world.flags(&parent, &[]));
    assert_eq!(certificate(&rt).await, cert);
    assert_eq!(rt.get("/p/state").await, (200, "before".to_string()));
}

/// The root kept, every snapshot withheld: the enclave refuses to start
/// an empty deployment, and says so.
#[tokio::test(flavor = "multi_thread")]
async fn withheld_snapshots_start_nothing() {
    let world = World::new(None);
    let parent = world.parent().await;
    with_a_deployment(&world, &parent).await;
    let hidden = temp_dir("hidden-snapshots");
    std::fs::rename(world.store.join("snapshots"), hidden.join("snapshots")).expect("hide");
    let flags = world.flags(&parent, &[]);
    let (child, line) = refused_start(&world, &parent, None, &flags, "refusing to start empty");
    assert!(line.contains("no snapshot"), "{line}");
    drop(child);

    // The other way round: the snapshots shown, the root withheld. Not a
    // new deployment either.
    std::fs::rename(hidden.join("snapshots"), world.store.join("snapshots")).expect("show");
    std::fs::rename(world.store.join("root"), hidden.join("root")).expect("hide");
    let (_, line) = refused_start(&world, &parent, None, &flags, "but no `root`");
    assert!(
        line.contains("refusing to start a new deployment"),
        "{line}"
    );
}

/// The host hides the whole store at a cold start (the enclave starts a
/// new, empty deployment, as it must), then shows it again while the new
/// deployment writes: the empty one is never written over the old, and a
/// later cold start comes back with the old deployment.
#[tokio::test(flavor = "multi_thread")]
async fn a_store_hidden_at_start_is_not_written_over_when_shown_again() {
    let world = World::new(None);
    let parent = world.parent().await;
    let cert = with_a_deployment(&world, &parent).await;
    let root = std::fs::read(world.store.join("root")).expect("root");
    let manifests = stored(&world.store, "snapshots");
    let hidden = temp_dir("hidden-store");
    for name in ["root", "snapshots"] {
        std::fs::rename(world.store.join(name), hidden.join(name)).expect("hide");
    }
    let flags = world.flags(&parent, &[]);
    let mut child = parent.spawn_runtime(None, &flags);
    wait_for_line(&mut child, Duration::from_secs(30), "holds no root");
    // The new deployment's writer waits at least 50 ms before it asks the
    // store anything; whatever it asked meanwhile waits too.
    parent.control.stall(true);
    for name in ["root", "snapshots"] {
        std::fs::rename(hidden.join(name), world.store.join(name)).expect("show");
    }
    parent.control.stall(false);
    let said = child
        .wait_for(Duration::from_secs(30), |l| {
            (l.contains("this enclave holds") || l.contains("stored this deployment's root first"))
                .then(|| l.to_string())
        })
        .unwrap_or_else(|e| panic!("no refusal: {e}"));
    assert!(said.contains("ERROR"), "{said}");
    eprintln!("the new deployment's writer: {said}");
    drop(child);
    assert_eq!(std::fs::read(world.store.join("root")).expect("root"), root);
    let old_dir = manifests[0]
        .rsplit_once('/')
        .expect("a root id")
        .0
        .to_string();
    assert_eq!(
        stored(&world.store, &old_dir),
        manifests,
        "the old manifests were touched"
    );

    let rt = parent.start_runtime(None, &flags);
    assert_eq!(certificate(&rt).await, cert);
    assert_eq!(rt.get("/p/state").await, (200, "before".to_string()));
}

/// KMS unreachable at a cold start: the enclave says so, retries, and
/// starts no new deployment (the root in the store is untouched); KMS
/// back, it comes up with the deployment.
#[tokio::test(flavor = "multi_thread")]
async fn kms_unreachable_at_a_cold_start_starts_no_new_deployment() {
    let mut world = World::new(None);
    let parent = world.parent().await;
    let cert = with_a_deployment(&world, &parent).await;
    world.kms.stop();
    let flags = world.flags(&parent, &[]);
    let (mut child, line) = refused_start(&world, &parent, None, &flags, "could not be reached");
    assert!(line.contains("KMS"), "{line}");

    world.kms.restart();
    wait_for_line(
        &mut child,
        Duration::from_secs(60),
        "nacre-runtime listening",
    );
    drop(child);
    let rt = parent.start_runtime(None, &world.flags(&parent, &[]));
    assert_eq!(certificate(&rt).await, cert);
    assert_eq!(rt.get("/p/state").await, (200, "before".to_string()));
}

/// The store gone at a cold start: the enclave says so, retries, and
/// starts nothing; the store back, it starts with the deployment.
#[tokio::test(flavor = "multi_thread")]
async fn a_store_gone_at_a_cold_start_starts_nothing() {
    let world = World::new(None);
    let parent = world.parent().await;
    let cert = with_a_deployment(&world, &parent).await;
    parent.control.block(true);
    let flags = world.flags(&parent, &[]);
    let (mut child, line) = refused_start(&world, &parent, None, &flags, "did not answer");
    assert!(line.contains("store"), "{line}");
    parent.control.block(false);
    wait_for_line(
        &mut child,
        Duration::from_secs(60),
        "nacre-runtime listening",
    );
    drop(child);
    let rt = parent.start_runtime(None, &flags);
    assert_eq!(certificate(&rt).await, cert);
    assert_eq!(rt.get("/p/state").await, (200, "before".to_string()));
}

/// KMS is trusted on Amazon's roots or `--kms-ca` only: a CA given to
/// guests (`--extra-ca`) that could issue for KMS's name gets no say over
/// the root.
#[tokio::test(flavor = "multi_thread")]
async fn kms_is_not_trusted_on_the_guests_extra_ca() {
    let world = World::new(None);
    let parent = world.parent().await;
    with_a_deployment(&world, &parent).await;
    let mut flags = world.flags(&parent, &[]);
    let at = flags
        .iter()
        .position(|f| f == "--kms-ca")
        .expect("--kms-ca");
    let ca = flags.drain(at..at + 2).nth(1).expect("its value");
    flags.extend(["--extra-ca".to_string(), ca]);
    let (_, line) = refused_start(&world, &parent, None, &flags, "could not be reached");
    assert!(line.contains("certificate"), "{line}");
}

/// Another image (another PCR0) under a policy naming this one gets
/// nothing: KMS refuses, both sides log why, nothing starts.
#[tokio::test(flavor = "multi_thread")]
async fn another_image_gets_nothing() {
    let world = World::new(None);
    let parent = world.parent().await;
    with_a_deployment(&world, &parent).await;
    let other = other_image();
    let flags = world.flags(&parent, &[]);
    let (_, line) = refused_start(&world, &parent, Some(&other), &flags, "KMS refused");
    assert!(line.contains("AccessDeniedException"), "{line}");
    let said = world.kms.output();
    assert!(
        said.contains("ImageSha384"),
        "the stand-in did not say why: {said}"
    );
    assert!(said.contains(&pcr0(&other)), "{said}");
}

/// A policy naming the image's signer (PCR8): a new image signed by the
/// same signer unwraps the root (an upgrade keeps the deployment); an
/// image signed by anyone else gets nothing.
#[tokio::test(flavor = "multi_thread")]
async fn a_signer_policy_keeps_the_root_across_upgrades_and_refuses_other_signers() {
    let ours = "8a".repeat(48);
    let theirs = "5e".repeat(48);
    let world = World::new(Some(Policy::signer(&ours)));
    let parent = world.parent().await;
    let signed = |pcr8: &str| world.flags(&parent, &["--dev-pcr8", pcr8]);
    let rt = parent.start_runtime(None, &signed(&ours));
    assert_eq!(put_state_after_deploy(&rt).await, 200);
    until_written(&rt, 0.0).await;
    drop(rt);

    // The next release: another image, the same signer.
    let upgrade = other_image();
    let rt = parent.start_runtime(Some(&upgrade), &signed(&ours));
    assert_eq!(rt.get("/p/state").await, (200, "signed".to_string()));
    drop(rt);

    let (_, line) = refused_start(&world, &parent, None, &signed(&theirs), "KMS refused");
    assert!(line.contains("AccessDeniedException"), "{line}");
    let said = world.kms.output();
    assert!(
        said.contains("PCR8"),
        "the stand-in did not say why: {said}"
    );
}

async fn put_state_after_deploy(rt: &Runtime) -> u16 {
    rt.deploy_ok("p", &guest("kv-probe"), "").await;
    put(rt, "/p/state", "signed").await.0
}
