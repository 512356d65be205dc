//! TCP guests (docs/tcp-guests.md): each deployed with `tcp=PORT` gets a
//! listener of its own, on `--listen`'s host with the guest's port, and
//! one long-lived instance that accepts what the listener takes.
//!
//! [`TcpGuests::run`] follows the guest table: a TCP guest deployed starts
//! serving, one replaced is stopped (its listener closed, its instance
//! torn down with every connection it holds, abruptly) before the new code
//! binds the same port, one removed is stopped. [`serve`] is one guest.

mod serve;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use nacre_transport::Address;
use rustls::ServerConfig;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::guests::{Guest, GuestName, Registry};

pub use serve::CONNECTIONS_PER_GUEST;

/// Where TCP guest `port`'s connections arrive, given the runtime's
/// `--listen`: the same host (or vsock CID) on the guest's port; for
/// `unix:PATH`, `unix:PATH.tcp-PORT`.
pub fn guest_address(listen: &Address, port: u16) -> Address {
    match listen {
        Address::Tcp { host, .. } => Address::Tcp {
            host: host.clone(),
            port,
        },
        Address::Vsock { cid, .. } => Address::Vsock {
            cid: *cid,
            port: u32::from(port),
        },
        Address::Unix(path) => {
            let mut p = path.clone().into_os_string();
            p.push(format!(".tcp-{port}"));
            Address::Unix(PathBuf::from(p))
        }
    }
}

/// The ports no TCP guest may have: those of the runtime's own listeners
/// (`own`, each with its flag) that a guest's listener on `listen`'s host
/// would share. Same kind of address (TCP, vsock) and same port count as
/// shared, whatever the host: a wildcard host would collide anyway.
pub fn reserved_ports(
    listen: &Address,
    own: &[(&'static str, &Address)],
) -> BTreeMap<u16, &'static str> {
    let port_of = |a: &Address| match a {
        Address::Tcp { port, .. } => Some(u32::from(*port)),
        Address::Vsock { port, .. } => Some(*port),
        Address::Unix(_) => None,
    };
    let same_kind =
        |a: &Address, b: &Address| std::mem::discriminant(a) == std::mem::discriminant(b);
    own.iter()
        .filter(|(_, a)| same_kind(a, listen))
        .filter_map(|(flag, a)| Some((u16::try_from(port_of(a)?).ok()?, *flag)))
        .collect()
}

/// The TCP guests being served.
pub struct TcpGuests {
    registry: Arc<Registry>,
    listen: Address,
    tls: Arc<ServerConfig>,
    timeout: Duration,
    client_slots: Arc<Semaphore>,
}

/// A guest being served: the code it runs, and how to stop it.
struct Running {
    guest: Arc<Guest>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl TcpGuests {
    /// TCP guests of `registry`, on `listen`'s host, their TLS ended with
    /// `tls` (no ALPN), `timeout` (`--client-timeout`) for handshakes and
    /// idle connections; each connection also takes one of `client_slots`,
    /// which the HTTPS listener shares (`--max-connections`).
    pub fn new(
        registry: Arc<Registry>,
        listen: Address,
        tls: Arc<ServerConfig>,
        timeout: Duration,
        client_slots: Arc<Semaphore>,
    ) -> TcpGuests {
        TcpGuests {
            registry,
            listen,
            tls,
            timeout,
            client_slots,
        }
    }

    /// Follows the guest table until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut changes = self.registry.subscribe();
        let mut running: BTreeMap<GuestName, Running> = BTreeMap::new();
        loop {
            let snapshot = changes.borrow_and_update().clone();
            let wanted: BTreeMap<&GuestName, &Arc<Guest>> = snapshot
                .guests()
                .filter(|g| g.config.tcp.is_some())
                .map(|g| (&g.config.name, g))
                .collect();
            let stale: Vec<GuestName> = running
                .iter()
                .filter(|(name, r)| !wanted.get(name).is_some_and(|g| Arc::ptr_eq(g, &r.guest)))
                .map(|(name, _)| name.clone())
                .collect();
            for name in stale {
                if let Some(r) = running.remove(&name) {
                    r.stop.cancel();
                    // Its listener is closed before the new code binds.
                    let _ = r.task.await;
                }
            }
            for (name, guest) in wanted {
                if !running.contains_key(name) {
                    running.insert(name.clone(), self.start(guest.clone(), &shutdown));
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                changed = changes.changed() => if changed.is_err() { break },
            }
        }
        for r in running.into_values() {
            r.stop.cancel();
        }
    }

    fn start(&self, guest: Arc<Guest>, shutdown: &CancellationToken) -> Running {
        let stop = shutdown.child_token();
        let port = guest.config.tcp.map_or(0, |t| t.port);
        let serving = serve::Serving {
            guest: guest.clone(),
            engine: self.registry.engine().clone(),
            address: guest_address(&self.listen, port),
            tls: self.tls.clone(),
            timeout: self.timeout,
            client_slots: self.client_slots.clone(),
            stop: stop.clone(),
        };
        Running {
            guest,
            stop,
            task: tokio::spawn(serving.run()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_runtime_s_own_ports_are_reserved_on_the_same_kind_of_address() {
        let a = |s: &str| s.parse::<Address>().unwrap();
        let (listen, sync, metrics) = (
            a("vsock://any:443"),
            a("vsock://any:444"),
            a("tcp://127.0.0.1:9100"),
        );
        let own = [
            ("--listen", &listen),
            ("--sync-listen", &sync),
            ("--metrics-listen", &metrics),
        ];
        let reserved = reserved_ports(&listen, &own);
        assert_eq!(reserved.get(&443), Some(&"--listen"));
        assert_eq!(reserved.get(&444), Some(&"--sync-listen"));
        // A TCP metrics port is no vsock port.
        assert_eq!(reserved.get(&9100), None);
        let tcp = a("tcp://0.0.0.0:8443");
        let reserved = reserved_ports(&tcp, &[("--listen", &tcp), ("--metrics-listen", &metrics)]);
        assert_eq!(reserved.keys().copied().collect::<Vec<_>>(), [8443, 9100]);
        // unix: guests listen on PATH.tcp-PORT, which no listener has.
        let unix = a("unix:/run/rt.sock");
        assert!(reserved_ports(&unix, &[("--listen", &unix)]).is_empty());
    }

    #[test]
    fn a_guest_listens_on_the_runtime_host_with_its_own_port() {
        let at = |listen: &str| guest_address(&listen.parse().unwrap(), 6379).to_string();
        assert_eq!(at("tcp://127.0.0.1:8443"), "tcp://127.0.0.1:6379");
        assert_eq!(
            at("vsock://any:443"),
            guest_address(&"vsock://any:6379".parse().unwrap(), 6379).to_string()
        );
        assert_eq!(
            at("unix:/run/nacre/rt.sock"),
            "unix:/run/nacre/rt.sock.tcp-6379"
        );
    }
}
