//! The load generator and the peer: wrk (from the system's packages) and
//! `wasmtime serve` (cargo-installed into a cache directory), plus the
//! versions and machine facts the report names.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use nacre_cli::guest_build::cargo;

/// The wasmtime release Nacre embeds, and the peer we measure against.
pub const WASMTIME_VERSION: &str = "48.0.8";

/// Programs the benchmark runs and what they are.
pub struct Tools {
    /// The wrk binary.
    pub wrk: PathBuf,
    /// The `wasmtime` CLI of [`WASMTIME_VERSION`], when the scenarios to
    /// run include (b).
    pub wasmtime: Option<PathBuf>,
    /// Version lines for the report: (what, version).
    pub versions: Vec<(&'static str, String)>,
    /// Machine facts for the report: (what, value).
    pub machine: Vec<(&'static str, String)>,
    /// Scratch directory for scripts.
    pub scratch: PathBuf,
}

/// Finds or installs wrk and, with `peer`, wasmtime-cli (a quarter of an
/// hour to install, which a run without scenario (b) need not wait for),
/// and notes versions.
pub fn prepare(peer: bool) -> anyhow::Result<Tools> {
    let wrk = wrk()?;
    let wasmtime = peer.then(wasmtime).transpose()?;
    let mut versions = vec![
        (
            "nacre",
            first_line(
                "git",
                &[
                    "-C",
                    &nacre_tests::root().display().to_string(),
                    "describe",
                    "--always",
                    "--dirty",
                ],
            ),
        ),
        ("rustc", first_line("rustc", &["-V"])),
        ("wrk", first_line(&wrk.display().to_string(), &["-v"])),
    ];
    if let Some(w) = &wasmtime {
        versions.insert(
            2,
            (
                "wasmtime (embedded and peer)",
                first_line(&w.display().to_string(), &["--version"]),
            ),
        );
    }
    let scratch = nacre_tests::temp_dir("bench");
    Ok(Tools {
        wrk,
        wasmtime,
        versions,
        machine: machine(),
        scratch,
    })
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    })
}

/// wrk from PATH, else from the distribution's packages.
fn wrk() -> anyhow::Result<PathBuf> {
    if let Some(p) = on_path("wrk") {
        return Ok(p);
    }
    println!("installing wrk with apt-get");
    let mut apt = if nix::unistd::geteuid().is_root() {
        Command::new("apt-get")
    } else {
        let mut c = Command::new("sudo");
        c.args(["-n", "apt-get"]);
        c
    };
    let ok = apt
        .args(["install", "-y", "-q", "wrk"])
        .status()
        .is_ok_and(|s| s.success());
    match on_path("wrk") {
        Some(p) if ok => Ok(p),
        _ => bail!(
            "wrk is not installed and `apt-get install wrk` failed: install wrk \
             (https://github.com/wg/wrk) and put it on PATH, then run again"
        ),
    }
}

/// Where installed tools are kept between runs.
fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("NACRE_BENCH_CACHE") {
        return PathBuf::from(d);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("nacre-bench")
}

/// `wasmtime` 48.0.8, installed once with `cargo install --locked`.
fn wasmtime() -> anyhow::Result<PathBuf> {
    let root = cache_dir().join(format!("wasmtime-{WASMTIME_VERSION}"));
    let bin = root.join("bin/wasmtime");
    if bin.is_file() {
        return Ok(bin);
    }
    println!(
        "installing wasmtime-cli {WASMTIME_VERSION} into {} (once; about 15 minutes on 2 cores)",
        root.display()
    );
    let status = cargo()
        .args([
            "install",
            "wasmtime-cli",
            "--locked",
            "--version",
            WASMTIME_VERSION,
            "--root",
        ])
        .arg(&root)
        .status()
        .context("running cargo install wasmtime-cli")?;
    if !status.success() || !bin.is_file() {
        bail!(
            "cargo install wasmtime-cli --version {WASMTIME_VERSION} failed ({status}); \
             its output is above. Set NACRE_BENCH_CACHE to a writable directory if {} is not",
            root.display()
        );
    }
    Ok(bin)
}

fn first_line(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .and_then(|o| {
            let text = if o.stdout.is_empty() {
                o.stderr
            } else {
                o.stdout
            };
            String::from_utf8_lossy(&text)
                .lines()
                .next()
                .map(str::to_string)
        })
        .unwrap_or_else(|| "unknown".into())
}

fn machine() -> Vec<(&'static str, String)> {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let cpuinfo = read("/proc/cpuinfo");
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name").and_then(|r| r.split_once(':')))
        .map_or("unknown".into(), |(_, m)| m.trim().to_string());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").parse::<u64>().ok())
        .map_or("unknown".into(), |kib| {
            format!("{:.1} GiB", kib as f64 / (1u64 << 20) as f64)
        });
    vec![
        ("CPU", cpu),
        ("cores available", cores.to_string()),
        ("memory", mem),
        (
            "kernel",
            read("/proc/sys/kernel/osrelease").trim().to_string(),
        ),
    ]
}
