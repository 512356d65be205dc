//! Driving load with wrk: keep-alive HTTP/1.1, 64 connections, and a
//! one-line summary from a Lua `done` hook.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, bail};

use nacre_cli::process;

use crate::tools::Tools;

/// Concurrent connections in every HTTP scenario.
pub const CONNECTIONS: u32 = 64;
/// wrk threads: one per core of the machines this runs on.
pub const THREADS: u32 = 2;

/// What one wrk run measured.
#[derive(Debug, Clone, Copy, Default)]
pub struct Load {
    /// Responses received.
    pub requests: u64,
    /// Responses per second.
    pub rps: f64,
    /// Median latency, µs.
    pub p50_us: f64,
    /// 99th-percentile latency, µs.
    pub p99_us: f64,
    /// Socket errors (connect, read, write, timeout).
    pub socket_errors: u64,
    /// Responses with a status other than 2xx/3xx.
    pub bad_status: u64,
    /// CPU time the watched server process spent per response (user and
    /// system, from `/proc/PID/stat`), µs; when one was watched.
    pub server_cpu_us: Option<f64>,
}

impl Load {
    /// Rounds of one scenario as one figure: requests and errors summed,
    /// rates and latencies averaged over the rounds.
    pub fn combine(rounds: &[Load]) -> Load {
        let n = rounds.len().max(1) as f64;
        let mean = |f: fn(&Load) -> f64| rounds.iter().map(f).sum::<f64>() / n;
        Load {
            requests: rounds.iter().map(|l| l.requests).sum(),
            rps: mean(|l| l.rps),
            p50_us: mean(|l| l.p50_us),
            p99_us: mean(|l| l.p99_us),
            socket_errors: rounds.iter().map(|l| l.socket_errors).sum(),
            bad_status: rounds.iter().map(|l| l.bad_status).sum(),
            server_cpu_us: {
                let cpu: Vec<f64> = rounds.iter().filter_map(|l| l.server_cpu_us).collect();
                (!cpu.is_empty()).then(|| cpu.iter().sum::<f64>() / cpu.len() as f64)
            },
        }
    }
}

/// What wrk sends, and whose CPU time is counted.
#[derive(Debug, Clone, Copy, Default)]
pub struct Shape {
    /// POST a body of this many bytes instead of GET.
    pub post_bytes: Option<usize>,
    /// The server process whose CPU time per response is measured.
    pub cpu_of: Option<u32>,
    /// Connections, when not [`CONNECTIONS`].
    pub connections: Option<u32>,
}

/// wrk's Lua lines that make its requests POSTs of `n` bytes.
fn post_lines(n: usize) -> String {
    format!(
        "wrk.method = \"POST\"\nwrk.body = string.rep(\"x\", {n})\n\
         wrk.headers[\"Content-Type\"] = \"application/octet-stream\"\n"
    )
}

impl Tools {
    fn script(&self, name: &str, text: &str) -> anyhow::Result<PathBuf> {
        let path = self.scratch.join(name);
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }

    /// `secs` seconds of load on `url` after a one-second warm-up.
    pub fn load(&self, url: &str, secs: u32) -> anyhow::Result<Load> {
        self.load_shaped(url, secs, Shape::default())
    }

    /// As [`Tools::load`], with the requests and measurements of `shape`.
    pub fn load_shaped(&self, url: &str, secs: u32, shape: Shape) -> anyhow::Result<Load> {
        Ok(self.load_and_warm_up(url, secs, shape)?.1)
    }

    /// As [`Tools::load_shaped`], with the warm-up's figures first: a
    /// scenario that counts what the server did (writes) counts those too.
    pub fn load_and_warm_up(
        &self,
        url: &str,
        secs: u32,
        shape: Shape,
    ) -> anyhow::Result<(Load, Load)> {
        let report = include_str!("wrk/report.lua");
        let script = match shape.post_bytes {
            None => self.script("report.lua", report)?,
            Some(n) => self.script(&format!("post-{n}.lua"), &(post_lines(n) + report))?,
        };
        let connections = shape.connections.unwrap_or(CONNECTIONS);
        let warm_up = self.wrk(&script, url, 1, connections)?;
        let cpu = |pid: Option<u32>| pid.map(|p| cpu_seconds(&p.to_string())).transpose();
        let before = cpu(shape.cpu_of)?;
        let mut load = self.wrk(&script, url, secs, connections)?;
        if let (Some(before), Some(after)) = (before, cpu(shape.cpu_of)?) {
            load.server_cpu_us = Some((after - before) * 1e6 / load.requests.max(1) as f64);
        }
        Ok((warm_up, load))
    }

    /// Exactly `per_thread` empty POSTs from each of wrk's threads over
    /// [`CONNECTIONS`] connections, then none, within `secs` seconds (no
    /// warm-up). A timed run ends with requests in flight, which the
    /// server may have carried out though wrk never counts them; this one
    /// ends idle, so wrk's count of answers is all the server was asked.
    pub fn post_exactly(&self, url: &str, per_thread: u64, secs: u32) -> anyhow::Result<Load> {
        // wrk asks `delay` before every request it sends (after a
        // connection opens and after each answer); the calls past the
        // thread's budget park their connection for an hour.
        let budget = format!(
            "local sent = 0\n\
             delay = function()\n  sent = sent + 1\n  \
             if sent <= {per_thread} then return 0 end\n  return 3600000\nend\n"
        );
        let text = post_lines(0) + &budget + include_str!("wrk/report.lua");
        let script = self.script(&format!("post-exactly-{per_thread}.lua"), &text)?;
        self.wrk(&script, url, secs, CONNECTIONS)
    }

    fn wrk(
        &self,
        script: &PathBuf,
        url: &str,
        secs: u32,
        connections: u32,
    ) -> anyhow::Result<Load> {
        let out = Command::new(&self.wrk)
            .args(["-t", &THREADS.to_string(), "-c", &connections.to_string()])
            .args(["-d", &format!("{secs}s"), "--timeout", "10s", "-s"])
            .arg(script)
            .arg(url)
            .output()
            .context("running wrk")?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let Some(line) = stdout.lines().find_map(|l| l.strip_prefix("NACRE-WRK ")) else {
            bail!(
                "wrk on {url} printed no summary (exit {}):\n{stdout}{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        };
        parse_summary(line)
    }
}

/// Reads the `NACRE-WRK` line `report.lua` prints: requests, duration
/// (µs), socket errors, bad statuses, p50 and p99 (µs).
fn parse_summary(line: &str) -> anyhow::Result<Load> {
    let f: Vec<f64> = line
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()
        .with_context(|| format!("wrk summary {line:?}"))?;
    let [
        requests,
        duration_us,
        socket_errors,
        bad_status,
        p50_us,
        p99_us,
    ] = f[..]
    else {
        bail!("wrk summary {line:?} has {} fields, not 6", f.len());
    };
    if duration_us <= 0.0 {
        bail!("wrk summary {line:?}: no time elapsed");
    }
    Ok(Load {
        requests: requests as u64,
        rps: requests / (duration_us / 1e6),
        p50_us,
        p99_us,
        socket_errors: socket_errors as u64,
        bad_status: bad_status as u64,
        server_cpu_us: None,
    })
}

/// CPU seconds (user and system) process `pid` (or `self`) has used.
pub fn cpu_seconds(pid: &str) -> anyhow::Result<f64> {
    process::cpu_seconds(pid).with_context(|| format!("/proc/{pid}/stat: not readable"))
}

/// A process's resident and peak resident memory, KiB, from /proc.
pub fn rss_kib(pid: u32) -> (u64, u64) {
    let kib = |b: Option<u64>| b.unwrap_or(0) / 1024;
    (kib(process::rss(pid)), kib(process::peak_rss(pid)))
}

#[cfg(test)]
mod tests {
    use super::parse_summary;

    #[test]
    fn reads_the_summary_line() {
        let l = parse_summary("30000 2000000 1 2 1500.5 9000.0").unwrap();
        assert_eq!(l.requests, 30000);
        assert_eq!(l.rps, 15000.0);
        assert_eq!((l.p50_us, l.p99_us), (1500.5, 9000.0));
        assert_eq!((l.socket_errors, l.bad_status), (1, 2));
    }

    #[test]
    fn names_a_malformed_summary() {
        let e = parse_summary("1 2 3").unwrap_err().to_string();
        assert!(e.contains("3 fields, not 6"), "{e}");
        assert!(parse_summary("1 0 0 0 1 1").is_err());
        assert!(parse_summary("a b c d e f").is_err());
    }
}
