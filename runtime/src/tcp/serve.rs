//! One deployed TCP guest: its listener, its connections, and its
//! instance's lives.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nacre_transport::{Address, Listener, Stream};
use rustls::ServerConfig;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::guests::{Guest, GuestEngine, TcpExit, TcpTls, run_tcp};
use crate::sockets::{Accepted, Ended, Listen, instance_gone, pair};

/// Connections a guest has not accepted yet, past which new ones are
/// turned away (a listener's backlog).
const BACKLOG: usize = 128;
/// Connections one TCP guest holds open at once.
pub const CONNECTIONS_PER_GUEST: usize = 256;
/// The first wait before an instance that ended is started again; it
/// doubles per quick end, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// An instance that lived this long starts its next life without waiting.
const STABLE: Duration = Duration::from_secs(60);

/// What serving one TCP guest needs.
pub(super) struct Serving {
    pub(super) guest: Arc<Guest>,
    pub(super) engine: GuestEngine,
    pub(super) address: Address,
    pub(super) tls: Arc<ServerConfig>,
    /// `--client-timeout`: the TLS handshake's deadline and the idle
    /// limit of a connection.
    pub(super) timeout: Duration,
    /// The runtime's client connections, shared with HTTPS.
    pub(super) client_slots: Arc<Semaphore>,
    /// Cancelled when the guest is replaced, removed, or the runtime stops.
    pub(super) stop: CancellationToken,
}

impl Serving {
    /// Serves until `stop`: binds the listener (retrying while the address
    /// is taken), runs the instance, hands it what the listener accepts.
    pub(super) async fn run(self) {
        let name = self.guest.config.name.clone();
        let Some(tcp) = self.guest.config.tcp else {
            return;
        };
        let listener = tokio::select! {
            () = self.stop.cancelled() => return,
            l = bind(&self.address, &name) => l,
        };
        tracing::info!(guest = %name, port = tcp.port, tls = %tcp.tls, address = %self.address, "TCP guest listening");
        let (queue_tx, queue_rx) = mpsc::channel(BACKLOG);
        let listen = Listen {
            port: tcp.port,
            queue: Arc::new(Mutex::new(Some(queue_rx))),
        };
        let me = Arc::new(self);
        tokio::spawn(me.clone().lives(listen));
        let slots = Arc::new(Semaphore::new(CONNECTIONS_PER_GUEST));
        loop {
            let (stream, _) = tokio::select! {
                () = me.stop.cancelled() => return,
                accepted = listener.accept() => accepted,
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                me.guest.stats.tcp_refused.fetch_add(1, Ordering::Relaxed);
                tracing::info!(guest = %name, limit = CONNECTIONS_PER_GUEST, "TCP connection refused: the guest holds its limit of connections");
                continue;
            };
            let Ok(runtime_slot) = me.client_slots.clone().try_acquire_owned() else {
                me.guest.stats.tcp_refused.fetch_add(1, Ordering::Relaxed);
                tracing::info!(guest = %name, "TCP connection refused: the runtime serves --max-connections clients already");
                continue;
            };
            let (me, queue) = (me.clone(), queue_tx.clone());
            tokio::spawn(async move {
                me.connection(stream, queue, tcp.tls).await;
                drop((slot, runtime_slot));
            });
        }
    }

    /// The instance's lives: started again after it ends, with back-off,
    /// until `stop`.
    async fn lives(self: Arc<Self>, listen: Listen) {
        let name = &self.guest.config.name;
        let mut backoff = FIRST_BACKOFF;
        loop {
            let started = tokio::time::Instant::now();
            let life = run_tcp(&self.engine, &self.guest, listen.clone(), self.timeout);
            let exit = tokio::select! {
                () = self.stop.cancelled() => return,
                exit = life => exit,
            };
            match &exit {
                TcpExit::Trapped(why) => {
                    tracing::warn!(guest = %name, error = %why, "TCP guest trapped; starting it again")
                }
                TcpExit::Failed => {
                    tracing::warn!(guest = %name, "TCP guest's run returned an error; starting it again")
                }
                TcpExit::Returned => {
                    tracing::info!(guest = %name, "TCP guest's run returned; starting it again")
                }
            }
            if started.elapsed() >= STABLE {
                backoff = FIRST_BACKOFF;
            }
            tokio::select! {
                () = self.stop.cancelled() => return,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// One client: TLS ended here (or not), then handed to the guest.
    async fn connection(&self, stream: Stream, queue: mpsc::Sender<Accepted>, tls: TcpTls) {
        let name = &self.guest.config.name;
        let (peer, ends) = pair();
        let (life_tx, life_rx) = oneshot::channel();
        let accepted = Accepted {
            ends,
            peer: SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
            life: life_tx,
        };
        let gone = instance_gone(life_rx);
        let ended = match tls {
            TcpTls::Guest => {
                if !self.hand_over(&queue, accepted) {
                    return;
                }
                peer.pump(stream, gone, self.timeout).await
            }
            TcpTls::Enclave => {
                let acceptor = tokio_rustls::TlsAcceptor::from(self.tls.clone());
                let handshake = tokio::time::timeout(self.timeout, acceptor.accept(stream)).await;
                let tls_stream = match handshake {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        self.guest.stats.tcp_refused.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(guest = %name, error = %e, "TCP guest: TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        self.guest.stats.tcp_refused.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(guest = %name, "TCP guest: no TLS handshake within --client-timeout");
                        return;
                    }
                };
                if !self.hand_over(&queue, accepted) {
                    return;
                }
                peer.pump(tls_stream, gone, self.timeout).await
            }
        };
        match ended {
            Ended::Clean => tracing::debug!(guest = %name, "TCP connection closed"),
            Ended::Idle => {
                tracing::info!(guest = %name, idle = ?self.timeout, "TCP connection closed: idle past --client-timeout")
            }
            Ended::InstanceGone => {
                tracing::info!(guest = %name, "TCP connection ended: its instance is gone (redeployed, removed or trapped)")
            }
            Ended::Cut(why) => tracing::info!(guest = %name, %why, "TCP connection cut"),
        }
    }
}

impl Serving {
    /// Queues `accepted` for the guest, or refuses it (backlog full).
    fn hand_over(&self, queue: &mpsc::Sender<Accepted>, accepted: Accepted) -> bool {
        let stats = &self.guest.stats;
        if queue.try_send(accepted).is_err() {
            stats.tcp_refused.fetch_add(1, Ordering::Relaxed);
            tracing::info!(guest = %self.guest.config.name, backlog = BACKLOG, "TCP connection refused: the guest's backlog is full");
            return false;
        }
        stats.tcp_connections.fetch_add(1, Ordering::Relaxed);
        true
    }
}

/// Binds `address`, retrying every second while it cannot be bound (a
/// previous life of the guest still closing, another program).
async fn bind(address: &Address, name: &crate::guests::GuestName) -> Listener {
    let mut logged = false;
    loop {
        match Listener::bind(address).await {
            Ok(l) => return l,
            Err(e) => {
                if !logged {
                    tracing::error!(guest = %name, %address, error = %e, "TCP guest cannot listen; retrying every second");
                    logged = true;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}
