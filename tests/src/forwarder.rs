//! A loopback port the test holds and forwards: the leader's DNS name, a
//! member's sync port, or a load balancer in front of several; and, as a
//! host that stops relaying, a link it cuts.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpSocket, TcpStream};

/// A loopback port the test holds, forwarding each connection to one of
/// its targets in turn: the leader's DNS name (one target, which a test
/// can point at any enclave), a member's sync port (its host proxy's), or
/// a load balancer in front of several.
pub struct Forwarder {
    /// The port clients connect to (`--fqdn-leader localhost:PORT`).
    pub port: u16,
    to: Arc<Mutex<Vec<SocketAddr>>>,
    state: Mutex<Forwarding>,
    /// Connections open now, and whether the link is cut.
    links: Arc<Links>,
}

/// A forwarder's open connections, and whether it is cut (as a host that
/// stops relaying a link: what is open ends, what comes is closed).
#[derive(Default)]
struct Links {
    open: Mutex<Vec<tokio::task::AbortHandle>>,
    cut: std::sync::atomic::AtomicBool,
}

/// A forwarder's socket: bound and refusing connections, or serving.
enum Forwarding {
    /// Bound, not listening: connections are refused, as where nothing
    /// listens, until the forwarder is first pointed somewhere.
    Held(TcpSocket),
    /// Listening; the task accepting and forwarding.
    Serving(tokio::task::JoinHandle<()>),
    /// Stopped.
    Done,
}

/// The leader's name, `localhost:PORT`: the DNS record or load balancer of
/// a real deployment.
pub type LeaderName = Forwarder;

impl Forwarder {
    /// A forwarder pointing nowhere yet, listening (connections are
    /// accepted and closed until it points somewhere).
    pub async fn start() -> Forwarder {
        let forwarder = Forwarder::held();
        forwarder.listen();
        forwarder
    }

    /// A loopback port bound and held, refusing connections (nothing
    /// listens there) until the forwarder is first pointed somewhere.
    pub fn held() -> Forwarder {
        let socket = TcpSocket::new_v4().expect("a socket");
        socket
            .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .expect("bind a loopback port");
        let port = socket.local_addr().expect("address").port();
        Forwarder {
            port,
            to: Arc::new(Mutex::new(Vec::new())),
            state: Mutex::new(Forwarding::Held(socket)),
            links: Arc::default(),
        }
    }

    /// Starts listening on the held socket, if it is not yet.
    fn listen(&self) {
        let mut state = self.state.lock().expect("state");
        let Forwarding::Held(_) = &*state else {
            return;
        };
        let Forwarding::Held(socket) = std::mem::replace(&mut *state, Forwarding::Done) else {
            unreachable!("checked above");
        };
        let listener = socket.listen(1024).expect("listen on the held port");
        *state = Forwarding::Serving(tokio::spawn(forward(
            listener,
            self.to.clone(),
            self.links.clone(),
        )));
    }

    /// Gives the held port up, unused, so that another process can bind
    /// it (a host proxy listening there itself); a forwarder already
    /// serving keeps it.
    pub fn release(&self) {
        let mut state = self.state.lock().expect("state");
        if let Forwarding::Held(_) = &*state {
            *state = Forwarding::Done;
        }
    }

    /// Cuts the link (`true`): every connection open through it ends, and
    /// new ones are closed at once; or relays again (`false`).
    pub fn cut(&self, cut: bool) {
        self.links
            .cut
            .store(cut, std::sync::atomic::Ordering::SeqCst);
        if cut {
            for conn in self.links.open.lock().expect("links").drain(..) {
                conn.abort();
            }
        }
    }
    /// From now on the name leads to the sync listener on host port
    /// `sync_port` (a member's, started or not).
    pub fn point_to(&self, sync_port: u16) {
        self.spread_over(&[SocketAddr::from(([127, 0, 0, 1], sync_port))]);
    }

    /// From now on connections go to `targets` in turn.
    pub fn spread_over(&self, targets: &[SocketAddr]) {
        *self.to.lock().expect("targets") = targets.to_vec();
        self.listen();
    }
}

/// Accepts on `listener` and copies each connection to and from the next
/// of `targets`, in turn; one arriving while there is none is closed.
async fn forward(listener: TcpListener, targets: Arc<Mutex<Vec<SocketAddr>>>, links: Arc<Links>) {
    let mut next = 0usize;
    loop {
        let Ok((mut inbound, _)) = listener.accept().await else {
            continue;
        };
        if links.cut.load(std::sync::atomic::Ordering::SeqCst) {
            continue;
        }
        let addr = {
            let targets = targets.lock().expect("targets");
            if targets.is_empty() {
                continue;
            }
            next = next.wrapping_add(1);
            targets[next % targets.len()]
        };
        let conn = tokio::spawn(async move {
            // As every hop of the real system does: no Nagle delay, or
            // small replies wait for a delayed ACK (40 ms).
            let _ = inbound.set_nodelay(true);
            if let Ok(mut outbound) = TcpStream::connect(addr).await {
                let _ = outbound.set_nodelay(true);
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            }
        });
        let mut open = links.open.lock().expect("links");
        open.retain(|c| !c.is_finished());
        open.push(conn.abort_handle());
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        if let Ok(state) = self.state.get_mut()
            && let Forwarding::Serving(task) = state
        {
            task.abort();
        }
    }
}
