//! The control for the end-to-end test that every request gets a fresh
//! instance (`faults::every_request_gets_a_fresh_instance`): the probe it
//! uses, the `faulty` guest's `/remember`, does tell an instance that
//! served a request before. Here one instance serves two requests, as a
//! runtime reusing instances would, and the second answer says so.

use std::path::Path;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Config, Engine, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpView};

struct Plain {
    table: ResourceTable,
    wasi: WasiCtx,
    http: WasiHttpCtx,
    hooks: NoEgress,
}

/// The probe sends nothing out.
struct NoEgress;

impl wasmtime_wasi_http::WasiHttpHooks for NoEgress {
    fn send_request(
        &mut self,
        _request: http::Request<wasmtime_wasi_http::WasiBody>,
        _options: Option<wasmtime_wasi_http::RequestOptions>,
        _fut: Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
    ) -> Box<
        dyn Future<
                Output = wasmtime_wasi_http::Result<(
                    http::Response<wasmtime_wasi_http::WasiBody>,
                    Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
                )>,
            > + Send,
    > {
        Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) })
    }
}

impl WasiView for Plain {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for Plain {
    fn http(&mut self) -> wasmtime_wasi_http::WasiHttpCtxView<'_> {
        wasmtime_wasi_http::WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

#[tokio::test]
async fn one_instance_serving_twice_is_seen_by_the_probe() {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest-examples/Cargo.toml");
    let faulty = nacre_cli::guest_build::build_guests(&manifest, &["faulty"])
        .expect("building faulty")
        .pop()
        .expect("faulty.wasm");
    let engine = Engine::new(Config::new().wasm_component_model(true)).expect("engine");
    let component = Component::from_file(&engine, &faulty).expect("component");
    let mut linker = Linker::new(&engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).expect("wasi");
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker).expect("wasi:http");
    let pre = ProxyPre::new(linker.instantiate_pre(&component).expect("link")).expect("proxy");
    let mut store = Store::new(
        &engine,
        Plain {
            table: ResourceTable::new(),
            wasi: WasiCtx::builder().build(),
            http: WasiHttpCtx::new(),
            hooks: NoEgress,
        },
    );
    let proxy = pre.instantiate_async(&mut store).await.expect("instance");
    let mut answers = Vec::new();
    for token in ["first", "second"] {
        let req = http::Request::get(format!("http://localhost/remember?{token}"))
            .body(Empty::<Bytes>::new().map_err(
                |never: std::convert::Infallible| -> wasmtime_wasi_http::Error { match never {} },
            ))
            .expect("request");
        let req = store
            .data_mut()
            .http()
            .new_incoming_request(Scheme::Http, req)
            .expect("incoming request");
        let (tx, rx) = tokio::sync::oneshot::channel();
        let out = store
            .data_mut()
            .http()
            .new_response_outparam(tx)
            .expect("outparam");
        proxy
            .wasi_http_incoming_handler()
            .call_handle(&mut store, req, out)
            .await
            .expect("handle");
        let resp = rx.await.expect("answered").expect("response");
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        answers.push(String::from_utf8_lossy(&body).into_owned());
    }
    assert_eq!(answers, ["calls=1 first=first", "calls=2 first=first"]);
}
