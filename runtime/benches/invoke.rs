//! Per-request overhead in process: a fresh instance of the `hello` guest
//! handles one request, from `invoke` to the last body byte, no network.
//! Run with `cargo bench -p nacre-runtime --bench invoke` (target ≤ 12 µs);
//! `nacre-bench` runs it too and copies the figure into BENCHMARKS.md.
//!
//! The component is `guest-examples/target/wasm32-wasip2/release/hello.wasm`
//! or the file named by `NACRE_BENCH_HELLO`; `nacre-bench` builds it.

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http_body_util::{BodyExt, Empty};
use nacre_runtime::attest::Dev;
use nacre_runtime::egress::Egress;
use nacre_runtime::guests::{
    EnclaveCtx, GuestConfig, GuestEngine, KvLimits, Limits, Outcome, Registry, invoke,
};

fn hello_wasm() -> Vec<u8> {
    let path = std::env::var_os("NACRE_BENCH_HELLO").map_or_else(
        || {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../guest-examples/target/wasm32-wasip2/release/hello.wasm")
        },
        PathBuf::from,
    );
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; build it with `cargo run --release -p nacre-bench` or \
             `cargo build --release --target wasm32-wasip2 -p hello` in guest-examples/",
            path.display()
        )
    })
}

fn bench(c: &mut Criterion) {
    // One thread: the figure is the work per request, not the time a
    // wake-up takes to cross between threads.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let dev_root = std::env::temp_dir().join(format!("nacre-bench-invoke-{}", std::process::id()));
    let attester = Arc::new(Dev::open(&dev_root).expect("dev attester"));
    let engine = GuestEngine::new(
        Limits {
            memory: 64 << 20,
            request_timeout: Duration::from_secs(10),
            max_body: 1 << 20,
            max_instances: 16,
            instances_per_guest: 16,
            memory_total: 1 << 30,
        },
        EnclaveCtx::local(
            attester,
            KvLimits {
                max_keys: 100,
                max_bytes: 1 << 20,
            },
        ),
        Arc::new(Egress::new(None, None, None).expect("egress")),
    )
    .expect("engine");
    let registry = Registry::new(engine, None);
    let config =
        GuestConfig::new("hello".parse().expect("name"), None, Vec::new()).expect("config");
    rt.block_on(registry.deploy(config, Bytes::from(hello_wasm())))
        .expect("deploy hello");
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
