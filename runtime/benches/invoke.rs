//! Per-request overhead in process: a fresh instance of the `hello` guest
//! handles one request, from `invoke` to the last body byte, no network.
//! Run with `cargo bench -p nacre-runtime --bench invoke` (target ≤ 12 µs);
//! `nacre-bench` runs it too and copies the figure into BENCHMARKS.md.
//!
//! The component is `guest-examples/target/wasm32-wasip2/release/hello.wasm`
//! or the file named by `NACRE_BENCH_HELLO`; `nacre-bench` builds it.

// criterion_group! defines a public function it gives no doc comment.
#![allow(missing_docs)]

use std::convert::Infallible;
use std::path::PathBuf;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http_body_util::{BodyExt, Empty};
use nacre_runtime::guests::{Outcome, invoke};
use nacre_runtime::{Runtime, Settings};

fn hello_wasm_path() -> PathBuf {
    let path = std::env::var_os("NACRE_BENCH_HELLO").map_or_else(
        || {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../guest-examples/target/wasm32-wasip2/release/hello.wasm")
        },
        PathBuf::from,
    );
    if !path.is_file() {
        panic!(
            "{} is missing; build it with `cargo run --release -p nacre-bench` or \
             `cargo build --release --target wasm32-wasip2 -p hello` in guest-examples/",
            path.display()
        );
    }
    path
}

fn bench(c: &mut Criterion) {
    // One thread: the figure is the work per request, not the time a
    // wake-up takes to cross between threads.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let dev_root = std::env::temp_dir().join(format!("nacre-bench-invoke-{}", std::process::id()));
    // Assembled as `nacre-runtime` assembles itself, from the same flags;
    // `--wait-for-app` deploys hello before `build` returns. Nothing is
    // served: the benchmark calls the guest table directly.
    let hello = hello_wasm_path();
    let settings = Settings::from_args([
        "nacre-runtime".to_string(),
        "--listen=tcp://127.0.0.1:0".into(),
        "--fqdn=localhost".into(),
        "--attestation=dev".into(),
        format!("--dev-root={}", dev_root.display()),
        "--guest-memory=64MiB".into(),
        "--guest-memory-total=1GiB".into(),
        "--guest-instances=16".into(),
        "--request-timeout=10s".into(),
        "--max-body=1MiB".into(),
        "--kv-max-keys=100".into(),
        "--kv-max-bytes=1MiB".into(),
        "--wait-for-app".into(),
        format!("--guest=hello={}", hello.display()),
    ])
    .expect("settings");
    let runtime = rt
        .block_on(Runtime::build(settings, None))
        .expect("the runtime builds");
    let registry = runtime.registry().clone();
    let snapshot = registry.snapshot();
    let (guest, _) = snapshot.route("/hello/").expect("hello is routed");

    let one = || async {
        let req = http::Request::get("https://localhost/hello/")
            .body(
                Empty::<Bytes>::new()
                    .map_err(|never: Infallible| -> wasmtime_wasi_http::Error { match never {} }),
            )
            .expect("request");
        match invoke(registry.engine(), guest.clone(), req, "/").await {
            Outcome::Response(resp) => {
                let body = resp.into_body().collect().await.expect("body");
                assert_eq!(body.to_bytes().len(), 28);
            }
            _ => panic!("hello did not answer"),
        }
    };
    c.bench_function("instantiate_and_handle", |b| b.iter(|| rt.block_on(one())));
    let _ = std::fs::remove_dir_all(&dev_root);
}

criterion_group!(benches, bench);
criterion_main!(benches);
