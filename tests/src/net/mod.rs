//! The parent-instance side in tests: a real `nacre-host-proxy`, recording
//! relays to put on each link, and an HTTPS origin for guests to fetch.

use std::net::SocketAddr;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nacre_transport::{Address, Listener, connect};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use nacre_cli::process::{Stderr, Supervised};

use crate::{Runtime, bin};

mod origin;

pub use origin::{HttpsServer, Origin, TlsRelay};

/// A running `nacre-host-proxy`; killed on drop.
pub struct HostProxy {
    child: Supervised,
    args: Vec<String>,
    /// Bound `--inbound` listen addresses, in flag order.
    pub inbound: Vec<Address>,
    /// Bound `--egress-listen` address.
    pub egress: Option<Address>,
    /// Bound `--metrics-listen` address.
    pub metrics: Option<Address>,
}

impl HostProxy {
    /// Starts the proxy with `args` and waits until it is ready.
    pub fn start(args: &[String]) -> HostProxy {
        let mut command = Command::new(bin("nacre-host-proxy"));
        command
            .args(args)
            .env("NACRE_LOG", crate::log_filter("debug"));
        let mut child = Supervised::spawn(command, Stderr::Keep { watch: false })
            .expect("spawn nacre-host-proxy")
            .report_on_panic();
        let (mut inbound, mut egress, mut metrics) = (Vec::new(), None, None);
        let addr = |s: &str| s.parse::<Address>().expect("printed address");
        let ready = child.wait_for(Duration::from_secs(30), |line| {
            if let Some(rest) = line.strip_prefix("nacre-host-proxy inbound ") {
                let (listen, _) = rest.split_once(" -> ").expect("LISTEN -> TARGET");
                inbound.push(addr(listen));
            } else if let Some(a) = line.strip_prefix("nacre-host-proxy egress ") {
                egress = Some(addr(a));
            } else if let Some(a) = line.strip_prefix("nacre-host-proxy metrics ") {
                metrics = Some(addr(a));
            }
            (line == "nacre-host-proxy ready").then_some(())
        });
        if let Err(why) = ready {
            panic!("host proxy did not start: {why}");
        }
        HostProxy {
            child,
            args: args.to_vec(),
            inbound,
            egress,
            metrics,
        }
    }

    /// Kills the proxy at once (SIGKILL: connections in flight are lost).
    pub fn kill(&mut self) {
        self.child.kill();
    }

    /// Waits (at most `limit`) for a stdout line containing `needle`, past
    /// the lines already waited for; the line.
    pub fn wait_for_line(&mut self, limit: Duration, needle: &str) -> String {
        self.child
            .wait_for(limit, |l| l.contains(needle).then(|| l.to_string()))
            .unwrap_or_else(|e| panic!("no line with {needle:?} from the host proxy: {e}"))
    }

    /// Kills the proxy at once (SIGKILL: connections in flight are lost)
    /// and starts it again with the same flags, on the same addresses.
    pub fn restart_after_kill(&mut self) {
        self.child.kill();
        // The same ports and socket paths, not fresh ones: each
        // `--inbound` value (in order) gets the address bound the first time.
        let mut bound = self.inbound.iter();
        let mut args = Vec::new();
        let mut it = self.args.iter();
        while let Some(a) = it.next() {
            args.push(a.clone());
            if a == "--inbound"
                && let (Some(v), Some(b)) = (it.next(), bound.next())
            {
                let (_, target) = v.split_once('=').expect("LISTEN=TARGET");
                args.push(format!("{b}={target}"));
            }
        }
        *self = HostProxy::start(&args);
    }

    /// The first `--inbound` listener as a TCP socket address.
    pub fn inbound_tcp(&self) -> SocketAddr {
        match self.inbound.first() {
            Some(Address::Tcp { host, port }) => format!("{host}:{port}").parse().unwrap(),
            other => panic!("no TCP inbound listener: {other:?}"),
        }
    }

    /// The Prometheus text from `--metrics-listen`.
    pub async fn metrics_text(&self) -> String {
        let Some(Address::Tcp { host, port }) = &self.metrics else {
            panic!("no TCP --metrics-listen");
        };
        reqwest::get(format!("http://{host}:{port}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// The sum of every sample whose name and labels start with `prefix`,
    /// e.g. `nacre_proxy_refusals_total{kind="egress",reason="not_allowed"`.
    pub async fn metric(&self, prefix: &str) -> f64 {
        self.metrics_text()
            .await
            .lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Sends SIGTERM; returns at once.
    pub fn sigterm(&self) {
        self.child.terminate();
    }

    /// Waits up to `limit` for the process to exit.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        self.child.wait_exit(limit)
    }

    /// Everything the proxy logged so far.
    pub fn log(&self) -> String {
        self.child.output()
    }

    /// Process id.
    pub fn pid(&self) -> u32 {
        self.child.pid()
    }
}

/// A byte relay that records everything crossing it, both ways: put on a
/// link, it sees exactly what a host-side observer of that link would.
pub struct Relay {
    /// Where it listens.
    pub listen: Address,
    recorded: Arc<Mutex<Vec<u8>>>,
    blocked: Arc<std::sync::atomic::AtomicBool>,
    stalled: Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    /// From now on, bytes on the connections already open are held, not
    /// delivered (`true`), as a host that stops answering would, or
    /// delivered again, held ones first (`false`).
    pub fn stall(&self, stalled: bool) {
        self.stalled
            .store(stalled, std::sync::atomic::Ordering::SeqCst);
    }

    /// From now on, new connections are closed at once (`true`), as a host
    /// that stops relaying this link would, or relayed again (`false`).
    pub fn block(&self, blocked: bool) {
        self.blocked
            .store(blocked, std::sync::atomic::Ordering::SeqCst);
    }

    /// Listens on `listen` and forwards every connection to `target`.
    pub async fn start(listen: Address, target: Address) -> Relay {
        Relay::cutting(listen, target, usize::MAX).await
    }

    /// Like [`Relay::start`], but cuts every connection (both ways, as a
    /// hostile host would) once `limit` bytes have come back from `target`.
    pub async fn cutting(listen: Address, target: Address, limit: usize) -> Relay {
        let listener = Listener::bind(&listen).await.expect("relay listen");
        let listen = listener.local_addr().unwrap();
        let recorded = Arc::new(Mutex::new(Vec::new()));
        let rec = recorded.clone();
        let blocked = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let block = blocked.clone();
        let stalled = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stall = stalled.clone();
        let task = tokio::spawn(async move {
            loop {
                let (inner, _) = listener.accept().await;
                if block.load(std::sync::atomic::Ordering::SeqCst) {
                    continue;
                }
                let target = target.clone();
                let rec = rec.clone();
                let stall = stall.clone();
                tokio::spawn(async move {
                    let Ok(outer) = connect(&target).await else {
                        return;
                    };
                    let (ar, aw) = tokio::io::split(inner);
                    let (br, bw) = tokio::io::split(outer);
                    tokio::join!(
                        pump(ar, bw, rec.clone(), usize::MAX, stall.clone()),
                        pump(br, aw, rec, limit, stall)
                    );
                });
            }
        });
        Relay {
            listen,
            recorded,
            blocked,
            stalled,
            task,
        }
    }

    /// Everything recorded so far, both directions.
    pub fn recorded(&self) -> Vec<u8> {
        self.recorded.lock().unwrap().clone()
    }

    /// The listen address as a TCP socket address.
    pub fn tcp(&self) -> SocketAddr {
        match &self.listen {
            Address::Tcp { host, port } => format!("{host}:{port}").parse().unwrap(),
            other => panic!("not TCP: {other}"),
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Copies `from` to `to` until either ends or `limit` bytes have passed;
/// the bytes over the limit are never sent; while `stalled`, bytes wait.
async fn pump<R, W>(
    mut from: R,
    mut to: W,
    rec: Arc<Mutex<Vec<u8>>>,
    limit: usize,
    stalled: Arc<std::sync::atomic::AtomicBool>,
) where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; 16 * 1024];
    let mut left = limit;
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                while stalled.load(std::sync::atomic::Ordering::SeqCst) {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                let n = n.min(left);
                rec.lock().unwrap().extend_from_slice(&buf[..n]);
                if to.write_all(&buf[..n]).await.is_err() {
                    break;
                }
                left -= n;
                if left == 0 {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown().await;
}

/// `unix:DIR/NAME`.
pub fn unix_in(dir: &std::path::Path, name: &str) -> String {
    format!("unix:{}", dir.join(name).display())
}

/// Percent-encodes all but unreserved characters: a URL as a query value.
pub fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The production layout on loopback: a real host proxy, and a runtime
/// behind it on unix sockets (as the enclave is on vsock) whose egress
/// passes a recording relay on its way to the proxy's CONNECT socket.
pub struct Stack {
    /// The host proxy (inbound, egress, metrics on loopback TCP).
    pub proxy: HostProxy,
    /// The runtime; its clients go through the proxy.
    pub rt: Runtime,
    /// The relay on the egress link.
    pub relay: Relay,
}

impl Stack {
    /// `wrapper` runs the runtime (e.g. `unshare -n`); `allow` are the
    /// proxy's `--egress-allow` rules (names may resolve to loopback, where
    /// test origins live); `extra_ca` is the runtime's `--extra-ca`; the
    /// relay cuts each connection once `cut_after` bytes came back, if set.
    pub async fn start(
        wrapper: &[&str],
        allow: &[String],
        extra_ca: &str,
        cut_after: Option<usize>,
    ) -> Stack {
        let dir = crate::temp_dir("stack");
        let mut args = vec![
            "--inbound".to_string(),
            format!("tcp://127.0.0.1:0={}", unix_in(&dir, "runtime.sock")),
            "--egress-listen".into(),
            unix_in(&dir, "egress.sock"),
            "--metrics-listen".into(),
            "tcp://127.0.0.1:0".into(),
            "--egress-allow-private".into(),
        ];
        for a in allow {
            args.extend(["--egress-allow".to_string(), a.clone()]);
        }
        let proxy = HostProxy::start(&args);
        let relay = Relay::cutting(
            unix_in(&dir, "relay-egress.sock").parse().unwrap(),
            proxy.egress.clone().expect("an egress listener"),
            cut_after.unwrap_or(usize::MAX),
        )
        .await;
        let mut rt = Runtime::start_behind(
            wrapper,
            &unix_in(&dir, "runtime.sock"),
            &[
                "--egress",
                &relay.listen.to_string(),
                "--extra-ca",
                extra_ca,
            ],
        );
        rt.via(proxy.inbound_tcp());
        Stack { proxy, rt, relay }
    }

    /// `GET /fetch/?url=URL` through the whole stack (the `fetch` guest).
    pub async fn fetch(&self, url: &str) -> (u16, String) {
        self.rt
            .get(&format!("/fetch/?url={}", urlencode(url)))
            .await
    }
}

/// Whether `needle` occurs in `hay`.
pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// A loopback port where nothing listens, held: bound but never
/// listening, so connections are refused and no other listener in the test
/// run (an origin, a proxy) can be given the port while the socket lives.
pub fn closed_port() -> (u16, tokio::net::TcpSocket) {
    let s = tokio::net::TcpSocket::new_v4().expect("a socket");
    s.bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .expect("bind a loopback port");
    (s.local_addr().expect("its address").port(), s)
}

/// The ports a process holds: TCP ports it listens on and UDP ports it
/// bound, from /proc. For programs told to bind port 0 that do not print
/// the port they got.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct BoundPorts {
    /// TCP ports in LISTEN state.
    pub tcp: Vec<u16>,
    /// Bound UDP ports.
    pub udp: Vec<u16>,
}

/// What process `pid` holds now (see [`BoundPorts`]).
pub fn bound_ports(pid: u32) -> BoundPorts {
    let mut inodes = std::collections::HashSet::new();
    if let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
        for fd in fds.flatten() {
            if let Ok(target) = std::fs::read_link(fd.path())
                && let Some(inode) = target
                    .to_str()
                    .and_then(|t| t.strip_prefix("socket:["))
                    .and_then(|t| t.strip_suffix(']'))
            {
                inodes.insert(inode.to_string());
            }
        }
    }
    // Columns: sl local_address rem_address st ... inode (the 10th).
    let ports = |table: &str, state: &str| -> Vec<u16> {
        let mut ports: Vec<u16> = ["", "6"]
            .iter()
            .filter_map(|v6| std::fs::read_to_string(format!("/proc/{pid}/net/{table}{v6}")).ok())
            .flat_map(|text| {
                text.lines()
                    .skip(1)
                    .filter_map(|line| {
                        let cols: Vec<&str> = line.split_whitespace().collect();
                        let (local, st, inode) = (cols.get(1)?, cols.get(3)?, cols.get(9)?);
                        if *st != state || !inodes.contains(*inode) {
                            return None;
                        }
                        u16::from_str_radix(local.rsplit(':').next()?, 16).ok()
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        ports.sort_unstable();
        ports.dedup();
        ports
    };
    BoundPorts {
        // 0A: LISTEN; 07: an unconnected UDP socket.
        tcp: ports("tcp", "0A"),
        udp: ports("udp", "07"),
    }
}

/// Waits (at most `limit`) until process `pid` holds at least `tcp`
/// listening TCP ports and `udp` UDP ports; what it holds then.
pub fn wait_for_bound_ports(pid: u32, tcp: usize, udp: usize, limit: Duration) -> BoundPorts {
    let deadline = std::time::Instant::now() + limit;
    loop {
        let bound = bound_ports(pid);
        if bound.tcp.len() >= tcp && bound.udp.len() >= udp {
            return bound;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "process {pid} did not bind {tcp} TCP and {udp} UDP ports within {limit:?}: {bound:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
