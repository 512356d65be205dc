//! What one guest instance's store holds, and the views WASI borrows from it.

use std::sync::Arc;

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

use super::log::GuestLog;
use super::share::{Budget, Limiter, Share};
use super::stats::GuestStats;
use super::view::{Caller, EnclaveCtx, EnclaveCtxView, EnclaveView};
use super::{GuestConfig, Limits};
use crate::egress::Egress;
use crate::sockets::{Listen, SocketsCtx, SocketsView};

/// Store data for one request's instance.
pub struct Host {
    table: ResourceTable,
    wasi: WasiCtx,
    http: WasiHttpCtx,
    hooks: Hooks,
    pub(crate) limits: Limiter,
    caller: Caller,
    enclave: Arc<EnclaveCtx>,
    sockets: Arc<SocketsCtx>,
}

/// Idle time after which an HTTP guest's outbound TCP connection ends (a
/// TCP guest's connections have their deployment's own).
const HTTP_GUEST_TCP_IDLE: std::time::Duration = std::time::Duration::from_secs(60);

/// Where a TCP guest listens, and when its idle connections end.
pub(crate) struct Listening {
    pub(crate) listen: Listen,
    pub(crate) idle: std::time::Duration,
}

impl Drop for Host {
    /// The instance is gone: its connections end with it, abruptly.
    fn drop(&mut self) {
        self.sockets.end();
    }
}

impl Host {
    /// Fresh state for an instance of `guest`: no files, no environment,
    /// output into the log; one request's (`listening` None), or a TCP
    /// guest's long-lived one, listening where `listening` says, its
    /// address in `NACRE_TCP_ADDR`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        guest: &Arc<GuestConfig>,
        code_hash: [u8; 32],
        limits: &Limits,
        memory: (Arc<Budget>, Arc<Share>),
        enclave: Arc<EnclaveCtx>,
        egress: Arc<Egress>,
        stats: Arc<GuestStats>,
        listening: Option<Listening>,
    ) -> Host {
        let (stdout, stderr) = GuestLog::pair(&guest.name);
        let mut wasi = WasiCtxBuilder::new();
        wasi.stdout(stdout)
            .stderr(stderr)
            // Guests' TCP and name lookups are crate::sockets', virtual;
            // wasmtime-wasi's own (operating-system sockets) stay closed,
            // and UDP with them.
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        if let Some(l) = &listening {
            wasi.env("NACRE_TCP_ADDR", format!("127.0.0.1:{}", l.listen.port));
        }
        let (listen, idle) = match listening {
            Some(l) => (Some(l.listen), l.idle),
            None => (None, HTTP_GUEST_TCP_IDLE),
        };
        let sockets = SocketsCtx::new(guest.clone(), listen, (egress.clone(), stats.clone()), idle);
        let per_memory = usize::try_from(limits.memory).unwrap_or(usize::MAX);
        Host {
            table: ResourceTable::new(),
            wasi: wasi.build(),
            http: WasiHttpCtx::new(),
            hooks: Hooks {
                guest: guest.clone(),
                egress,
                stats,
                outbound: None,
            },
            caller: Caller::new(guest.clone(), code_hash),
            enclave,
            sockets,
            // Growth past a limit fails inside the guest (memory.grow
            // returns -1) rather than trapping, as the limits in docs/operating.md say.
            limits: Limiter::new(per_memory, memory.0, memory.1),
        }
    }
}

impl EnclaveView for Host {
    fn enclave(&mut self) -> EnclaveCtxView<'_> {
        EnclaveCtxView {
            caller: &self.caller,
            ctx: &self.enclave,
            table: &mut self.table,
        }
    }
}

impl SocketsView for Host {
    fn virtual_sockets(&mut self) -> (&mut ResourceTable, &Arc<SocketsCtx>) {
        (&mut self.table, &self.sockets)
    }
}

impl Host {
    /// wasmtime-wasi's socket context (network resources, closed UDP).
    pub(crate) fn sockets_wasi(&mut self) -> wasmtime_wasi::sockets::WasiSocketsCtxView<'_> {
        wasmtime_wasi::sockets::WasiSocketsView::sockets(self)
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

/// Where one guest instance's outbound requests go: its own allow list,
/// then the runtime's [`Egress`].
struct Hooks {
    guest: Arc<GuestConfig>,
    egress: Arc<Egress>,
    stats: Arc<GuestStats>,
    /// Outbound connections this instance holds open at once; made on the
    /// first outbound request, so requests that make none pay nothing.
    outbound: Option<Arc<tokio::sync::Semaphore>>,
}

/// Per instance: enough for fan-out, few enough that one guest cannot take
/// every tunnel the host proxy has.
const MAX_OUTBOUND_PER_INSTANCE: usize = 16;

type SendResult = wasmtime_wasi_http::Result<crate::egress::Sent>;

impl WasiHttpHooks for Hooks {
    fn send_request(
        &mut self,
        request: http::Request<wasmtime_wasi_http::WasiBody>,
        options: Option<wasmtime_wasi_http::RequestOptions>,
        _fut: Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
    ) -> Box<dyn Future<Output = SendResult> + Send> {
        let slots = self.outbound.get_or_insert_with(|| {
            Arc::new(tokio::sync::Semaphore::new(MAX_OUTBOUND_PER_INSTANCE))
        });
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::info!(guest = %self.guest.name, "outbound request refused: {MAX_OUTBOUND_PER_INSTANCE} already open");
            crate::egress::linger(request.into_body());
            return Box::new(async { Err(wasmtime_wasi_http::Error::ConnectionLimitReached) });
        };
        let guest = self.guest.clone();
        let egress = self.egress.clone();
        let stats = self.stats.clone();
        Box::new(async move {
            let sent = egress
                .send(guest.name.as_str(), &guest.allow, request, options)
                .await;
            let counter = match &sent {
                Err(wasmtime_wasi_http::Error::HttpRequestDenied) => &stats.egress_denied,
                _ => &stats.egress_requests,
            };
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let (response, io) = sent?;
            // The slot is held until the connection is done with.
            let io = async move {
                let _permit = permit;
                Box::into_pin(io).await
            };
            Ok((response, Box::new(io) as Box<dyn Future<Output = _> + Send>))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::egress::guest_body;
    use futures::SinkExt;
    use wasmtime_wasi_http::Error;

    fn hooks() -> Hooks {
        let allow = vec!["localhost:1".parse().unwrap()];
        let guest = GuestConfig::new("g".parse().unwrap(), None, allow).unwrap();
        let proxy = "unix:/nonexistent/egress.sock".parse().unwrap();
        Hooks {
            guest: Arc::new(guest),
            egress: Arc::new(Egress::new(Some(proxy), None, None).unwrap()),
            stats: Arc::default(),
            outbound: None,
        }
    }

    fn send(
        hooks: &mut Hooks,
        body: wasmtime_wasi_http::WasiBody,
    ) -> Box<dyn Future<Output = SendResult> + Send> {
        let request = http::Request::get("https://localhost:1/")
            .body(body)
            .unwrap();
        hooks.send_request(request, None, Box::new(async { Ok(()) }))
    }

    #[tokio::test]
    async fn past_its_outbound_cap_a_request_is_refused_and_its_body_stays_open() {
        let mut hooks = hooks();
        // Each holds its slot until it is dropped; none is polled here.
        let held: Vec<_> = (0..MAX_OUTBOUND_PER_INSTANCE)
            .map(|_| send(&mut hooks, guest_body().1))
            .collect();
        let (mut tx, body) = guest_body();
        let refused = Box::into_pin(send(&mut hooks, body)).await;
        assert!(matches!(refused, Err(Error::ConnectionLimitReached)));
        tx.send(Ok(http_body::Frame::data("late".into())))
            .await
            .expect("the body was dropped with the refusal");
        // A slot freed is a slot taken again: the next request goes on to
        // the (absent) proxy instead of being refused for the cap.
        drop(held);
        let next = Box::into_pin(send(&mut hooks, guest_body().1)).await;
        assert!(matches!(next, Err(Error::ConnectionRefused)));
    }
}
