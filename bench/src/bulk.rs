//! Scenario (g): bulk throughput and round-trip time through
//! `nacre-host-proxy --inbound`, against a direct loopback connection.
//!
//! Two modes. "Shared": sender, receiver and proxy compete for every
//! core, as in a benchmark on one small machine. "Own core" (machines
//! with two or more cores): the endpoints (this process's sender and the
//! `nacre-bench-sink` process) are pinned to core 0 and every proxy thread
//! to core 1, as on a parent instance whose client
//! is remote and whose enclave has its own vCPUs; it asks whether the
//! proxy itself is the bottleneck.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context;
use nix::sched::{CpuSet, sched_setaffinity};
use nix::unistd::Pid;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::Plan;
use crate::http::{Server, proxy_to};
use crate::load::cpu_seconds;

const PINGS: usize = 20_000;

/// Figures of one mode.
pub struct Mode {
    /// Which mode.
    pub name: &'static str,
    /// GiB/s, best of the rounds: direct, proxy TCP→TCP, proxy TCP→unix.
    pub gib_s: [f64; 3],
    /// CPU seconds per GiB: the sender and the sink together (direct runs)
    /// and the proxy (TCP→TCP runs).
    pub cpu_per_gib: (f64, f64),
    /// Round trip of 32 bytes, µs (median, p99): direct, TCP, unix.
    pub rtt_us: [(f64, f64); 3],
}

/// Both modes.
pub struct BulkResults {
    /// Bytes per transfer.
    pub bytes: u64,
    /// Rounds (best kept).
    pub rounds: usize,
    /// Shared cores, then own core when the machine has two.
    pub modes: Vec<Mode>,
}

/// Pins thread (or process main thread) `tid` to `cpu`.
fn pin(tid: i32, cpu: usize) -> anyhow::Result<()> {
    let mut set = CpuSet::new();
    set.set(cpu)?;
    sched_setaffinity(Pid::from_raw(tid), &set).context("sched_setaffinity")?;
    Ok(())
}

/// Pins every thread of process `pid` to `cpu`.
fn pin_process(pid: u32, cpu: usize) -> anyhow::Result<()> {
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        if let Some(tid) = task?.file_name().to_str().and_then(|t| t.parse().ok()) {
            pin(tid, cpu)?;
        }
    }
    Ok(())
}

/// Runs both modes.
pub fn run(plan: &Plan) -> anyhow::Result<BulkResults> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut modes = vec![mode(plan, "shared cores", false)?];
    if cores >= 2 {
        modes.push(mode(
            plan,
            "own core (endpoints core 0, proxy core 1)",
            true,
        )?);
    }
    Ok(BulkResults {
        bytes: plan.bulk_bytes,
        rounds: plan.bulk_rounds,
        modes,
    })
}

fn mode(plan: &Plan, name: &'static str, pinned: bool) -> anyhow::Result<Mode> {
    println!("(g) host proxy bulk throughput, {name}");
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.worker_threads(2).enable_all();
    if pinned {
        // Pinning fails only on a machine without core 0, which has no
        // threads to run either.
        builder.on_thread_start(|| drop(pin(0, 0)));
    }
    let plan = *plan;
    // Spawned, not run by block_on on this (unpinned) thread.
    builder
        .build()?
        .block_on(async move { tokio::spawn(measure(plan, name, pinned)).await? })
}

async fn measure(plan: Plan, name: &'static str, pinned: bool) -> anyhow::Result<Mode> {
    let dir = nacre_tests::temp_dir("bench-bulk");
    let sock = dir.join("sink.sock");
    let mut cmd = Command::new(nacre_tests::bin("nacre-bench-sink"));
    cmd.arg("--unix").arg(&sock);
    let sink = Server::start(cmd, "sink listening on ")?;
    let sink_pid = sink.child.pid().to_string();
    if pinned {
        pin_process(sink.child.pid(), 0)?;
    }
    // Direct runs connect with tokio's TcpStream, which takes HOST:PORT.
    let tcp_target = sink.addr.clone();
    let tcp_addr = tcp_target
        .strip_prefix("tcp://")
        .context("sink address")?
        .to_string();
    let start = |target: String| {
        let p = proxy_to(&target);
        if pinned {
            pin_process(p.pid(), 1)?;
        }
        let addr = p.inbound_tcp().to_string();
        anyhow::Ok((p, addr))
    };
    let (p_tcp, via_tcp) = start(tcp_target)?;
    let (_p_unix, via_unix) = start(format!("unix:{}", sock.display()))?;

    let mut best = [0.0f64; 3];
    let (mut endpoints_cpu, mut proxy_cpu) = (0.0, 0.0);
    let proxy_pid = p_tcp.pid().to_string();
    let endpoints = || anyhow::Ok(cpu_seconds("self")? + cpu_seconds(&sink_pid)?);
    for _ in 0..plan.bulk_rounds {
        let c0 = endpoints()?;
        best[0] = best[0].max(bulk(&tcp_addr, plan.bulk_bytes).await?);
        endpoints_cpu += endpoints()? - c0;
        let p0 = cpu_seconds(&proxy_pid)?;
        best[1] = best[1].max(bulk(&via_tcp, plan.bulk_bytes).await?);
        proxy_cpu += cpu_seconds(&proxy_pid)? - p0;
        best[2] = best[2].max(bulk(&via_unix, plan.bulk_bytes).await?);
    }
    let gib = (plan.bulk_rounds as u64 * plan.bulk_bytes) as f64 / (1u64 << 30) as f64;
    let rtt_us = [
        pings(&tcp_addr).await?,
        pings(&via_tcp).await?,
        pings(&via_unix).await?,
    ];
    Ok(Mode {
        name,
        gib_s: best,
        cpu_per_gib: (endpoints_cpu / gib, proxy_cpu / gib),
        rtt_us,
    })
}

/// Sends `bytes` and waits until the far end has read them all; GiB/s.
async fn bulk(addr: &str, bytes: u64) -> anyhow::Result<f64> {
    let mut s = TcpStream::connect(addr).await?;
    let chunk = vec![0xa5u8; 1 << 20];
    let t = Instant::now();
    let mut sent = 0;
    while sent < bytes {
        s.write_all(&chunk).await?;
        sent += chunk.len() as u64;
    }
    s.shutdown().await?;
    // The far end closes once it has read everything.
    let mut b = [0u8; 1];
    let _ = s.read(&mut b).await;
    Ok(sent as f64 / t.elapsed().as_secs_f64() / (1u64 << 30) as f64)
}

/// Median and p99 round trip of 32 bytes, µs.
async fn pings(addr: &str) -> anyhow::Result<(f64, f64)> {
    let mut s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    let msg = [7u8; 32];
    let mut back = [0u8; 32];
    let mut rtts = Vec::with_capacity(PINGS);
    for _ in 0..PINGS {
        let t = Instant::now();
        s.write_all(&msg).await?;
        s.read_exact(&mut back).await?;
        rtts.push(t.elapsed());
    }
    rtts.sort();
    let at = |p: f64| rtts[((rtts.len() as f64 * p) as usize).min(rtts.len() - 1)];
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    Ok((us(at(0.5)), us(at(0.99))))
}
