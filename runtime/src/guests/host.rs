//! What one guest instance's store holds, and the views WASI borrows from it.

use std::sync::Arc;

use wasmtime::component::ResourceTable;
use wasmtime::{StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

use super::log::GuestLog;
use super::{EnclaveCtx, GuestConfig, Limits};

/// Store data for one request's instance.
pub struct Host {
    table: ResourceTable,
    wasi: WasiCtx,
    http: WasiHttpCtx,
    hooks: Egress,
    pub(crate) limits: StoreLimits,
    /// SHA-256 of the guest's component: stamped into its documents.
    pub(crate) code_hash: [u8; 32],
    pub(crate) enclave: Arc<EnclaveCtx>,
}

impl Host {
    /// Fresh state for one request to `guest`: no files, no environment,
    /// no sockets, output into the log.
    pub(crate) fn new(
        guest: &Arc<GuestConfig>,
        code_hash: [u8; 32],
        limits: &Limits,
        enclave: Arc<EnclaveCtx>,
    ) -> Host {
        let (stdout, stderr) = GuestLog::pair(&guest.name);
        let mut wasi = WasiCtxBuilder::new();
        wasi.stdout(stdout)
            .stderr(stderr)
            // Guests reach the network only through wasi:http, where the
            // egress policy applies; raw wasi:sockets stay closed.
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        let memory = usize::try_from(limits.memory).unwrap_or(usize::MAX);
        Host {
            table: ResourceTable::new(),
            wasi: wasi.build(),
            http: WasiHttpCtx::new(),
            hooks: Egress {
                guest: guest.clone(),
            },
            code_hash,
            enclave,
            limits: StoreLimitsBuilder::new()
                .memory_size(memory)
                // Growth past the limit fails inside the guest (memory.grow
                // returns -1) rather than trapping, as SPEC §3.3 says.
                .trap_on_grow_failure(false)
                .build(),
        }
    }
}

impl WasiView for Host {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for Host {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

/// The outbound-request policy of one guest instance.
struct Egress {
    guest: Arc<GuestConfig>,
}

type SendResult = wasmtime_wasi_http::Result<(
    http::Response<wasmtime_wasi_http::WasiBody>,
    Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
)>;

impl WasiHttpHooks for Egress {
    fn send_request(
        &mut self,
        request: http::Request<wasmtime_wasi_http::WasiBody>,
        _options: Option<wasmtime_wasi_http::RequestOptions>,
        _fut: Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
    ) -> Box<dyn Future<Output = SendResult> + Send> {
        // Outbound HTTPS through the host proxy (TLS inside the enclave)
        // is not built yet: every request is denied here, inside the
        // enclave, and nothing leaves it.
        tracing::info!(
            guest = %self.guest.name,
            uri = %request.uri(),
            "outbound request denied: this runtime has no egress"
        );
        Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) })
    }
}
