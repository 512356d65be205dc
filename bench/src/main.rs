//! `nacre-bench`: Nacre against `wasmtime serve` and a native hyper +
//! rustls server on this machine, written to `BENCHMARKS.md`.
//!
//! Run `cargo run --release -p nacre-bench` (a few minutes) or add
//! `-- --quick` (under a minute once the tools are installed). Scenario
//! letters follow issue 6 and BENCHMARKS.md:
//!
//! - [`http`]: (a) Nacre through the host proxy, (b) `wasmtime serve`,
//!   (c) the native server through the same proxy, all driven by wrk.
//! - [`overhead`]: (d) per-request cost in process (criterion).
//! - [`deploy`]: (e) upload → first 200, cold and cached.
//! - [`memory`]: (f) resident memory with 10 guests, after 1k and 100k
//!   requests.
//! - [`bulk`]: (g) host proxy throughput against direct loopback.
//! - [`synced`]: (h) scenario (a) on a worker of a two-enclave deployment.
//! - [`raft`]: (i) replicated key-value: `kv-counter` on one enclave and
//!   on a three-enclave deployment whose key-value data Raft replicates.
//!   `-- --only i` runs it alone and updates its section of the report.
//! - [`tcp_echo`]: (j) TCP guests: 1 KiB echo over TLS, the `tcp-echo`
//!   guest against socat, both behind the host proxy. `-- --only j` runs
//!   it alone and updates its section of the report.
//! - [`tools`]: wrk and wasmtime-cli, installed when missing.
//! - [`load`]: running wrk and reading its summary.
//! - `native.rs` (its own binary, `nacre-bench-native`): the native
//!   hello server of (c).
//! - `sink.rs` (its own binary, `nacre-bench-sink`): the far end of (g).
//! - [`report`]: writing BENCHMARKS.md.

mod bulk;
mod deploy;
mod http;
mod load;
mod memory;
mod overhead;
mod raft;
mod report;
mod synced;
mod tcp_echo;
mod tools;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use clap::Parser;

#[derive(Parser)]
#[command(
    about = "Benchmarks Nacre against wasmtime serve and a native server; writes BENCHMARKS.md"
)]
struct Args {
    /// Short runs (about a minute in all once the tools are installed);
    /// the figures are noisier.
    #[arg(long)]
    quick: bool,
    /// Where the report goes.
    #[arg(long, default_value = "BENCHMARKS.md")]
    out: PathBuf,
    /// Run only this scenario and replace its section of --out (added
    /// when missing), leaving the rest of the file, its targets table
    /// included, as the last full run wrote it.
    #[arg(long, value_enum, value_name = "SCENARIO")]
    only: Option<Only>,
}

/// The scenarios that run alone.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Only {
    /// (i) replicated key-value: it starts four enclaves of its own and
    /// takes a few minutes, so it can be measured again without the rest.
    I,
    /// (j) TCP guests against socat.
    J,
}

/// The guest components the scenarios deploy.
struct Guests {
    hello: PathBuf,
    echo: PathBuf,
    floor: PathBuf,
    kv_counter: PathBuf,
    tcp_echo: PathBuf,
}

impl Guests {
    /// Builds them as `nacre dev` would.
    fn build() -> anyhow::Result<Guests> {
        let names = ["hello", "echo", "floor", "kv-counter", "tcp-echo"];
        let built = nacre_cli::guest_build::build_guests(
            &nacre_tests::root().join("guest-examples/Cargo.toml"),
            &names,
        )?;
        let [hello, echo, floor, kv_counter, tcp_echo] = <[_; 5]>::try_from(built)
            .map_err(|b| anyhow::anyhow!("cargo built {} components, not {names:?}", b.len()))?;
        Ok(Guests {
            hello,
            echo,
            floor,
            kv_counter,
            tcp_echo,
        })
    }
}

/// How long each part runs.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Seconds of load per HTTP scenario (after a one-second warm-up).
    pub http_secs: u32,
    /// Rounds of (a) and (c), alternating, so one noisy round cannot move
    /// the headline ratio alone.
    pub http_rounds: usize,
    /// Cold deploys measured (new bytes each).
    pub cold_deploys: usize,
    /// Cached redeploys measured.
    pub cached_deploys: usize,
    /// Bytes per bulk transfer (scenario g).
    pub bulk_bytes: u64,
    /// Rounds per bulk measurement; the best is kept.
    pub bulk_rounds: usize,
    /// Criterion warm-up and measurement seconds (scenario d).
    pub criterion_secs: (u32, u32),
}

impl Plan {
    fn new(quick: bool) -> Plan {
        if quick {
            Plan {
                http_secs: 3,
                http_rounds: 2,
                cold_deploys: 2,
                cached_deploys: 5,
                bulk_bytes: 512 << 20,
                bulk_rounds: 1,
                criterion_secs: (1, 2),
            }
        } else {
            Plan {
                http_secs: 10,
                http_rounds: 2,
                cold_deploys: 5,
                cached_deploys: 20,
                bulk_bytes: 2 << 30,
                bulk_rounds: 3,
                criterion_secs: (3, 10),
            }
        }
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let plan = Plan::new(args.quick);
    nacre_tests::set_log_filter("warn");

    let setup = Instant::now();
    let tools = tools::prepare(args.only.is_none())?;
    println!("building release binaries and the hello, echo, floor and kv-counter guests");
    nacre_tests::bin("nacre-runtime");
    let guests = Guests::build()?;
    if args.only.is_none() {
        overhead::build()?;
    }
    println!("set-up done in {:.0?}", setup.elapsed());
    match args.only {
        Some(Only::I) => only_raft(&args, &plan, &tools, &guests),
        Some(Only::J) => only_tcp(&args, &plan, &guests),
        None => everything(&args, &plan, &tools, &guests),
    }
}

/// The runtime the scenarios' clients and forwarders run on: two
/// threads, as the machines this measures have two cores.
fn tokio_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

/// `--only i`: scenario (i), its section of `--out` replaced.
fn only_raft(args: &Args, plan: &Plan, tools: &tools::Tools, g: &Guests) -> anyhow::Result<()> {
    let measuring = Instant::now();
    let results = tokio_runtime()?.block_on(raft::run(plan, tools, &g.kv_counter, &g.hello))?;
    let command = if args.quick {
        "cargo run --release -p nacre-bench -- --only i --quick"
    } else {
        "cargo run --release -p nacre-bench -- --only i"
    };
    let mut section = String::new();
    results.write_section(&mut section, Some(command));
    let earlier = match std::fs::read_to_string(&args.out) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => {
            return Err(e).with_context(|| format!("--out {}: cannot read", args.out.display()));
        }
    };
    write_out(&args.out, &raft::splice(&earlier, &section))?;
    println!("{}", section.trim());
    println!(
        "measured in {:.0} s; replaced {} in {}",
        measuring.elapsed().as_secs_f64(),
        raft::HEADING,
        args.out.display()
    );
    Ok(())
}

/// `--only j`: scenario (j), its section of `--out` replaced.
fn only_tcp(args: &Args, plan: &Plan, g: &Guests) -> anyhow::Result<()> {
    let results = tokio_runtime()?.block_on(tcp_echo::run(plan, &g.tcp_echo))?;
    let command = if args.quick {
        "cargo run --release -p nacre-bench -- --only j --quick"
    } else {
        "cargo run --release -p nacre-bench -- --only j"
    };
    let mut section = String::new();
    results.write_section(&mut section, Some(command));
    let earlier = std::fs::read_to_string(&args.out).unwrap_or_default();
    write_out(
        &args.out,
        &raft::splice_at(&earlier, tcp_echo::HEADING, &section),
    )?;
    println!("{}", section.trim());
    Ok(())
}

fn write_out(out: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(out, text).with_context(|| format!("--out {}: cannot write", out.display()))
}

/// Every scenario, and the whole report.
fn everything(args: &Args, plan: &Plan, tools: &tools::Tools, g: &Guests) -> anyhow::Result<()> {
    let component =
        std::fs::read(&g.hello).with_context(|| format!("reading {}", g.hello.display()))?;
    let measuring = Instant::now();
    let d = overhead::run(plan, &g.hello, "hello")?;
    let d_floor = overhead::run(plan, &g.floor, "floor")?;
    let rt = tokio_runtime()?;
    let results = rt.block_on(async {
        let http = http::run(plan, tools, &g.hello, &g.echo, &g.floor).await?;
        let synced = synced::run(plan, tools, &g.hello).await?;
        let raft = raft::run(plan, tools, &g.kv_counter, &g.hello).await?;
        let tcp = tcp_echo::run(plan, &g.tcp_echo).await?;
        let deploy = deploy::run(plan, &component).await?;
        let memory = memory::run(&component).await?;
        anyhow::Ok((http, synced, raft, tcp, deploy, memory))
    })?;
    drop(rt);
    let (http, synced, raft, tcp, deploy, memory) = results;
    let bulk = bulk::run(plan)?;
    let report = report::Report {
        quick: args.quick,
        tools,
        http,
        synced,
        overhead: d,
        overhead_floor: d_floor,
        deploy,
        memory,
        bulk,
        raft,
        tcp,
        measuring: measuring.elapsed(),
    };
    write_out(&args.out, &report.render())?;
    println!("{}", report.summary());
    println!("wrote {}", args.out.display());
    Ok(())
}
