//! `wasi:sockets` for guests, virtual: no guest ever holds an
//! operating-system socket (docs/tcp-guests.md).
//!
//! - Listening: a TCP guest may bind only `127.0.0.1:PORT` (or `0.0.0.0`,
//!   `::1`, `::`) on the port it was deployed with; what it accepts are
//!   connections the runtime took on that port and handed over
//!   ([`Listen`]), TLS already ended by the runtime or not.
//! - Connecting: a name lookup answers only names of the guest's allow
//!   list, each with an address of its own from 198.18.0.0/15 (RFC 2544's
//!   benchmarking range, never routed); a connect to such an address, or
//!   to an IP its allow list names, becomes a `CONNECT` tunnel through the
//!   host proxy ([`crate::egress::Egress::tunnel`]). Anything else fails
//!   at connect, inside the enclave.
//! - UDP stays closed.
//!
//! [`pipe`] carries the bytes, [`socket`] is the `tcp-socket` state
//! machine, [`lookup`] the names, [`link`] the functions guests import.

mod link;
mod lookup;
mod pipe;
mod socket;

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::p2::bindings::sockets::network::ErrorCode;

use crate::egress::{Egress, TunnelRefused};
use crate::guests::stats::GuestStats;
use crate::guests::{GuestConfig, GuestName};

pub(crate) use self::link::add_to_linker;
pub(crate) use self::pipe::{Ended, GuestEnds, Peer, pair};
pub use self::socket::VirtualSocket;

/// Sockets one instance may hold at once (listening, accepted and
/// connecting together): a guest opening thousands fails at the next one
/// with `new-socket-limit`, and nothing else notices.
pub const SOCKETS_PER_INSTANCE: usize = 256;

/// A connection the runtime accepted for a guest: the guest's ends and
/// who connected (as far as the enclave knows: the host proxy forwards
/// bytes, not addresses, so this is `0.0.0.0:0`).
pub(crate) struct Accepted {
    pub(crate) ends: GuestEnds,
    pub(crate) peer: SocketAddr,
    /// Told the life of the instance that accepts it; dropped unsent when
    /// none does (its instance ended first), which ends the connection.
    pub(crate) life: tokio::sync::oneshot::Sender<CancellationToken>,
}

/// What ends an inbound connection: the end of the instance that accepted
/// it, or of every instance before one did.
pub(crate) async fn instance_gone(life: tokio::sync::oneshot::Receiver<CancellationToken>) {
    if let Ok(token) = life.await {
        token.cancelled_owned().await;
    }
}

/// A TCP guest's listening port and the queue of its accepted connections.
#[derive(Clone)]
pub(crate) struct Listen {
    pub(crate) port: u16,
    pub(crate) queue: Arc<Mutex<Option<mpsc::Receiver<Accepted>>>>,
}

/// An outbound tunnel's stream.
pub(crate) type Tunnel = nacre_transport::Stream;

/// What one instance's sockets may do, and the runtime services behind
/// them. Made for every HTTP request's instance, most of which open no
/// socket: the guest's configuration is shared, and what sockets need of
/// their own ([`Live`]) is made at the first one.
pub struct SocketsCtx {
    config: Arc<GuestConfig>,
    listen: Option<Listen>,
    egress: Arc<Egress>,
    stats: Arc<GuestStats>,
    idle: Duration,
    live: std::sync::OnceLock<Live>,
}

/// An instance's sockets' own state, once it made one.
struct Live {
    names: Mutex<lookup::Names>,
    sockets: Arc<tokio::sync::Semaphore>,
    /// Cancelled when the instance ends: its connections end with it.
    gone: CancellationToken,
}

impl SocketsCtx {
    /// The sockets of one instance of the guest `config` describes:
    /// listening on `listen` (a TCP guest) or nowhere, connecting to its
    /// allow list through `egress`, ending connections idle for `idle`, and
    /// every one at [`SocketsCtx::end`].
    pub(crate) fn new(
        config: Arc<GuestConfig>,
        listen: Option<Listen>,
        (egress, stats): (Arc<Egress>, Arc<GuestStats>),
        idle: Duration,
    ) -> Arc<SocketsCtx> {
        Arc::new(SocketsCtx {
            config,
            listen,
            egress,
            stats,
            idle,
            live: std::sync::OnceLock::new(),
        })
    }

    fn live(&self) -> &Live {
        self.live.get_or_init(|| Live {
            names: Mutex::new(lookup::Names::default()),
            sockets: Arc::new(tokio::sync::Semaphore::new(SOCKETS_PER_INSTANCE)),
            gone: CancellationToken::new(),
        })
    }

    fn guest(&self) -> &GuestName {
        &self.config.name
    }

    /// The instance's life, which its connections end with.
    fn gone(&self) -> CancellationToken {
        self.live().gone.clone()
    }

    /// A slot for one more socket, or None at the instance's limit.
    fn socket_slot(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.live().sockets.clone().try_acquire_owned().ok()
    }

    /// The instance is gone: every connection it holds ends, abruptly.
    pub(crate) fn end(&self) {
        if let Some(live) = self.live.get() {
            live.gone.cancel();
        }
    }

    /// The policy for a connect to `remote`, decided now; the tunnel itself
    /// is the returned future.
    fn connect(
        &self,
        remote: SocketAddr,
    ) -> Result<impl Future<Output = Result<Tunnel, ErrorCode>> + Send + 'static, ErrorCode> {
        let host = match self
            .live()
            .names
            .lock()
            .ok()
            .and_then(|n| n.name_of(remote.ip()))
        {
            Some(name) => name,
            None if lookup::is_synthetic(remote.ip()) => {
                tracing::info!(guest = %self.guest(), %remote, "connect refused: an address this instance was never given");
                return Err(ErrorCode::RemoteUnreachable);
            }
            None => remote.ip().to_string(),
        };
        let port = remote.port();
        if let Err(e) = self.egress.admit_tcp(&self.config.allow, &host, port) {
            self.stats.egress_denied.fetch_add(1, Ordering::Relaxed);
            tracing::info!(guest = %self.guest(), target = %format!("{host}:{port}"), why = %e, "outbound TCP denied");
            return Err(ErrorCode::AccessDenied);
        }
        let (egress, guest) = (self.egress.clone(), self.guest().clone());
        self.stats.egress_requests.fetch_add(1, Ordering::Relaxed);
        Ok(async move {
            egress.tunnel(&host, port).await.map_err(|e| {
                tracing::info!(%guest, target = %format!("{host}:{port}"), error = %e, "outbound TCP failed");
                match e {
                    TunnelRefused::Denied(_) | TunnelRefused::Proxy(403) => ErrorCode::AccessDenied,
                    TunnelRefused::Proxy(504) => ErrorCode::Timeout,
                    TunnelRefused::Proxy(_) => ErrorCode::ConnectionRefused,
                    TunnelRefused::Failed(_) => ErrorCode::RemoteUnreachable,
                }
            })
        })
    }

    /// Moves an outbound connection's bytes until it ends.
    fn pump(&self, peer: Peer, tunnel: Tunnel) {
        let (gone, idle, guest) = (self.gone(), self.idle, self.guest().clone());
        tokio::spawn(async move {
            let ended = peer.pump(tunnel, gone.cancelled_owned(), idle).await;
            tracing::debug!(%guest, ?ended, "outbound TCP connection ended");
        });
    }

    /// The addresses `name` resolves to for this instance.
    fn resolve(&self, name: &str) -> Result<Vec<IpAddr>, ErrorCode> {
        if let Ok(ip) = name.parse::<IpAddr>() {
            return Ok(vec![ip]);
        }
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        let allowed = self.config.allow.iter().any(|r| r.matches_host(&name));
        if !allowed {
            tracing::info!(guest = %self.guest(), %name, "name lookup refused: no allow rule names it");
            return Err(ErrorCode::NameUnresolvable);
        }
        let mut names = self.live().names.lock().map_err(|_| ErrorCode::Unknown)?;
        names
            .address_of(&name)
            .map(|ip| vec![ip])
            .ok_or(ErrorCode::OutOfMemory)
    }
}

/// What the socket functions borrow from a store's data.
pub trait SocketsView: Send + 'static {
    /// The instance's resource table and its sockets' context.
    fn virtual_sockets(&mut self) -> (&mut ResourceTable, &Arc<SocketsCtx>);
}
