//! Throughput and added latency of `nacre-host-proxy --inbound`, against a
//! direct loopback connection. Run with
//! `cargo bench -p nacre-host-proxy --bench proxy`; it prints the figures
//! (target: proxied throughput ≥ 0.9× direct).
//!
//! The real binary runs as its own process, as in production; the
//! target behind it is a TCP sink/echo server and, separately, a unix
//! socket (this machine has no vsock).
//!
//! Two runs. "Shared": sender, receiver and proxy all compete for every
//! core, so the proxy's CPU is taken from the endpoints. "Own core": the
//! endpoints are pinned to core 0 and the proxy to core 1, as on a parent
//! instance where the client is remote and the enclave has its own vCPUs;
//! this asks whether the proxy is the bottleneck.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UnixListener};

const BULK: u64 = 2 << 30; // 2 GiB per run
const ROUNDS: usize = 3;
const PINGS: usize = 20_000;

struct Proxy(Child);

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const PIN_ENV: &str = "NACRE_BENCH_PIN";

fn pin(pid: nix::unistd::Pid, cpu: usize) {
    let mut set = nix::sched::CpuSet::new();
    set.set(cpu).unwrap();
    nix::sched::sched_setaffinity(pid, &set).unwrap();
}

/// Starts the proxy forwarding a fresh loopback port to `target`; returns
/// the port.
fn proxy(target: &str) -> (Proxy, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_nacre-host-proxy"))
        .args(["--inbound", &format!("tcp://127.0.0.1:0={target}")])
        .env("NACRE_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .expect("start nacre-host-proxy");
    if std::env::var_os(PIN_ENV).is_some() {
        pin(nix::unistd::Pid::from_raw(child.id() as i32), 1);
    }
    let out = child.stdout.take().unwrap();
    let mut addr = None;
    for line in std::io::BufRead::lines(std::io::BufReader::new(out)).map_while(Result::ok) {
        if let Some(rest) = line.strip_prefix("nacre-host-proxy inbound tcp://") {
            addr = rest.split(' ').next().map(str::to_string);
        }
        if line == "nacre-host-proxy ready" {
            break;
        }
    }
    (Proxy(child), addr.expect("inbound address"))
}

/// A server that swallows bulk streams and echoes short messages.
async fn serve<S>(mut s: S)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            // Short reads are pings: echo them.
            Ok(n) if n <= 64 => {
                if s.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
            Ok(_) => {}
        }
    }
}

async fn bulk(addr: &str) -> f64 {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let chunk = vec![0xa5u8; 1 << 20];
    let t = Instant::now();
    let mut sent = 0;
    while sent < BULK {
        s.write_all(&chunk).await.unwrap();
        sent += chunk.len() as u64;
    }
    s.shutdown().await.unwrap();
    // Wait for the far end to finish reading and close.
    let mut b = [0u8; 1];
    let _ = s.read(&mut b).await;
    BULK as f64 / t.elapsed().as_secs_f64() / (1u64 << 30) as f64
}

async fn pings(addr: &str) -> Vec<Duration> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.set_nodelay(true).unwrap();
    let msg = [7u8; 32];
    let mut back = [0u8; 32];
    let mut rtts = Vec::with_capacity(PINGS);
    for _ in 0..PINGS {
        let t = Instant::now();
        s.write_all(&msg).await.unwrap();
        s.read_exact(&mut back).await.unwrap();
        rtts.push(t.elapsed());
    }
    rtts.sort();
    rtts
}

/// CPU seconds (user + system) a process has used, from /proc.
fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name, which is in parentheses.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    ticks / 100.0
}

fn pct(v: &[Duration], p: f64) -> f64 {
    v[((v.len() as f64 * p) as usize).min(v.len() - 1)].as_secs_f64() * 1e6
}

fn best(v: Vec<f64>) -> f64 {
    v.into_iter().fold(0.0, f64::max)
}

fn main() {
    let pinned = std::env::var_os(PIN_ENV).is_some();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if pinned {
        // Before the runtime starts, so every worker thread inherits it.
        pin(nix::unistd::Pid::from_raw(0), 0);
    }
    println!(
        "== {} ==",
        if pinned {
            "own core: endpoints on core 0, proxy on core 1"
        } else {
            "shared: endpoints and proxy on all cores"
        }
    );
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(run());
    if !pinned && cores >= 2 {
        let status = Command::new(std::env::current_exe().unwrap())
            .args(std::env::args_os().skip(1))
            .env(PIN_ENV, "1")
            .status()
            .unwrap();
        assert!(status.success());
    }
}

async fn run() {
    // `cargo bench` passes `--bench`; nothing to parse.
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tcp_addr = tcp.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        loop {
            let (s, _) = tcp.accept().await.unwrap();
            s.set_nodelay(true).unwrap();
            tokio::spawn(serve(s));
        }
    });
    let sock = std::env::temp_dir().join(format!("nacre-bench-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&sock);
    let unix = UnixListener::bind(&sock).unwrap();
    tokio::spawn(async move {
        loop {
            let (s, _) = unix.accept().await.unwrap();
            tokio::spawn(serve(s));
        }
    });
    let (_p1, via_tcp) = proxy(&format!("tcp://{tcp_addr}"));
    let (_p2, via_unix) = proxy(&format!("unix:{}", sock.display()));

    let mut direct = Vec::new();
    let mut proxied_tcp = Vec::new();
    let mut proxied_unix = Vec::new();
    let (mut endpoints_cpu, mut proxy_cpu) = (0.0, 0.0);
    let proxy_pid = _p1.0.id().to_string();
    for _ in 0..ROUNDS {
        let c0 = cpu_seconds("self");
        direct.push(bulk(&tcp_addr).await);
        endpoints_cpu += cpu_seconds("self") - c0;
        let p0 = cpu_seconds(&proxy_pid);
        proxied_tcp.push(bulk(&via_tcp).await);
        proxy_cpu += cpu_seconds(&proxy_pid) - p0;
        proxied_unix.push(bulk(&via_unix).await);
    }
    let gib = (ROUNDS as u64 * BULK) as f64 / (1u64 << 30) as f64;
    let (d, pt, pu) = (best(direct), best(proxied_tcp), best(proxied_unix));
    println!("bulk throughput, 2 GiB per run, best of {ROUNDS}:");
    println!("  direct loopback TCP          {d:6.2} GiB/s");
    println!(
        "  proxy TCP -> TCP             {pt:6.2} GiB/s  ({:.2}x direct)",
        pt / d
    );
    println!(
        "  proxy TCP -> unix socket     {pu:6.2} GiB/s  ({:.2}x direct)",
        pu / d
    );
    println!(
        "CPU per GiB: sender + receiver {:.3} s, proxy {:.3} s",
        endpoints_cpu / gib,
        proxy_cpu / gib,
    );

    let d = pings(&tcp_addr).await;
    let p = pings(&via_tcp).await;
    let u = pings(&via_unix).await;
    println!("round trip of 32 bytes, {PINGS} pings (median / p99, µs):");
    println!(
        "  direct                       {:7.1} / {:7.1}",
        pct(&d, 0.5),
        pct(&d, 0.99)
    );
    println!(
        "  proxy TCP -> TCP             {:7.1} / {:7.1}",
        pct(&p, 0.5),
        pct(&p, 0.99)
    );
    println!(
        "  proxy TCP -> unix socket     {:7.1} / {:7.1}",
        pct(&u, 0.5),
        pct(&u, 0.99)
    );
    println!(
        "  added by the proxy (median)  {:7.1} µs (TCP target), {:.1} µs (unix target)",
        pct(&p, 0.5) - pct(&d, 0.5),
        pct(&u, 0.5) - pct(&d, 0.5)
    );
    let _ = std::fs::remove_file(&sock);
}
