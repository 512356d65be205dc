//! A linearizability checker for key-value histories that clients outside
//! the runtime record (`tests/clients/kv_client.py`,
//! `tests/clients/curl_incr.sh`) against a guest such as `kv-lin`, for
//! when the store is replicated and "it answered" no longer means "every
//! later reader sees it".
//!
//! # History format
//!
//! JSON lines, one event each (blank lines are skipped, fields not named
//! here are ignored, so a client may add `"error"` or `"url"`):
//!
//! ```text
//! {"client": 3, "key": "k1", "op": "incr", "args": 1, "type": "invoke", "t_ns": 1000}
//! {"client": 3, "key": "k1", "op": "incr", "type": "ok", "value": 7, "t_ns": 2500}
//! ```
//!
//! - `client`: an unsigned integer or a string (a number is the same client
//!   as its decimal text). A client has at most one operation in flight:
//!   each `invoke` is followed by that client's completion before its next
//!   `invoke`. Only each client's own lines must be in order; clients may
//!   be interleaved in any way (for example one file per client,
//!   concatenated).
//! - `t_ns`: nanoseconds on one clock every client reads (Python's
//!   `time.monotonic_ns` across threads and processes of one machine, or
//!   `date +%s%N` for every recorder). Order between clients comes from it,
//!   not from line order; at equal times an invocation counts as before a
//!   completion, so a tie is read as concurrency.
//! - `type`: `invoke`; then `ok` (completed with `value`), `fail`
//!   (definitely not applied: the operation is dropped), or `info` (outcome
//!   unknown: the operation may take effect at any point after its
//!   invocation, or never, and its answer is unconstrained). An invocation
//!   with no completion by the end of the history counts as `info`.
//! - `key`, `op`: required on `invoke`; a completion may leave them out
//!   (they must match the invocation if given).
//!
//! Values are JSON strings, compared as their UTF-8 bytes; `null` is an
//! absent key. Per `op`:
//!
//! | op | `args` (on invoke) | `value` (on ok) |
//! |---|---|---|
//! | `read` | none / `null` | the value, or `null` when absent |
//! | `write` | the value | ignored |
//! | `incr` | the delta: integer or decimal string (none: 1) | the new value: integer or decimal string |
//! | `cas` | `{"old": value or null, "new": value}` (or `[old, new]`) | `true` / `false` (or those strings) |
//! | `delete` | none / `null` | ignored |
//!
//! `value` on `fail` and `info` is ignored.
//!
//! # Model
//!
//! Each key is a register holding `Option<bytes>`, absent when the history
//! begins (so a history needs keys nobody used before it). `incr` reads
//! the value as decimal text (absent counts as 0; anything else cannot be
//! incremented), stores the sum as decimal text and answers it; `cas`
//! swaps when the value equals `old` (`null`: absent) and answers whether
//! it did.
//!
//! # Search
//!
//! Linearizability is local, so each key is checked on its own. For each,
//! Wing & Gong's search over the invocations and completions in time order,
//! with Lowe's just-in-time linearisation (an operation is placed only
//! among those invoked before the first completion not yet explained, and
//! must be by its completion) and memoisation of every (linearised set as
//! a bitset, register value) configuration explored; operations with an
//! unknown outcome get rules of their own (`linearizable/search.rs`) that
//! keep them from multiplying the configurations. A failing key is then cut
//! to the shortest prefix that is not linearisable: its last event is the
//! completion of the operation that cannot be placed.
//!
//! # Cost
//!
//! A linearisable history goes fast: 3000 operations on one key by 8
//! clients, 70 of them with unknown outcomes, take about 40 ms (release
//! build). Proving a history wrong means visiting every configuration up
//! to the culprit, which grows with concurrency and much faster with the
//! unknown outcomes pending by then: under a second for 1500 operations by
//! 8 clients with up to about 15 pending, seconds with 30 to 50, and past
//! the default budget with 70. [`Options::max_states`] bounds the
//! configurations one search explores; past it the check answers
//! [`Violation::BudgetExceeded`] rather than running on (check a shorter
//! history, or fewer keys' worth of unknown outcomes).

use std::collections::BTreeMap;
use std::fmt;

#[cfg(test)]
mod exhaustive;
mod history;
mod keys;
mod model;
mod search;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod with_clients;

pub use history::{Call, Event, EventKind, HistoryError, Operation, Outcome, Status};
use keys::KeyFailure;

/// Reads a history of JSON lines (format in the module docs) and checks
/// that it is well formed: each client's completions follow its
/// invocations one for one, and its times never run backwards.
pub fn parse(lines: &str) -> Result<Vec<Event>, HistoryError> {
    history::parse(lines)
}

/// Checks `events` with the default [`Options`].
pub fn check(events: &[Event]) -> Result<Report, Violation> {
    check_with(events, &Options::default())
}

/// How far the search may go.
#[derive(Debug, Clone)]
pub struct Options {
    /// The configurations one key's search may explore before giving up
    /// with [`Violation::BudgetExceeded`]. Each kept costs about an eighth
    /// of a byte per operation of the key plus a few dozen bytes, so the
    /// default (a million) stays within a few hundred MB.
    pub max_states: u64,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            max_states: 1_000_000,
        }
    }
}

/// Checks that `events` are linearisable, key by key.
pub fn check_with(events: &[Event], options: &Options) -> Result<Report, Violation> {
    let ops = history::pair(events).map_err(|(i, message)| {
        Violation::Malformed(HistoryError {
            line: Some(i + 1),
            message,
        })
    })?;
    let mut keys: BTreeMap<&str, Vec<Operation>> = BTreeMap::new();
    for op in &ops {
        keys.entry(op.key.as_str()).or_default().push(op.clone());
    }
    let mut report = Report {
        keys: keys.len(),
        ops: ops.len(),
        ..Report::default()
    };
    for op in &ops {
        match op.status {
            Status::Ok(_) => report.ok += 1,
            Status::Failed => report.failed += 1,
            Status::Unknown => report.unknown += 1,
        }
    }
    for (key, ops) in keys {
        match keys::check_key(&ops, options.max_states) {
            Ok(states) => report.states += states,
            Err(KeyFailure::Budget { states }) => {
                return Err(Violation::BudgetExceeded {
                    key: key.to_string(),
                    ops: ops.len(),
                    states,
                });
            }
            Err(KeyFailure::Impossible {
                culprit,
                prefix,
                minimal,
            }) => {
                return Err(Violation::NotLinearizable(Box::new(Counterexample {
                    key: key.to_string(),
                    culprit: ops[culprit].clone(),
                    prefix,
                    minimal,
                })));
            }
        }
    }
    Ok(report)
}

/// What a successful check covered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Keys checked.
    pub keys: usize,
    /// Operations invoked, all keys together.
    pub ops: usize,
    /// Of those, completed with an answer.
    pub ok: usize,
    /// Of those, with an unknown outcome (`info`, or no completion).
    pub unknown: usize,
    /// Of those, failed (dropped from the check).
    pub failed: usize,
    /// Configurations the searches explored.
    pub states: u64,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "linearizable: {} keys, {} operations ({} ok, {} unknown, {} failed), {} states explored",
            self.keys, self.ops, self.ok, self.unknown, self.failed, self.states
        )
    }
}

/// Why a history failed the check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    /// The events are not a well-formed history.
    Malformed(HistoryError),
    /// A key's history has no linearisation.
    NotLinearizable(Box<Counterexample>),
    /// Undecided: a key's search explored more configurations than
    /// [`Options::max_states`] allows.
    BudgetExceeded {
        /// The key.
        key: String,
        /// Its operations.
        ops: usize,
        /// Configurations explored when the search gave up.
        states: u64,
    },
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::Malformed(e) => write!(f, "{e}"),
            Violation::NotLinearizable(c) => write!(f, "{c}"),
            Violation::BudgetExceeded { key, ops, states } => write!(
                f,
                "key {key:?}: undecided: the search gave up after {states} states \
                 ({ops} operations); raise Options::max_states or check a shorter history"
            ),
        }
    }
}

impl std::error::Error for Violation {}

/// A key's shortest history prefix that no order of operations explains.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counterexample {
    /// The key.
    pub key: String,
    /// The operation whose completion ends the prefix: without that
    /// completion the prefix is linearisable, with it not.
    pub culprit: Operation,
    /// The prefix's operations in invocation order, the culprit among them;
    /// an operation that completed after the prefix is shown pending
    /// ([`Status::Unknown`]).
    pub prefix: Vec<Operation>,
    /// False when bisecting for the shortest prefix ran out of budget: the
    /// prefix is then the key's whole history, and the culprit the
    /// operation the deepest attempt could not place.
    pub minimal: bool,
}

/// Earlier completed operations shown before the ones overlapping the
/// culprit: enough to see the value it should have seen.
const CONTEXT_BEFORE: usize = 8;

/// Lines of operations shown at most.
const CONTEXT_MAX: usize = 40;

impl fmt::Display for Counterexample {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let base = self.prefix.iter().map(|o| o.invoked).min().unwrap_or(0);
        let c = &self.culprit;
        let end = c.returned.unwrap_or(u64::MAX);
        let which = if self.minimal { "shortest" } else { "whole" };
        writeln!(
            f,
            "key {:?}: not linearizable: the {which} failing prefix ({} operations) ends with",
            self.key,
            self.prefix.len()
        )?;
        writeln!(f, "  {}", describe(c, base))?;
        writeln!(
            f,
            "which no order of it and the operations before fits; around it (* overlaps it):"
        )?;
        // An unknown outcome may take effect until the end of the history.
        let overlapping = |o: &Operation| {
            o.invoked <= end
                && (o.status == Status::Unknown || o.returned.is_none_or(|r| r >= c.invoked))
        };
        let mut before: Vec<&Operation> = (self.prefix.iter())
            .filter(|o| !overlapping(o) && o.returned.is_some())
            .collect();
        before.sort_by_key(|o| o.returned);
        let before = &before[before.len().saturating_sub(CONTEXT_BEFORE)..];
        let mut shown: Vec<&Operation> = (self.prefix.iter())
            .filter(|o| overlapping(o) || before.iter().any(|b| b.seq == o.seq))
            .collect();
        shown.sort_by_key(|o| (o.invoked, o.seq));
        for o in shown.iter().take(CONTEXT_MAX) {
            let mark = if overlapping(o) { '*' } else { ' ' };
            writeln!(f, "  {mark} {}", describe(o, base))?;
        }
        if shown.len() > CONTEXT_MAX {
            writeln!(f, "  ... and {} more", shown.len() - CONTEXT_MAX)?;
        }
        Ok(())
    }
}

/// One line for an operation: client, call, answer, and its interval in
/// microseconds from `base`.
fn describe(o: &Operation, base: u64) -> String {
    let call = match &o.call {
        Call::Read => "read".to_string(),
        Call::Write(v) => format!("write({})", show(Some(v))),
        Call::Incr(d) => format!("incr({d})"),
        Call::Cas { old, new } => format!("cas({} -> {})", show(old.as_ref()), show(Some(new))),
        Call::Delete => "delete".to_string(),
    };
    let answer = match &o.status {
        Status::Ok(Outcome::Read(v)) => show(v.as_ref()),
        Status::Ok(Outcome::Incr(n)) => n.to_string(),
        Status::Ok(Outcome::Cas(b)) => b.to_string(),
        Status::Ok(Outcome::Done) => "ok".to_string(),
        Status::Failed => "fail".to_string(),
        // Unknown for want of an answer: the history (or the prefix shown)
        // ends first.
        Status::Unknown if o.returned.is_none() => "? (no answer yet)".to_string(),
        Status::Unknown => "? (info: outcome unknown)".to_string(),
    };
    let micros = |t: u64| (t.saturating_sub(base)) as f64 / 1000.0;
    let end = match o.returned {
        Some(t) => format!("{:.3}", micros(t)),
        None => "...".to_string(),
    };
    format!(
        "client {} {call} -> {answer}  [{:.3} .. {end} µs]",
        o.client,
        micros(o.invoked)
    )
}

/// A value for people: quoted text, or hex when not UTF-8.
fn show(v: Option<&Vec<u8>>) -> String {
    match v {
        None => "absent".to_string(),
        Some(b) => match std::str::from_utf8(b) {
            Ok(s) => format!("{s:?}"),
            Err(_) => format!(
                "0x{}",
                b.iter().map(|x| format!("{x:02x}")).collect::<String>()
            ),
        },
    }
}
