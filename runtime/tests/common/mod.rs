//! What the in-process tests share: a real engine and guest table, the
//! example components, a dev attester.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use nacre_runtime::attest::Dev;
use nacre_runtime::egress::Egress;
use nacre_runtime::guests::{EnclaveCtx, GuestConfig, GuestEngine, KvLimits, Limits, Registry};

/// A fresh directory.
pub fn temp_dir(tag: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("nacre-rt-{}-{tag}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// The dev attester of a fresh dev root, and that root's directory.
pub fn attester() -> (Arc<Dev>, PathBuf) {
    let dir = temp_dir("devroot");
    (Arc::new(Dev::open(&dir, None).expect("dev attester")), dir)
}

/// An empty guest table on a real engine (4 instances, 64 MiB each).
pub fn registry(attester: Arc<Dev>) -> Arc<Registry> {
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
    Arc::new(Registry::new(engine, None))
}

/// The `hello` and `echo` components, built from guest-examples/.
pub fn components() -> (Bytes, Bytes) {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest-examples/Cargo.toml");
    let paths = nacre_cli::guest_build::build_guests(&manifest, &["hello", "echo"])
        .expect("building guests");
    let read = |p: &Path| Bytes::from(std::fs::read(p).expect("component"));
    (read(&paths[0]), read(&paths[1]))
}

/// The runtime binding of a Base64 document from `/enclave/attestation`,
/// once it verifies against the dev root `root_pem` with `nonce`.
pub fn binding(root_pem: &[u8], nonce: &[u8], base64: &[u8]) -> nacre_attestation::RuntimeBinding {
    use base64::Engine as _;
    let doc = base64::engine::general_purpose::STANDARD
        .decode(base64.trim_ascii())
        .expect("base64");
    let verified = nacre_attestation::Verifier::with_root_pem(root_pem)
        .expect("root")
        .nonce(nonce.to_vec())
        .verify(&doc)
        .expect("verifies");
    nacre_attestation::RuntimeBinding::from_bytes(
        verified.document.user_data.as_deref().expect("user data"),
    )
    .expect("runtime layout")
}

/// The role of an enclave with no `--fqdn-leader`.
pub fn alone() -> tokio::sync::watch::Receiver<nacre_runtime::fleet::Role> {
    tokio::sync::watch::channel(nacre_runtime::fleet::Role::Alone).1
}

/// A config for guest `name` at its default route.
pub fn config(name: &str) -> GuestConfig {
    GuestConfig::new(name.parse().expect("name"), None, Vec::new()).expect("config")
}
