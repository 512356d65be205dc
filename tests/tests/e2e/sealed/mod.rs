//! A deployment that survives its enclaves (`--kms-key`): the root from
//! the KMS stand-in over TLS inside the enclave, sealed snapshots in the
//! host proxy's `--store`, the cold start, and what the host, a guest and
//! an image outside the key policy can do against it.

mod fleet;
mod hostile;
mod refusals;

use std::path::{Path, PathBuf};
use std::time::Duration;

use nacre_tests::fleet::{pcr0, within};
use nacre_tests::kms::{Kms, Policy};
use nacre_tests::net::contains;
use nacre_tests::sealed::{Parent, stored};
use nacre_tests::{Runtime, TOKEN, bin, guest, nacre, temp_dir};

/// A dev root, a store and a stand-in whose policy names this checkout's
/// runtime image: what every enclave of a test shares.
struct World {
    dev_root: PathBuf,
    store: PathBuf,
    kms: Kms,
}

impl World {
    fn new(policy: Option<Policy>) -> World {
        World::in_root(temp_dir("sealed-root"), policy)
    }

    /// A world whose enclaves attest under `dev_root`.
    fn in_root(dev_root: PathBuf, policy: Option<Policy>) -> World {
        // The stand-in checks documents against the dev root, which the
        // runtime makes at its first start: make it now.
        nacre_attestation::DevSigner::open(&dev_root).expect("dev root");
        let policy = policy.unwrap_or_else(|| Policy::images(&[pcr0(&bin("nacre-runtime"))]));
        let kms = Kms::start(&dev_root, &policy);
        World {
            dev_root,
            store: temp_dir("sealed-store"),
            kms,
        }
    }

    async fn parent(&self) -> Parent {
        Parent::start(&self.kms, &self.store).await
    }

    fn flags(&self, parent: &Parent, extra: &[&str]) -> Vec<String> {
        let mut flags = parent.flags(&self.kms, &self.dev_root);
        flags.extend(extra.iter().map(|s| s.to_string()));
        flags
    }
}

/// PUTs `value` at `path` of `rt`; the status and body.
async fn put(rt: &Runtime, path: &str, value: &str) -> (u16, String) {
    let r = rt
        .client()
        .put(format!("{}{path}", rt.url()))
        .body(value.to_string())
        .send()
        .await
        .expect("PUT");
    (r.status().as_u16(), r.text().await.unwrap_or_default())
}

/// The SHA-256 of the certificate `rt` serves.
async fn certificate(rt: &Runtime) -> String {
    let (status, body) = rt.get("/enclave/config").await;
    assert_eq!(status, 200, "{body}");
    let config: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    config["tls_certificate_sha256"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Waits until every change `rt` made is in the store: its snapshot
/// writer has no change pending and has written past `after`.
async fn until_written(rt: &Runtime, after: f64) -> f64 {
    // The writer notices a change within 50 ms, and shows it pending
    // (a lag above 0) from then until it is written.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = std::time::Instant::now();
    loop {
        let seq = rt.metric("nacre_snapshot_seq").await.unwrap_or(0.0);
        let lag = rt.metric("nacre_snapshot_lag_seconds").await.unwrap_or(1.0);
        if seq > after && lag == 0.0 {
            return seq;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no snapshot past {after} within 20 s (seq {seq}, lag {lag})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `nacre attest` against `rt`, requiring `guest` to run `sha`.
fn attest(rt: &Runtime, dev_root: &Path, guest: &str, sha: &str) -> (bool, String) {
    let root = dev_root.join("root.pem").display().to_string();
    let pin = format!("{guest}={sha}");
    let (ok, out, err) = nacre(&["attest", &rt.url(), "--root", &root, "--guest", &pin]);
    (ok, format!("{out}{err}"))
}

/// A single enclave comes back from its sealed snapshot after a crash:
/// the same certificate, guest (`nacre attest --guest` passes unchanged),
/// state and key-value data; the host's links carried none of them in
/// the clear.
#[tokio::test(flavor = "multi_thread")]
async fn a_sealed_enclave_comes_back_with_its_deployment() {
    let world = World::new(None);
    let parent = world.parent().await;
    let flags = world.flags(&parent, &[]);
    let rt = parent.start_runtime(None, &flags);
    let info = rt.deploy_ok("p", &guest("kv-probe"), "").await;
    let state = "STATE-sealed-7c1e93";
    let value = "KV-sealed-b40f27";
    assert_eq!(put(&rt, "/p/state", state).await.0, 200);
    assert_eq!(put(&rt, "/p/k/box/key", value).await.0, 200);
    let cert = certificate(&rt).await;
    let seq = until_written(&rt, 0.0).await;
    assert!(!stored(&world.store, "snapshots").is_empty());
    assert!(
        world.store.join("root").is_file(),
        "the wrapped root is stored"
    );
    drop(rt); // SIGKILL: a crash, not a shutdown

    let rt = parent.start_runtime(None, &flags);
    assert_eq!(certificate(&rt).await, cert, "the certificate came back");
    assert_eq!(rt.get("/p/state").await, (200, state.to_string()));
    assert_eq!(rt.get("/p/k/box/key").await, (200, value.to_string()));
    let (ok, out) = attest(&rt, &world.dev_root, "p", &info.sha256);
    assert!(ok, "nacre attest --guest p=SHA: {out}");
    assert!(
        rt.log()
            .contains("deployment restored from its sealed snapshot")
    );
    let restored = rt.metric("nacre_snapshot_seq").await.unwrap_or(0.0);
    assert!(restored >= seq, "restored {restored}, written {seq}");

    // Neither the store link nor the KMS link showed a secret.
    let mut seen = parent.control.recorded();
    seen.extend(parent.egress.recorded());
    assert!(
        seen.len() > 10_000,
        "the links carried {} bytes",
        seen.len()
    );
    never_in_the_clear(&seen, state, value);
    for entry in walk(&world.store) {
        // A write in progress may rename its file meanwhile.
        let Ok(bytes) = std::fs::read(&entry) else {
            continue;
        };
        assert!(!contains(&bytes, state.as_bytes()), "{}", entry.display());
        assert!(!contains(&bytes, value.as_bytes()), "{}", entry.display());
    }
}

/// Fails if `seen` (what crossed the host) holds `state`, `value` or a
/// part of the `kv-probe` component.
fn never_in_the_clear(seen: &[u8], state: &str, value: &str) {
    let component = std::fs::read(guest("kv-probe")).expect("component");
    let middle = component.len() / 2;
    for (what, needle) in [
        ("the state", state.as_bytes()),
        ("a key-value value", value.as_bytes()),
        ("the component", &component[middle..middle + 64]),
    ] {
        assert!(
            !contains(seen, needle),
            "{what} crossed the host in the clear"
        );
    }
}

/// Every file under `dir`.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// While the store is gone, requests go on as before and writes are
/// acknowledged; the snapshot catches up once it is back, and a crash
/// after that loses nothing.
#[tokio::test(flavor = "multi_thread")]
async fn a_store_that_is_gone_costs_requests_nothing() {
    let world = World::new(None);
    let parent = world.parent().await;
    let flags = world.flags(&parent, &[]);
    let rt = parent.start_runtime(None, &flags);
    rt.deploy_ok("p", &guest("kv-probe"), "").await;
    let seq = until_written(&rt, 0.0).await;

    // The host stops answering on the store link, and refuses new ones.
    parent.control.stall(true);
    parent.control.block(true);
    let mut slowest = Duration::ZERO;
    for i in 0..40 {
        let started = std::time::Instant::now();
        assert_eq!(
            put(&rt, &format!("/p/k/b/k{i}"), &format!("v{i}")).await.0,
            200
        );
        slowest = slowest.max(started.elapsed());
    }
    // A write that waited for the store would wait for its 60 s deadline.
    assert!(slowest < Duration::from_secs(5), "a write took {slowest:?}");
    eprintln!("40 writes with the store gone, the slowest {slowest:?}");
    within(Duration::from_secs(10), "the lag showing", || async {
        rt.metric("nacre_snapshot_lag_seconds").await.unwrap_or(0.0) > 0.0
    })
    .await;
    parent.control.block(false);
    parent.control.stall(false);
    until_written(&rt, seq).await;
    drop(rt);
    let rt = parent.start_runtime(None, &flags);
    for i in [0, 39] {
        assert_eq!(
            rt.get(&format!("/p/k/b/k{i}")).await,
            (200, format!("v{i}"))
        );
    }
}

/// `nacre dev`'s promise, with the admin token: a guest deployed, the
/// enclave restarted by a new process, the guest still answers.
#[tokio::test(flavor = "multi_thread")]
async fn a_deploy_survives_a_clean_restart() {
    let world = World::new(None);
    let parent = world.parent().await;
    let flags = world.flags(&parent, &[]);
    let mut rt = parent.start_runtime(None, &flags);
    rt.deploy_ok("hello", &guest("hello"), "").await;
    until_written(&rt, 0.0).await;
    assert!(rt.terminate().success());
    let rt = parent.start_runtime(None, &flags);
    assert_eq!(rt.get("/hello/world").await.0, 200);
    let guests = rt
        .client()
        .get(format!("{}/enclave/guests", rt.url()))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("GET /enclave/guests")
        .text()
        .await
        .unwrap_or_default();
    assert!(guests.contains("hello"), "{guests}");
}
