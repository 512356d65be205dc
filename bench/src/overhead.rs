//! Scenario (d): `cargo bench -p nacre-runtime --bench invoke` (criterion)
//! and its median, read back from criterion's estimates.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use nacre_cli::guest_build::cargo;

/// The criterion benchmark's name (runtime/benches/invoke.rs).
const BENCH: &str = "instantiate_and_handle";

/// Per-request cost in process, µs.
pub struct Overhead {
    /// Median.
    pub median_us: f64,
    /// 95% confidence interval of the median.
    pub interval_us: (f64, f64),
}

/// One criterion home per component, so criterion compares a run with the
/// same component's previous run, never `floor` with `hello`.
fn criterion_home(name: &str) -> PathBuf {
    nacre_tests::root().join("target/criterion").join(name)
}

fn bench_command() -> std::process::Command {
    let mut cmd = cargo();
    cmd.args([
        "bench",
        "-p",
        "nacre-runtime",
        "--bench",
        "invoke",
        "--manifest-path",
    ])
    .arg(nacre_tests::root().join("Cargo.toml"));
    cmd
}

/// Compiles the benchmark, so its build is not counted as running time.
pub fn build() -> anyhow::Result<()> {
    let status = bench_command()
        .arg("--no-run")
        .status()
        .context("running cargo bench")?;
    if !status.success() {
        bail!("cargo bench -p nacre-runtime --bench invoke --no-run failed; its output is above");
    }
    Ok(())
}

/// Runs the benchmark on `component` (named `name` in the output) for the
/// plan's times.
pub fn run(plan: &crate::Plan, component: &Path, name: &str) -> anyhow::Result<Overhead> {
    println!("(d) per-request overhead in process (criterion), {name}");
    let (warm, measure) = plan.criterion_secs;
    let status = bench_command()
        .env("NACRE_BENCH_HELLO", component)
        .env("CRITERION_HOME", criterion_home(name))
        .args(["--", BENCH, "--warm-up-time", &warm.to_string()])
        .args(["--measurement-time", &measure.to_string()])
        .status()
        .context("running cargo bench")?;
    if !status.success() {
        bail!("cargo bench -p nacre-runtime --bench invoke failed; its output is above");
    }
    let path = criterion_home(name).join(BENCH).join("new/estimates.json");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("criterion wrote no {}", path.display()))?;
    let json: serde_json::Value = serde_json::from_str(&text)?;
    let median = &json["median"];
    let us = |v: &serde_json::Value| v.as_f64().map(|ns| ns / 1e3);
    match (
        us(&median["point_estimate"]),
        us(&median["confidence_interval"]["lower_bound"]),
        us(&median["confidence_interval"]["upper_bound"]),
    ) {
        (Some(median_us), Some(lo), Some(hi)) => Ok(Overhead {
            median_us,
            interval_us: (lo, hi),
        }),
        _ => bail!("{}: no median estimate", path.display()),
    }
}
