//! One guest's `tcp-socket`: a state machine over [`super::pipe`], never
//! an operating-system socket. It may listen only on the address its
//! guest was given, and connect only to what its allow list names,
//! through the host proxy.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use futures::FutureExt;
use tokio::sync::mpsc;
use wasmtime_wasi::p2::Pollable;
use wasmtime_wasi::p2::bindings::sockets::network::{ErrorCode, IpAddressFamily};

use super::pipe::{self, GuestEnds};
use super::{Accepted, SocketsCtx, Tunnel};

type Queue = Arc<Mutex<Option<mpsc::Receiver<Accepted>>>>;

/// Where a socket is in its life (`wasi:sockets/tcp`'s states).
enum State {
    Unbound,
    BindStarted(SocketAddr),
    Bound(SocketAddr),
    ListenStarted(SocketAddr),
    Listening {
        addr: SocketAddr,
        rx: mpsc::Receiver<Accepted>,
        /// Where the receiver goes back when this socket is dropped, so a
        /// guest may listen again after closing its listener.
        home: Queue,
        pending: Option<Accepted>,
    },
    Connecting {
        remote: SocketAddr,
        task: tokio::task::JoinHandle<Result<Tunnel, ErrorCode>>,
    },
    ConnectDone {
        remote: SocketAddr,
        result: Result<Tunnel, ErrorCode>,
    },
    Connected {
        local: SocketAddr,
        remote: SocketAddr,
        send_side: pipe::SendSide,
    },
    Closed,
}

/// A guest's TCP socket.
pub struct VirtualSocket {
    family: IpAddressFamily,
    state: State,
    ctx: Arc<SocketsCtx>,
    /// Held for the socket's life: counts against the instance's limit.
    _slot: tokio::sync::OwnedSemaphorePermit,
}

impl Drop for VirtualSocket {
    fn drop(&mut self) {
        if let State::Listening { rx, home, .. } = std::mem::replace(&mut self.state, State::Closed)
            && let Ok(mut h) = home.lock()
        {
            *h = Some(rx);
        }
    }
}

impl VirtualSocket {
    /// A new, unbound socket, or `new-socket-limit` past the instance's
    /// limit.
    pub(crate) fn new(ctx: Arc<SocketsCtx>, family: IpAddressFamily) -> Result<Self, ErrorCode> {
        let slot = ctx.socket_slot().ok_or_else(|| {
            tracing::info!(guest = %ctx.guest(), limit = super::SOCKETS_PER_INSTANCE, "socket refused: the instance holds its limit of sockets");
            ErrorCode::NewSocketLimit
        })?;
        Ok(VirtualSocket {
            family,
            state: State::Unbound,
            ctx,
            _slot: slot,
        })
    }

    /// An accepted connection's socket.
    fn accepted(
        &self,
        local: SocketAddr,
        conn: &GuestEnds,
        peer: SocketAddr,
    ) -> Result<Self, ErrorCode> {
        let mut s = VirtualSocket::new(self.ctx.clone(), self.family)?;
        s.state = State::Connected {
            local,
            remote: peer,
            send_side: conn.send_side.clone(),
        };
        Ok(s)
    }

    fn family_of(&self, addr: &SocketAddr) -> Result<(), ErrorCode> {
        match (self.family, addr) {
            (IpAddressFamily::Ipv4, SocketAddr::V4(_))
            | (IpAddressFamily::Ipv6, SocketAddr::V6(_)) => Ok(()),
            _ => Err(ErrorCode::InvalidArgument),
        }
    }

    /// `start-bind`: only the guest's own listening address (any of the
    /// loopback or unspecified addresses, on its port) is bindable.
    pub(crate) fn start_bind(&mut self, addr: SocketAddr) -> Result<(), ErrorCode> {
        self.family_of(&addr)?;
        if !matches!(self.state, State::Unbound) {
            return Err(ErrorCode::InvalidState);
        }
        let Some(listen) = &self.ctx.listen else {
            tracing::info!(guest = %self.ctx.guest(), %addr, "bind refused: this guest serves no TCP port (deploy it with tcp=PORT)");
            return Err(ErrorCode::AccessDenied);
        };
        let local = matches!(
            addr.ip(),
            IpAddr::V4(Ipv4Addr::LOCALHOST | Ipv4Addr::UNSPECIFIED)
                | IpAddr::V6(Ipv6Addr::LOCALHOST | Ipv6Addr::UNSPECIFIED)
        );
        if !local || addr.port() != listen.port {
            tracing::info!(guest = %self.ctx.guest(), %addr, port = listen.port, "bind refused: a TCP guest may bind only 127.0.0.1:PORT (or 0.0.0.0, ::1, ::) on its own port");
            return Err(ErrorCode::AddressNotBindable);
        }
        self.state = State::BindStarted(addr);
        Ok(())
    }

    /// `finish-bind`.
    pub(crate) fn finish_bind(&mut self) -> Result<(), ErrorCode> {
        match self.state {
            State::BindStarted(addr) => {
                self.state = State::Bound(addr);
                Ok(())
            }
            _ => Err(ErrorCode::NotInProgress),
        }
    }

    /// `start-listen`: takes the guest's queue of accepted connections;
    /// another socket listening already makes it `address-in-use`.
    pub(crate) fn start_listen(&mut self) -> Result<(), ErrorCode> {
        let State::Bound(addr) = self.state else {
            return Err(ErrorCode::InvalidState);
        };
        self.state = State::ListenStarted(addr);
        Ok(())
    }

    /// `finish-listen`.
    pub(crate) fn finish_listen(&mut self) -> Result<(), ErrorCode> {
        let State::ListenStarted(addr) = self.state else {
            return Err(ErrorCode::NotInProgress);
        };
        let Some(listen) = &self.ctx.listen else {
            return Err(ErrorCode::InvalidState);
        };
        let rx = listen
            .queue
            .lock()
            .ok()
            .and_then(|mut q| q.take())
            .ok_or(ErrorCode::AddressInUse)?;
        self.state = State::Listening {
            addr,
            rx,
            home: listen.queue.clone(),
            pending: None,
        };
        Ok(())
    }

    /// `accept`: a waiting connection, or `would-block`.
    pub(crate) fn accept(&mut self) -> Result<(VirtualSocket, GuestEnds), ErrorCode> {
        let State::Listening {
            addr, rx, pending, ..
        } = &mut self.state
        else {
            return Err(ErrorCode::InvalidState);
        };
        let addr = *addr;
        let conn = match pending.take() {
            Some(c) => c,
            None => rx.try_recv().map_err(|_| ErrorCode::WouldBlock)?,
        };
        let socket = self.accepted(addr, &conn.ends, conn.peer)?;
        let _ = conn.life.send(self.ctx.gone());
        Ok((socket, conn.ends))
    }

    /// `start-connect`: the policy is decided here, before anything leaves
    /// the enclave; the tunnel opens in the background.
    pub(crate) fn start_connect(&mut self, remote: SocketAddr) -> Result<(), ErrorCode> {
        self.family_of(&remote)?;
        if !matches!(self.state, State::Unbound) {
            return Err(ErrorCode::InvalidState);
        }
        let open = self.ctx.connect(remote)?;
        self.state = State::Connecting {
            remote,
            task: tokio::spawn(open),
        };
        Ok(())
    }

    /// `finish-connect`: the guest's ends of the tunnel, its bytes pumped
    /// from now on.
    pub(crate) fn finish_connect(&mut self) -> Result<GuestEnds, ErrorCode> {
        if let State::Connecting { remote, task } = &mut self.state {
            let remote = *remote;
            let Some(joined) = task.now_or_never() else {
                return Err(ErrorCode::WouldBlock);
            };
            let result = joined.unwrap_or(Err(ErrorCode::Unknown));
            self.state = State::ConnectDone { remote, result };
        }
        match std::mem::replace(&mut self.state, State::Closed) {
            State::ConnectDone { remote, result } => {
                let tunnel = result?;
                let (peer, ends) = pipe::pair();
                let local = SocketAddr::new(unspecified(self.family), 0);
                self.state = State::Connected {
                    local,
                    remote,
                    send_side: ends.send_side.clone(),
                };
                self.ctx.pump(peer, tunnel);
                Ok(ends)
            }
            other => {
                self.state = other;
                Err(ErrorCode::NotInProgress)
            }
        }
    }

    /// `local-address`.
    pub(crate) fn local_address(&self) -> Result<SocketAddr, ErrorCode> {
        match &self.state {
            State::Bound(a) | State::ListenStarted(a) | State::Listening { addr: a, .. } => Ok(*a),
            State::Connected { local, .. } => Ok(*local),
            _ => Err(ErrorCode::InvalidState),
        }
    }

    /// `remote-address`.
    pub(crate) fn remote_address(&self) -> Result<SocketAddr, ErrorCode> {
        match &self.state {
            State::Connected { remote, .. } => Ok(*remote),
            _ => Err(ErrorCode::InvalidState),
        }
    }

    /// `is-listening`.
    pub(crate) fn is_listening(&self) -> bool {
        matches!(self.state, State::Listening { .. })
    }

    /// `address-family`.
    pub(crate) fn family(&self) -> IpAddressFamily {
        self.family
    }

    /// `shutdown`: receiving is ended by dropping the input stream; sending
    /// ends here, which the other side reads as the end of the stream.
    pub(crate) fn shutdown(&mut self, send: bool) -> Result<(), ErrorCode> {
        let State::Connected { send_side, .. } = &self.state else {
            return Err(ErrorCode::InvalidState);
        };
        if send {
            pipe::shut(send_side);
        }
        Ok(())
    }
}

fn unspecified(family: IpAddressFamily) -> IpAddr {
    match family {
        IpAddressFamily::Ipv4 => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddressFamily::Ipv6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for VirtualSocket {
    async fn ready(&mut self) {
        match &mut self.state {
            State::Listening { rx, pending, .. } if pending.is_none() => {
                // A listener whose runtime side is gone never becomes
                // ready again; the guest's wait is its own to bound.
                match rx.recv().await {
                    Some(c) => *pending = Some(c),
                    None => std::future::pending().await,
                }
            }
            State::Connecting { remote, task } => {
                let remote = *remote;
                let result = task.await.unwrap_or(Err(ErrorCode::Unknown));
                self.state = State::ConnectDone { remote, result };
            }
            _ => {}
        }
    }
}
