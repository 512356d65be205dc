//! BENCHMARKS.md: machine, versions, every scenario's figures, the targets
//! met or missed, and what tuning bought (bench/TUNING.md, kept by hand).

use std::fmt::Write;
use std::time::Duration;

use crate::bulk::BulkResults;
use crate::deploy::DeployResults;
use crate::http::{HttpResults, Scenario};
use crate::load::CONNECTIONS;
use crate::memory::{GUESTS, MemoryResults};
use crate::overhead::Overhead;
use crate::tools::Tools;

/// Everything one run measured.
pub struct Report<'a> {
    /// `--quick` was given.
    pub quick: bool,
    /// Tools and machine facts.
    pub tools: &'a Tools,
    /// (a), (b), (c).
    pub http: HttpResults,
    /// (d).
    pub overhead: Overhead,
    /// (e).
    pub deploy: DeployResults,
    /// (f).
    pub memory: MemoryResults,
    /// (g).
    pub bulk: BulkResults,
    /// Wall time of the measurements (set-up and installs not counted).
    pub measuring: Duration,
}

/// One target: what, the figure, the bound, and whether it holds.
struct Target {
    what: &'static str,
    measured: String,
    bound: &'static str,
    met: bool,
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn max(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::NAN, f64::max)
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

impl Report<'_> {
    fn targets(&self) -> Vec<Target> {
        let (a, b, c) = (
            &self.http.nacre.load,
            &self.http.wasmtime.load,
            &self.http.native.load,
        );
        let ac = a.rps / c.rps;
        let p99 = a.p99_us / c.p99_us;
        let ab = a.rps / b.rps;
        let cached = median(&self.deploy.cached_ms);
        let m = &self.memory;
        let growth = m.after_all_kib as f64 / m.after_1k_kib as f64 - 1.0;
        let g = self
            .bulk
            .modes
            .first()
            .map_or(f64::NAN, |m| m.gib_s[1] / m.gib_s[0]);
        vec![
            Target {
                what: "(a)/(c) requests/s",
                measured: format!("{ac:.2}"),
                bound: "≥ 0.7",
                met: ac >= 0.7,
            },
            Target {
                what: "p99 (a) / p99 (c)",
                measured: format!("{p99:.2}"),
                bound: "≤ 2",
                met: p99 <= 2.0,
            },
            Target {
                what: "(a)/(b) requests/s",
                measured: format!("{ab:.2}"),
                bound: "≥ 1.0",
                met: ab >= 1.0,
            },
            Target {
                what: "(d) per-request overhead",
                measured: format!("{:.1} µs", self.overhead.median_us),
                bound: "≤ 20 µs",
                met: self.overhead.median_us <= 20.0,
            },
            Target {
                what: "(e) cached redeploy (median)",
                measured: format!("{cached:.1} ms"),
                bound: "≤ 50 ms",
                met: cached <= 50.0,
            },
            Target {
                what: "(f) RSS growth, 1k → all requests",
                measured: format!("{:+.1}%", growth * 100.0),
                bound: "≤ +10%",
                met: growth <= 0.10,
            },
            Target {
                what: "(g) proxy / direct throughput",
                measured: format!("{g:.2}"),
                bound: "≥ 0.9",
                met: g >= 0.9,
            },
        ]
    }

    /// The targets table, for the terminal.
    pub fn summary(&self) -> String {
        let mut s = String::from("target                                measured   bound\n");
        for t in self.targets() {
            let _ = writeln!(
                s,
                "{:<37} {:>9}   {:<7} {}",
                t.what,
                t.measured,
                t.bound,
                if t.met { "met" } else { "MISSED" }
            );
        }
        s
    }

    /// The whole of BENCHMARKS.md.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let mode = if self.quick {
            "cargo run --release -p nacre-bench -- --quick"
        } else {
            "cargo run --release -p nacre-bench"
        };
        let _ = writeln!(s, "# Nacre benchmarks\n");
        let _ = writeln!(
            s,
            "Written by `{mode}` (measurements took {:.0} s). Every figure below comes from one run on one machine; \
             absolute numbers vary between runs and machines, the ratios much less.\n",
            self.measuring.as_secs_f64()
        );
        let _ = writeln!(s, "## Machine and versions\n\n| | |\n|---|---|");
        for (k, v) in self.tools.machine.iter().chain(&self.tools.versions) {
            let _ = writeln!(s, "| {k} | {v} |");
        }

        let _ = writeln!(
            s,
            "\n## Targets\n\n| target | measured | bound | |\n|---|---:|---|---|"
        );
        for t in self.targets() {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} |",
                t.what,
                t.measured,
                t.bound,
                if t.met { "met" } else { "**missed**" }
            );
        }

        let _ = writeln!(
            s,
            "\n## (a)–(c) HTTP: the `hello` guest, keep-alive HTTP/1.1, {CONNECTIONS} connections\n\n\
             wrk, 2 threads, one second of warm-up, then the figures below. Peak RSS is each process's VmHWM.\n\n\
             | scenario | requests | requests/s | p50 | p99 | peak RSS | errors |\n|---|---:|---:|---:|---:|---|---:|"
        );
        let row = |s: &mut String, name: &str, sc: &Scenario| {
            let rss: Vec<String> = sc
                .peak_rss_kib
                .iter()
                .map(|(p, k)| format!("{p} {}", mib(*k)))
                .collect();
            let l = &sc.load;
            let _ = writeln!(
                s,
                "| {name} | {} | {:.0} | {:.0} µs | {:.0} µs | {} | {} |",
                l.requests,
                l.rps,
                l.p50_us,
                l.p99_us,
                rss.join(", "),
                l.socket_errors + l.bad_status
            );
        };
        row(
            &mut s,
            "(a) Nacre: TLS in the runtime, through the host proxy",
            &self.http.nacre,
        );
        row(
            &mut s,
            "(b) `wasmtime serve -Scli` 48.0.8, plain HTTP",
            &self.http.wasmtime,
        );
        row(
            &mut s,
            "(c) native hyper + rustls, through the host proxy",
            &self.http.native,
        );
        let _ = writeln!(s, "\nCommands:\n");
        for (k, sc) in [
            ("a", &self.http.nacre),
            ("b", &self.http.wasmtime),
            ("c", &self.http.native),
        ] {
            let _ = writeln!(s, "- ({k}) `{}`", sc.command);
        }

        let o = &self.overhead;
        let _ = writeln!(
            s,
            "\n## (d) Per-request overhead in process\n\n\
             `cargo bench -p nacre-runtime --bench invoke` (criterion): a fresh instance of `hello` handles one request, \
             from `invoke` to the last body byte, no network.\n\n\
             median **{:.1} µs** (95% interval {:.1}–{:.1} µs)",
            o.median_us, o.interval_us.0, o.interval_us.1
        );

        let d = &self.deploy;
        let _ = writeln!(
            s,
            "\n## (e) Deploy latency: upload → first 200, through the host proxy\n\n\
             | | runs | median | max |\n|---|---:|---:|---:|\n\
             | cold (new bytes: compiled) | {} | {:.1} ms | {:.1} ms |\n\
             | cached (same bytes again) | {} | {:.1} ms | {:.1} ms |",
            d.cold_ms.len(),
            median(&d.cold_ms),
            max(&d.cold_ms),
            d.cached_ms.len(),
            median(&d.cached_ms),
            max(&d.cached_ms)
        );

        let m = &self.memory;
        let _ = writeln!(
            s,
            "\n## (f) Runtime memory (RSS)\n\n\
             {GUESTS} guests deployed (each its own compiled component), requests spread over all of them.\n\n\
             | | RSS |\n|---|---:|\n\
             | idle | {} |\n| after 1,000 requests | {} |\n| after {} requests | {} |",
            mib(m.idle_kib),
            mib(m.after_1k_kib),
            m.requests,
            mib(m.after_all_kib)
        );

        let b = &self.bulk;
        let _ = writeln!(
            s,
            "\n## (g) Host proxy bulk throughput and round trip\n\n\
             {} MiB per transfer, best of {}; 32-byte ping-pongs for the round trip.\n\n\
             | mode | direct | proxy TCP→TCP | proxy TCP→unix | CPU s/GiB endpoints, proxy | RTT median/p99 direct | via proxy (TCP) | via proxy (unix) |\n\
             |---|---:|---:|---:|---|---|---|---|",
            b.bytes >> 20,
            b.rounds
        );
        for m in &b.modes {
            let r = |(p50, p99): (f64, f64)| format!("{p50:.0} / {p99:.0} µs");
            let _ = writeln!(
                s,
                "| {} | {:.2} GiB/s | {:.2} GiB/s ({:.2}×) | {:.2} GiB/s ({:.2}×) | {:.3}, {:.3} | {} | {} | {} |",
                m.name,
                m.gib_s[0],
                m.gib_s[1],
                m.gib_s[1] / m.gib_s[0],
                m.gib_s[2],
                m.gib_s[2] / m.gib_s[0],
                m.cpu_per_gib.0,
                m.cpu_per_gib.1,
                r(m.rtt_us[0]),
                r(m.rtt_us[1]),
                r(m.rtt_us[2])
            );
        }

        let _ = writeln!(s, "\n{}", include_str!("../TUNING.md").trim_end());
        s
    }
}
