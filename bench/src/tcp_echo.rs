//! Scenario (j): TCP guests. 1 KiB messages echoed over TLS through the
//! host proxy: the `tcp-echo` guest (TLS ended in the runtime) against
//! `socat` as a native TLS echo server behind the same proxy. Each of 64
//! connections sends a message and waits for it back, in a loop.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Child;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use nacre_tests::net::HostProxy;
use nacre_tests::{Runtime, TestPki};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::Plan;
use crate::http::proxy_to;

/// The section's heading, for `--only j`.
pub const HEADING: &str = "## (j) TCP guests";
/// The message size.
const MESSAGE: usize = 1024;
/// Connections, each a closed loop: few, then many (one guest instance
/// serves them all).
const CONNECTIONS: [usize; 2] = [8, 64];
/// The port the guest is deployed on.
const PORT: u16 = 8080;

/// One server's figures.
pub struct EchoLoad {
    /// Messages echoed in the measured seconds.
    pub messages: u64,
    /// Messages per second.
    pub per_sec: f64,
    /// Round-trip latency percentiles, microseconds.
    pub p50_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// Connections that failed.
    pub errors: u64,
}

/// (j) at one number of connections: Nacre and socat, rounds alternating.
pub struct Rounds {
    /// Connections, each a closed loop.
    pub connections: usize,
    /// Each round of the `tcp-echo` guest.
    pub nacre: Vec<EchoLoad>,
    /// Each round of socat.
    pub socat: Vec<EchoLoad>,
}

/// (j): at each of [`CONNECTIONS`].
pub struct TcpResults {
    /// By number of connections.
    pub by_connections: Vec<Rounds>,
    /// Seconds per round.
    pub secs: u32,
}

/// Runs (j): both servers up throughout, rounds alternating.
pub async fn run(plan: &Plan, tcp_echo: &Path) -> anyhow::Result<TcpResults> {
    println!("(j) TCP guests: tcp-echo through the host proxy, and socat through the host proxy");
    let sock = format!(
        "unix:{}",
        nacre_tests::temp_dir("bench-tcp").join("rt.sock").display()
    );
    let guest = format!("echo={};tcp={PORT}", tcp_echo.display());
    let rt = Runtime::start_behind(&[], &sock, &["--wait-for-app", "--guest", &guest]);
    let nacre_proxy = proxy_to(&format!("{sock}.tcp-{PORT}"));
    let nacre_tls = client_config(rt.roots());
    let pki = TestPki::generate();
    let (socat, socat_proxy) = start_socat(&pki)?;
    let socat_tls = client_config(roots_of(&pki)?);
    let mut by_connections = Vec::new();
    for connections in CONNECTIONS {
        let (mut nacre, mut native) = (Vec::new(), Vec::new());
        for _ in 0..plan.http_rounds.max(1) {
            nacre.push(measure(&nacre_proxy, &nacre_tls, connections, plan.http_secs).await?);
            native.push(measure(&socat_proxy, &socat_tls, connections, plan.http_secs).await?);
        }
        by_connections.push(Rounds {
            connections,
            nacre,
            socat: native,
        });
    }
    drop((rt, nacre_proxy, socat_proxy));
    let mut socat = socat;
    let _ = socat.kill();
    let _ = socat.wait();
    Ok(TcpResults {
        by_connections,
        secs: plan.http_secs,
    })
}

fn client_config(roots: rustls::RootCertStore) -> Arc<rustls::ClientConfig> {
    Arc::new(
        rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

fn roots_of(pki: &TestPki) -> anyhow::Result<rustls::RootCertStore> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in
        nacre_transport::pem::certificates(&pki.ca_file()).map_err(|e| anyhow::anyhow!(e.why))?
    {
        roots.add(cert)?;
    }
    Ok(roots)
}

/// `socat OPENSSL-LISTEN:P,fork PIPE`: a process per connection, echoing,
/// TLS with `pki`'s certificate; behind a host proxy.
fn start_socat(pki: &TestPki) -> anyhow::Result<(Child, HostProxy)> {
    let (child, port) = pki
        .socat_tls_listener("PIPE")
        .context("socat (apt-get install socat)")?;
    Ok((child, proxy_to(&format!("tcp://127.0.0.1:{port}"))))
}

type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

/// One connection through `proxy`, retried while the server is not up yet.
async fn connect(proxy: &HostProxy, tls: &Arc<rustls::ClientConfig>) -> anyhow::Result<Tls> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let attempt = async {
            let tcp = tokio::net::TcpStream::connect(proxy.inbound_tcp()).await?;
            tcp.set_nodelay(true)?;
            let name = rustls::pki_types::ServerName::try_from("localhost")?;
            let mut s = tokio_rustls::TlsConnector::from(tls.clone())
                .connect(name, tcp)
                .await?;
            // One round trip proves the far end is there.
            s.write_all(&[0u8; MESSAGE]).await?;
            s.read_exact(&mut [0u8; MESSAGE]).await?;
            anyhow::Ok(s)
        };
        match attempt.await {
            Ok(s) => return Ok(s),
            Err(e) if Instant::now() >= deadline => return Err(e.context("no echo server")),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// `connections` closed loops for one second of warm-up, then `secs`.
async fn measure(
    proxy: &HostProxy,
    tls: &Arc<rustls::ClientConfig>,
    connections: usize,
    secs: u32,
) -> anyhow::Result<EchoLoad> {
    let mut conns = Vec::with_capacity(connections);
    for _ in 0..connections {
        conns.push(connect(proxy, tls).await?);
    }
    let start = Instant::now() + Duration::from_secs(1);
    let end = start + Duration::from_secs(u64::from(secs));
    let tasks: Vec<_> = conns
        .into_iter()
        .map(|c| tokio::spawn(echo_loop(c, start, end)))
        .collect();
    let (mut latencies, mut errors) = (Vec::new(), 0u64);
    for t in tasks {
        match t.await? {
            Ok(l) => latencies.extend(l),
            Err(_) => errors += 1,
        }
    }
    latencies.sort_unstable();
    let at = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    Ok(EchoLoad {
        messages: latencies.len() as u64,
        per_sec: latencies.len() as f64 / f64::from(secs),
        p50_us: at(0.5),
        p99_us: at(0.99),
        errors,
    })
}

/// Round trips until `end`; the latencies of those that began after
/// `start`, in microseconds.
async fn echo_loop(mut c: Tls, start: Instant, end: Instant) -> anyhow::Result<Vec<u64>> {
    let message = [b'x'; MESSAGE];
    let mut back = [0u8; MESSAGE];
    let mut seen = Vec::new();
    loop {
        let sent = Instant::now();
        if sent >= end {
            return Ok(seen);
        }
        c.write_all(&message).await?;
        c.read_exact(&mut back).await?;
        anyhow::ensure!(back == message, "the echo differs from what was sent");
        if sent >= start {
            seen.push(sent.elapsed().as_micros() as u64);
        }
    }
}

impl Rounds {
    fn mean(rounds: &[EchoLoad]) -> (u64, f64, u64, u64, u64) {
        let n = rounds.len().max(1) as f64;
        let messages = rounds.iter().map(|r| r.messages).sum();
        let per_sec = rounds.iter().map(|r| r.per_sec).sum::<f64>() / n;
        let p50 = (rounds.iter().map(|r| r.p50_us as f64).sum::<f64>() / n) as u64;
        let p99 = (rounds.iter().map(|r| r.p99_us as f64).sum::<f64>() / n) as u64;
        let errors = rounds.iter().map(|r| r.errors).sum();
        (messages, per_sec, p50, p99, errors)
    }

    /// Its two table rows; the ratios of messages/s and of p99.
    fn write(&self, s: &mut String) -> (f64, f64) {
        let c = self.connections;
        let (n_msgs, n_rate, n50, n99, n_err) = Self::mean(&self.nacre);
        let (s_msgs, s_rate, s50, s99, s_err) = Self::mean(&self.socat);
        let _ = writeln!(
            s,
            "| (j) Nacre: `tcp-echo` guest, TLS in the runtime | {c} | {n_msgs} | {n_rate:.0} | {n50} µs | {n99} µs | {n_err} |"
        );
        let _ = writeln!(
            s,
            "| (j') `socat OPENSSL-LISTEN:…,fork PIPE`, native | {c} | {s_msgs} | {s_rate:.0} | {s50} µs | {s99} µs | {s_err} |"
        );
        let ratio = if s_rate > 0.0 { n_rate / s_rate } else { 0.0 };
        let p99_ratio = if s99 > 0 {
            n99 as f64 / s99 as f64
        } else {
            0.0
        };
        (ratio, p99_ratio)
    }

    fn rounds(&self) -> String {
        self.nacre
            .iter()
            .zip(&self.socat)
            .map(|(n, s)| {
                format!(
                    "(j) {:.0}/s p99 {} µs, (j') {:.0}/s p99 {} µs",
                    n.per_sec, n.p99_us, s.per_sec, s.p99_us
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}

impl TcpResults {
    /// The section, from a blank line before its heading.
    pub fn write_section(&self, s: &mut String, alone: Option<&str>) {
        let _ = writeln!(
            s,
            "\n{HEADING}: 1 KiB echo over TLS through the host proxy\n"
        );
        if let Some(command) = alone {
            let _ = writeln!(
                s,
                "**Provisional**: measured by `{command}`, apart from the rest of this file. \
                 The next full run replaces these figures.\n"
            );
        }
        let rounds = self.by_connections.first().map_or(0, |r| r.nacre.len());
        let _ = writeln!(
            s,
            "Each connection sends 1 KiB and waits for it back, in a loop; {rounds} rounds of {} s each per server and \
             number of connections, alternating, after a one-second warm-up per round. The client (tokio + rustls) \
             runs on the same two cores. One instance of the guest serves every connection; socat forks a process \
             per connection.\n",
            self.secs
        );
        let _ = writeln!(
            s,
            "| server | connections | messages | messages/s | p50 | p99 | failed connections |\n|---|---:|---:|---:|---:|---:|---:|"
        );
        let ratios: Vec<(f64, f64)> = self.by_connections.iter().map(|r| r.write(s)).collect();
        let _ = writeln!(s);
        for ((ratio, p99), r) in ratios.iter().zip(&self.by_connections) {
            let _ = writeln!(
                s,
                "- {} connections: (j)/(j') messages/s **{ratio:.2}**; p99 (j) / p99 (j') **{p99:.2}**. Rounds: {}.",
                r.connections,
                r.rounds()
            );
        }
        let _ = writeln!(
            s,
            "\nCommands:\n\n- (j) `nacre-runtime --listen unix:… --attestation dev --wait-for-app --guest 'echo=tcp-echo.wasm;tcp=8080'; \
             nacre-host-proxy --inbound tcp://127.0.0.1:0=unix:….tcp-8080`\n- (j') `socat OPENSSL-LISTEN:P,fork,cert=…,key=… PIPE; \
             nacre-host-proxy --inbound tcp://127.0.0.1:0=tcp://127.0.0.1:P`\n- this scenario alone, updating this section in place: \
             `cargo run --release -p nacre-bench -- --only j` (add `--quick` for shorter rounds)"
        );
    }
}
