//! BENCHMARKS.md: machine, versions, every scenario's figures, the targets
//! met or missed, and what tuning bought (bench/TUNING.md, kept by hand).

use std::fmt::Write;
use std::time::Duration;

use crate::bulk::BulkResults;
use crate::deploy::DeployResults;
use crate::http::{HttpResults, Scenario};
use crate::load::{CONNECTIONS, Load};
use crate::memory::{GUESTS, MEMORY_REQUESTS, MemoryResults};
use crate::overhead::Overhead;
use crate::raft::{FEW, INCR_FEW_P99_MAX_MS, INCR_RATIO_MIN, READ_RATIO_MIN, RaftResults};
use crate::tools::Tools;

/// Everything one run measured.
pub struct Report<'a> {
    /// `--quick` was given.
    pub quick: bool,
    /// Tools and machine facts.
    pub tools: &'a Tools,
    /// (a), (b), (c).
    pub http: HttpResults,
    /// (h).
    pub synced: Scenario,
    /// (d).
    pub overhead: Overhead,
    /// (d₀): (d) with the `floor` component, for reference.
    pub overhead_floor: Overhead,
    /// (e).
    pub deploy: DeployResults,
    /// (f).
    pub memory: MemoryResults,
    /// (g).
    pub bulk: BulkResults,
    /// (i).
    pub raft: RaftResults,
    /// (j).
    pub tcp: crate::tcp_echo::TcpResults,
    /// Wall time of the measurements (set-up and installs not counted).
    pub measuring: Duration,
}

/// A target's bound: the figure must be at least, or at most, this.
enum Bound {
    AtLeast(f64),
    AtMost(f64),
}

/// One target: what, the figure as shown, the bound, and whether it holds.
struct Target {
    what: String,
    measured: String,
    bound: String,
    met: bool,
}

impl Target {
    /// `value` (shown with `decimals` and `unit`) against `bound`.
    fn new(
        what: impl Into<String>,
        value: f64,
        decimals: usize,
        unit: &str,
        bound: Bound,
    ) -> Target {
        let (met, bound) = match bound {
            Bound::AtLeast(b) => (value >= b, format!("≥ {b}{unit}")),
            Bound::AtMost(b) => (value <= b, format!("≤ {b}{unit}")),
        };
        Target {
            what: what.into(),
            measured: format!("{value:.decimals$}{unit}"),
            bound,
            met,
        }
    }
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
        let (ae, ce) = (&self.http.nacre_echo.load, &self.http.native_echo.load);
        let cpu = |l: &Load| l.server_cpu_us.unwrap_or(f64::NAN);
        let m = &self.memory;
        let growth = (m.after_all_kib as f64 / m.after_1k_kib as f64 - 1.0) * 100.0;
        let g = self
            .bulk
            .modes
            .first()
            .map_or(f64::NAN, |m| m.gib_s[1] / m.gib_s[0]);
        use Bound::{AtLeast, AtMost};
        let mut targets = vec![
            Target::new("(a)/(c) requests/s", a.rps / c.rps, 2, "", AtLeast(0.5)),
            Target::new("p99 (a) / p99 (c)", a.p99_us / c.p99_us, 2, "", AtMost(2.0)),
            Target::new(
                "echo, 1 KiB: (a)/(c) requests/s",
                ae.rps / ce.rps,
                2,
                "",
                AtLeast(0.5),
            ),
            Target::new(
                "echo, 1 KiB: p99 (a) / p99 (c)",
                ae.p99_us / ce.p99_us,
                2,
                "",
                AtMost(2.0),
            ),
            Target::new(
                "(a) runtime CPU per request",
                cpu(a),
                1,
                " µs",
                AtMost(25.0),
            ),
            Target::new("(a)/(b) requests/s", a.rps / b.rps, 2, "", AtLeast(1.0)),
            Target::new(
                "(h)/(a) requests/s, worker vs alone",
                self.synced.load.rps / a.rps,
                2,
                "",
                AtLeast(0.9),
            ),
            Target::new(
                "(d) per-request overhead",
                self.overhead.median_us,
                1,
                " µs",
                AtMost(12.0),
            ),
            Target::new(
                "(e) cached redeploy (median)",
                median(&self.deploy.cached_ms),
                1,
                " ms",
                AtMost(50.0),
            ),
            Target::new(
                "(f) RSS growth, 1k → all requests",
                growth,
                1,
                "%",
                AtMost(10.0),
            ),
            Target::new("(g) proxy / direct throughput", g, 2, "", AtLeast(0.9)),
        ];
        targets.extend(self.raft_targets());
        targets
    }

    /// (i)'s targets; its section says more, and what (4) should show.
    fn raft_targets(&self) -> Vec<Target> {
        use Bound::{AtLeast, AtMost};
        let r = &self.raft;
        let counts = r.counts.iter().all(|c| c.holds());
        vec![
            Target::new(
                "(i) `POST /incr`: (B)/(A3) requests/s",
                r.incr.ratio(),
                2,
                "",
                AtLeast(INCR_RATIO_MIN),
            ),
            Target::new(
                "(i) `GET /`: (B)/(A3) requests/s",
                r.read.ratio(),
                2,
                "",
                AtLeast(READ_RATIO_MIN),
            ),
            Target::new(
                format!("(i) `POST /incr`, {FEW} connections: p99 in (B)"),
                r.incr_few.b().p99_us / 1000.0,
                1,
                " ms",
                AtMost(INCR_FEW_P99_MAX_MS),
            ),
            Target {
                what: "(i) count = POSTs answered, none failed".into(),
                measured: if counts { "yes" } else { "no" }.into(),
                bound: "(A), (A3) and (B)".into(),
                met: counts,
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
        self.write_intro(&mut s);
        self.write_targets(&mut s);
        self.write_http_table(&mut s);
        self.write_http_notes(&mut s);
        self.write_overhead(&mut s);
        self.write_deploy(&mut s);
        self.write_memory(&mut s);
        self.write_bulk(&mut s);
        self.raft.write_section(&mut s, None);
        self.tcp.write_section(&mut s, None);
        let _ = writeln!(s, "\n{}", include_str!("../TUNING.md").trim_end());
        s
    }

    /// Title, how the file was made, and the machine and versions table.
    fn write_intro(&self, s: &mut String) {
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
    }

    /// The targets table, for the file.
    fn write_targets(&self, s: &mut String) {
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
    }

    /// Scenarios (a)–(c) and (h): one table row per scenario.
    fn write_http_table(&self, s: &mut String) {
        let _ = writeln!(
            s,
            "\n## (a)–(c), (h) HTTP: the `hello` guest (and `echo` on a 1 KiB body), keep-alive HTTP/1.1, {CONNECTIONS} connections\n\n\
             wrk, 2 threads, one second of warm-up, then the figures below. Peak RSS is each process's VmHWM.\n\n\
             | scenario | requests | requests/s | p50 | p99 | server CPU per request | peak RSS | errors |\n|---|---:|---:|---:|---:|---:|---|---:|"
        );
        let rows = [
            (
                "(a) Nacre: TLS in the runtime, through the host proxy",
                &self.http.nacre,
            ),
            (
                "(b) `wasmtime serve -Scli` 48.0.8, plain HTTP",
                &self.http.wasmtime,
            ),
            (
                "(c) native hyper + rustls, through the host proxy",
                &self.http.native,
            ),
            ("(a) with `echo`, POST of 1 KiB", &self.http.nacre_echo),
            (
                "(c) doing `echo`'s work, POST of 1 KiB",
                &self.http.native_echo,
            ),
            (
                "(h) as (a), on a worker of a two-enclave deployment (sync on)",
                &self.synced,
            ),
            (
                "(a₀) as (a), with the `floor` component (reference, not a target)",
                &self.http.nacre_floor,
            ),
        ];
        for (name, sc) in rows {
            write_scenario_row(s, name, sc);
        }
    }

    /// Below the HTTP table: how the rounds ran and what each gave, what
    /// (a₀) shows, and the commands that started the servers.
    fn write_http_notes(&self, s: &mut String) {
        let h = &self.http;
        let _ = writeln!(
            s,
            "\n(a) and (c), with `hello` and with `echo`, ran in {} alternating rounds, (a), (c), (a) echo, (c) echo, each after its own one-second warm-up; the rows above average them (requests summed), and the targets use those averages. \
             Server CPU per request is the server process's user and system time (`/proc/PID/stat`) over the measured seconds, divided by the responses. \
             (a): {}. (c): {}. (a) echo: {}. (c) echo: {}.",
            h.nacre.rounds.len(),
            rounds(&h.nacre),
            rounds(&h.native),
            rounds(&h.nacre_echo),
            rounds(&h.native_echo)
        );
        let _ = writeln!(
            s,
            "\n(a₀) ran last in each round, on the same runtime: `guest-examples/testing/floor` gives `hello`'s answer (same status, headers and body) \
             while importing only `wasi:http` and `wasi:io`, the least a component can make the runtime wire into each fresh instance. \
             It shows how far the runtime gets when the component costs the least: {:.2}× (c)'s requests/s (rounds: {}).",
            h.nacre_floor.load.rps / h.native.load.rps,
            rounds(&h.nacre_floor)
        );
        let _ = writeln!(s, "\nCommands:\n");
        for (k, sc) in [
            ("a", &self.http.nacre),
            ("b", &self.http.wasmtime),
            ("c", &self.http.native),
            ("h", &self.synced),
        ] {
            let _ = writeln!(s, "- ({k}) `{}`", sc.command);
        }
    }

    /// Scenario (d), and (d₀) for reference.
    fn write_overhead(&self, s: &mut String) {
        let o = &self.overhead;
        let _ = writeln!(
            s,
            "\n## (d) Per-request overhead in process\n\n\
             `cargo bench -p nacre-runtime --bench invoke` (criterion): a fresh instance of `hello` handles one request, \
             from `invoke` to the last body byte, no network.\n\n\
             median **{:.1} µs** (95% interval {:.1}–{:.1} µs)",
            o.median_us, o.interval_us.0, o.interval_us.1
        );
        let f = &self.overhead_floor;
        let _ = writeln!(
            s,
            "\n(d₀), the same with the `floor` component (see (a₀)), for reference: median {:.1} µs (95% interval {:.1}–{:.1} µs)",
            f.median_us, f.interval_us.0, f.interval_us.1
        );
    }

    /// Scenario (e): cold and cached deploys.
    fn write_deploy(&self, s: &mut String) {
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
    }

    /// Scenario (f): the runtime's RSS idle and under requests.
    fn write_memory(&self, s: &mut String) {
        let m = &self.memory;
        let _ = writeln!(
            s,
            "\n## (f) Runtime memory (RSS)\n\n\
             {GUESTS} guests deployed (each its own compiled component), requests spread over all of them.\n\n\
             | | RSS |\n|---|---:|\n\
             | idle | {} |\n| after 1,000 requests | {} |\n| after {} requests | {} |",
            mib(m.idle_kib),
            mib(m.after_1k_kib),
            MEMORY_REQUESTS,
            mib(m.after_all_kib)
        );
    }

    /// Scenario (g): one row per mode.
    fn write_bulk(&self, s: &mut String) {
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
    }
}

/// One row of the HTTP table: the scenario's combined figures.
fn write_scenario_row(s: &mut String, name: &str, sc: &Scenario) {
    let rss: Vec<String> = sc
        .peak_rss_kib
        .iter()
        .map(|(p, k)| format!("{p} {}", mib(*k)))
        .collect();
    let l = &sc.load;
    let _ = writeln!(
        s,
        "| {name} | {} | {:.0} | {:.0} µs | {:.0} µs | {} | {} | {} |",
        l.requests,
        l.rps,
        l.p50_us,
        l.p99_us,
        l.server_cpu_us
            .map_or_else(|| "–".to_string(), |c| format!("{c:.1} µs")),
        rss.join(", "),
        l.socket_errors + l.bad_status
    );
}

/// Each round of a scenario, for the text under the HTTP table.
fn rounds(sc: &Scenario) -> String {
    sc.rounds
        .iter()
        .map(|l| {
            let cpu = l
                .server_cpu_us
                .map_or_else(String::new, |c| format!(", CPU {c:.1} µs"));
            format!("{:.0} req/s, p99 {:.0} µs{cpu}", l.rps, l.p99_us)
        })
        .collect::<Vec<_>>()
        .join("; ")
}
