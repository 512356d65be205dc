//! Scenario (i) in BENCHMARKS.md: its section, and the update of an
//! earlier file when (i) runs alone (`--only i`).

use std::fmt::Write;

use super::{
    COMMAND_ALONE, COMMAND_ALONE3, COMMAND_REPLICATED, CountCheck, FEW, INCR_FEW_P99_MAX_MS,
    INCR_RATIO_MIN, Pair, READ_RATIO_MIN, RaftResults,
};
use crate::load::{CONNECTIONS, Load};

/// The start of the section's heading, by which `--only i` finds it.
pub const HEADING: &str = "## (i) Replicated key-value";

/// The heading of the part kept by hand (bench/TUNING.md), which the
/// section goes before when an earlier file has none.
fn hand_kept_heading() -> &'static str {
    include_str!("../../TUNING.md")
        .lines()
        .next()
        .unwrap_or("## ")
}

fn met(ok: bool) -> &'static str {
    if ok { "met" } else { "**missed**" }
}

impl RaftResults {
    /// The section, from a blank line before its heading. `alone`: the
    /// command that measured (i) apart from the rest of the file.
    pub fn write_section(&self, s: &mut String, alone: Option<&str>) {
        let _ = writeln!(
            s,
            "\n{HEADING}: `kv-counter` on one enclave and on a three-enclave deployment (Raft)\n"
        );
        if let Some(command) = alone {
            let _ = writeln!(
                s,
                "**Provisional**: measured by `{command}`, apart from the rest of this file; \
                 its targets are not in the table above. The next full run replaces these figures.\n"
            );
        }
        self.write_setup(s);
        self.write_loads(s);
        self.write_targets(s);
        self.write_checks(s);
        let _ = writeln!(
            s,
            "\nCommands:\n\n- (A) `{COMMAND_ALONE}`\n- (A3) `{COMMAND_ALONE3}`\n- (B) `{COMMAND_REPLICATED}`\n\
             - this scenario alone, updating this section in place: \
             `cargo run --release -p nacre-bench -- --only i` (add `--quick` for {}-second loads)",
            crate::Plan::new(true).http_secs
        );
    }

    /// What runs where, and why the ratios are lower here than on EC2.
    fn write_setup(&self, s: &mut String) {
        let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
        let _ = writeln!(
            s,
            "`guest-examples/kv-counter` (`POST /incr` adds one to `count` in the guest's key-value store and \
             answers the new value; `GET /` reads it) and `hello` (which touches no key-value), deployed through the admin API on:\n\n\
             - (A) one enclave alone (no `--fqdn-leader`), behind its host proxy;\n\
             - (A3) three enclaves, each alone as in (A) (three separate stores, no Raft);\n\
             - (B) three enclaves of one deployment (`--fqdn-leader`), each behind its own host proxy, with the runtime's \
             default Raft timings (heartbeat 100 ms, election timeout 500 ms–1 s), measured once the leader counts three voters, \
             the two others are workers and both guests answer on all three. Every write is committed by a majority before \
             the guest sees success (a follower forwards it to the leader over the sync link, through both host proxies); \
             a read on a worker is served under a read lease from the leader, or after a read index from it.\n\n\
             wrk (2 threads, one second of warm-up, then {} s) reaches each through a loopback TCP forwarder in the benchmark's \
             process: in (A3) and (B) it hands connections to the three enclaves' public ports in turn, so in (B) about a third land on the \
             leader and two thirds on followers; in (A) it leads to the one enclave, so what it costs is in all. \
             Between the members, as in production, each host proxy listens on its member's sync port itself and each runtime \
             reaches its own host proxy directly (none of the tests' recording relays). {} rounds, each measurement on (A), (A3), then (B); the rows average the rounds.\n\n\
             On this machine the 3 runtimes, 3 host proxies, the forwarder and wrk of (B) share {cores} cores, where (A) \
             runs one runtime and one proxy on them: (B)'s figures here are three enclaves' work on one machine's cores, \
             where a deployment gives each enclave an instance of its own. (A3) runs the same processes as (B) on the same \
             cores without Raft, so (B)/(A3) is what replication costs, and the targets are on it; (B)/(A) adds what \
             running three enclaves instead of one costs on these cores, which (4) shows alone: `hello` touches no key-value.",
            self.secs,
            self.incr.alone.len()
        );
    }

    /// Each measurement's figures on both setups.
    fn write_loads(&self, s: &mut String) {
        let _ = writeln!(
            s,
            "\n| measurement | setup | requests | requests/s | p50 | p99 | errors | rounds (requests/s) |\n\
             |---|---|---:|---:|---:|---:|---:|---|"
        );
        for (what, pair) in self.pairs() {
            let setups = [
                ("(A) alone", &pair.alone),
                ("(A3) three alone", &pair.alone3),
                ("(B) three, Raft", &pair.replicated),
            ];
            for (setup, rounds) in setups {
                let l = Load::combine(rounds);
                let each: Vec<String> = rounds.iter().map(|r| format!("{:.0}", r.rps)).collect();
                let _ = writeln!(
                    s,
                    "| {what} | {setup} | {} | {:.0} | {:.0} µs | {:.0} µs | {} | {} |",
                    l.requests,
                    l.rps,
                    l.p50_us,
                    l.p99_us,
                    l.socket_errors + l.bad_status,
                    each.join(", ")
                );
            }
        }
    }

    fn pairs(&self) -> [(String, &Pair); 4] {
        [
            (
                format!("(1) `POST /incr`, {CONNECTIONS} connections"),
                &self.incr,
            ),
            (
                format!("(2) `GET /`, {CONNECTIONS} connections"),
                &self.read,
            ),
            (
                format!("(3) `POST /incr`, {FEW} connections"),
                &self.incr_few,
            ),
            (
                format!("(4) `hello`, {CONNECTIONS} connections"),
                &self.hello,
            ),
        ]
    }

    /// The targets (on (B)/(A3)), and (4)'s expectation.
    fn write_targets(&self, s: &mut String) {
        let p99_ms = self.incr_few.b().p99_us / 1000.0;
        let ratios = |p: &Pair| format!("{:.2} | {:.2}", p.ratio_one(), p.ratio());
        let _ = writeln!(
            s,
            "\n| requests/s | (B)/(A) | (B)/(A3) | target, on (B)/(A3) | |\n|---|---:|---:|---|---|\n\
             | (1) `POST /incr` | {} | ≥ {INCR_RATIO_MIN} | {} |\n\
             | (2) `GET /` | {} | ≥ {READ_RATIO_MIN} | {} |\n\
             | (4) `hello` | {} | ≈ 1: a request that touches no key-value pays nothing for Raft | – |\n\n\
             | latency | measured | target | |\n|---|---:|---|---|\n\
             | (3) `POST /incr`, {FEW} connections: p99 in (B) | {p99_ms:.1} ms | ≤ {INCR_FEW_P99_MAX_MS} ms | {} |",
            ratios(&self.incr),
            met(self.incr.ratio() >= INCR_RATIO_MIN),
            ratios(&self.read),
            met(self.read.ratio() >= READ_RATIO_MIN),
            ratios(&self.hello),
            met(p99_ms <= INCR_FEW_P99_MAX_MS),
        );
    }

    /// The count checks and whether the leader held.
    fn write_checks(&self, s: &mut String) {
        let _ = writeln!(
            s,
            "\nCount check: kv-counter's count after the timed runs (warm-ups included) against the POSTs wrk saw \
             answered with 2xx. The count may exceed them by what was in flight when each run stopped (carried out, \
             never read by wrk): at most each run's connections. A closing run then sends an exact number of POSTs \
             (each wrk thread a fixed budget, then none) and waits for every answer, so the count must rise by exactly \
             its answers.\n"
        );
        let setups = [
            ("(A)", &self.counts[0]),
            ("(A3), the three counts summed,", &self.counts[1]),
            ("(B)", &self.counts[2]),
        ];
        for (setup, c) in setups {
            let _ = writeln!(s, "- {setup} {}", describe(c));
        }
        let (before, after) = self.terms;
        let _ = if self.leader_held && before == after {
            writeln!(
                s,
                "\n(B)'s leader held throughout (Raft term {before} before the first load and after the last)."
            )
        } else {
            writeln!(
                s,
                "\n**(B)'s leadership changed during the loads** (Raft term {before} before, {after} after; \
                 first leader still leading: {}): its figures include elections.",
                self.leader_held
            )
        };
    }
}

/// One setup's count check, as a sentence.
fn describe(c: &CountCheck) -> String {
    format!(
        "count {}; POSTs answered 2xx {}, failed (other status or socket error) {}; count − answered {} \
         (in flight at most {}). Closing run: {} sent, {} answered 2xx, {} failed, count rose by {}. {}",
        c.count,
        c.answered,
        c.failed,
        c.count as i128 - c.answered as i128,
        c.in_flight,
        c.exact_sent,
        c.exact_answered,
        c.exact_failed,
        c.exact_rise,
        if c.holds() {
            "**Held.**"
        } else {
            "**Failed.**"
        }
    )
}

/// `text` (an earlier BENCHMARKS.md) with its (i) section replaced by
/// `section` (as [`RaftResults::write_section`] writes it), or with
/// `section` put before the hand-kept part when it has none.
pub fn splice(text: &str, section: &str) -> String {
    splice_at(text, HEADING, section)
}

/// [`splice`] for the section under `heading`.
pub fn splice_at(text: &str, heading: &str, section: &str) -> String {
    let section = section.trim_start_matches('\n');
    let at_line = |heading: &str| {
        text.match_indices(heading)
            .map(|(i, _)| i)
            .find(|&i| i == 0 || text[..i].ends_with('\n'))
    };
    let (start, end) = match at_line(heading) {
        Some(start) => {
            let rest = &text[start + heading.len()..];
            let end = rest
                .find("\n## ")
                .map_or(text.len(), |i| start + heading.len() + i + 1);
            (start, end)
        }
        None => {
            let at = at_line(hand_kept_heading()).unwrap_or(text.len());
            (at, at)
        }
    };
    let mut out = text[..start].to_string();
    if !out.is_empty() && !out.ends_with("\n\n") {
        out.push_str(if out.ends_with('\n') { "\n" } else { "\n\n" });
    }
    out.push_str(section);
    if end < text.len() {
        out.push('\n');
    }
    out.push_str(&text[end..]);
    out
}

#[cfg(test)]
mod tests {
    use super::{HEADING, hand_kept_heading, splice};

    #[test]
    fn replaces_the_section_and_keeps_the_rest() {
        let old = format!("# T\n\n## (g) x\n\ng\n\n{HEADING}: old\n\nold\n\n## Next\n\nn\n");
        let new = splice(&old, &format!("\n{HEADING}: new\n\nnew\n"));
        assert_eq!(
            new,
            format!("# T\n\n## (g) x\n\ng\n\n{HEADING}: new\n\nnew\n\n## Next\n\nn\n")
        );
        assert_eq!(splice(&new, &format!("\n{HEADING}: new\n\nnew\n")), new);
    }

    #[test]
    fn puts_a_missing_section_before_the_hand_kept_part_or_at_the_end() {
        let tuning = hand_kept_heading();
        let old = format!("# T\n\n## (g) x\n\ng\n\n{tuning}\n\nt\n");
        let new = splice(&old, &format!("\n{HEADING}: new\n\nnew\n"));
        assert_eq!(
            new,
            format!("# T\n\n## (g) x\n\ng\n\n{HEADING}: new\n\nnew\n\n{tuning}\n\nt\n")
        );
        assert_eq!(
            splice("# T\n\ng\n", &format!("\n{HEADING}: n\n")),
            format!("# T\n\ng\n\n{HEADING}: n\n")
        );
        assert_eq!(
            splice("", &format!("\n{HEADING}: n\n")),
            format!("{HEADING}: n\n")
        );
    }
}
