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
mod report;
mod synced;
mod tools;

use std::path::PathBuf;
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
    let tools = tools::prepare()?;
    println!("building release binaries and the hello, echo and floor guests");
    nacre_tests::bin("nacre-runtime");
    let built = nacre_cli::guest_build::build_guests(
        &nacre_tests::root().join("guest-examples/Cargo.toml"),
        &["hello", "echo", "floor"],
    )?;
    let [hello, echo, floor] = <[_; 3]>::try_from(built).map_err(|b| {
        anyhow::anyhow!(
            "cargo built {} components, not hello, echo and floor",
            b.len()
        )
    })?;
    let component =
        std::fs::read(&hello).with_context(|| format!("reading {}", hello.display()))?;
    overhead::build()?;
    println!("set-up done in {:.0?}", setup.elapsed());

    let measuring = Instant::now();
    let d = overhead::run(&plan, &hello, "hello")?;
    let d_floor = overhead::run(&plan, &floor, "floor")?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let results = rt.block_on(async {
        let http = http::run(&plan, &tools, &hello, &echo, &floor).await?;
        let synced = synced::run(&plan, &tools, &hello).await?;
        let deploy = deploy::run(&plan, &component).await?;
        let memory = memory::run(&component).await?;
        anyhow::Ok((http, synced, deploy, memory))
    })?;
    drop(rt);
    let (http, synced, deploy, memory) = results;
    let bulk = bulk::run(&plan)?;
    let report = report::Report {
        quick: args.quick,
        tools: &tools,
        http,
        synced,
        overhead: d,
        overhead_floor: d_floor,
        deploy,
        memory,
        bulk,
        measuring: measuring.elapsed(),
    };
    let text = report.render();
    std::fs::write(&args.out, &text)
        .with_context(|| format!("--out {}: cannot write", args.out.display()))?;
    println!("{}", report.summary());
    println!("wrote {}", args.out.display());
    Ok(())
}
