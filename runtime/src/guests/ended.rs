//! How a request ends: its [`Outcome`]; how its guest's run [`Ended`],
//! said once from what the run returned and what the request recorded
//! (`Ended::classify`), then logged and counted (`Ended::report`); and
//! the [`Ledger`] where a guest's failures are counted and logged. The
//! request's steps are in [`mod@super::invoke`], and [`super::decide`]
//! makes the outcome of what the request's task heard; this file needs
//! nothing of either.

use std::sync::atomic::Ordering;
use std::time::Duration;

use http::Response;
use nacre_control::bounded;

use super::bodies::GuestBody;
use super::record::{At, Cause, Record};
use super::stats::GuestStats;
use super::{Guest, GuestName};

/// How a guest request ended.
pub enum Outcome {
    /// The guest answered (its body may still be streaming).
    Response(Response<GuestBody>),
    /// The guest trapped, returned an error or never answered: 500.
    Failed(String),
    /// The request ran past `--request-timeout`: 504.
    TimedOut,
    /// The request body is over `--max-body`: 413.
    BodyTooLarge,
    /// The client stopped sending the request body while the guest waited
    /// for it: 408.
    BodyStalled,
    /// No instance could be had now (the guest's share, the process's
    /// slots or memory are all in use): 503, with the reason.
    Busy(String),
}

/// The outcome a recorded cause makes of a request.
pub(super) fn outcome_of(cause: Cause) -> Outcome {
    match cause {
        Cause::TimedOut => Outcome::TimedOut,
        Cause::BodyTooLarge => Outcome::BodyTooLarge,
        Cause::BodyStalled => Outcome::BodyStalled,
    }
}

/// Bytes of a failure's reason kept. The reason can be the guest's own
/// words (the string of an `error-code` it returned, the names in its
/// trap): cut here, before any log line is made of it, so every log sink
/// gets a bounded line and a 16 MiB error string costs no more than this.
pub(super) const MAX_REASON: usize = 4 * 1024;
/// Bytes of a guest's wasm backtrace logged (its frames carry the
/// guest's own function names).
const MAX_BACKTRACE: usize = 8 * 1024;

/// Where a guest's failures are counted and logged: its name and its
/// counters, which is all the outcome needs of a [`Guest`] (and can be
/// had without compiling one, in tests).
#[derive(Clone, Copy)]
pub(super) struct Ledger<'a> {
    name: &'a GuestName,
    stats: &'a GuestStats,
}

impl<'a> Ledger<'a> {
    pub(super) fn of(guest: &'a Guest) -> Ledger<'a> {
        Ledger {
            name: &guest.config.name,
            stats: &guest.stats,
        }
    }

    /// Counts and logs a failure seen before the guest's task could.
    pub(super) fn failed(self, why: String) -> Outcome {
        self.count_failure(&why);
        Outcome::Failed(why)
    }

    /// The one place a failed request (500) is counted and logged.
    fn count_failure(self, why: &str) {
        self.stats.traps.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(guest = %self.name, "guest request failed: {why}");
    }
}

/// How a guest's task ended.
pub(super) enum Ended {
    /// The handler returned.
    Done,
    /// No instance could be had: the process's slots or memory are in use.
    Busy(&'static str),
    /// Stopped for a recorded cause, or by the deadline's timer.
    Stopped(Cause),
    /// Trapped or failed otherwise.
    Failed(String),
}

/// Where a guest's run failed.
pub(super) enum Stage {
    /// Making the instance.
    Start,
    /// Running the handler.
    Run,
}

impl Ended {
    /// How the run ended, from what it returned (`None`: the deadline's
    /// timer fired first) and what the request recorded.
    pub(super) fn classify(
        ran: Option<Result<(), (Stage, wasmtime::Error)>>,
        record: &Record,
        starved: bool,
    ) -> Ended {
        match ran {
            Some(Ok(())) => Ended::Done,
            Some(Err((Stage::Start, e))) if e.is::<wasmtime::PoolConcurrencyLimitError>() => {
                Ended::Busy("all guest instance slots are busy; retry shortly")
            }
            Some(Err((Stage::Start, _))) if starved => Ended::Busy(
                "guest memory is all in use (--guest-memory-total and each guest's share of it); retry shortly",
            ),
            // The error is how a stop looked from inside: the epoch
            // callback's at the deadline, or the guest's own failure after
            // its body was cut off. The record says which.
            Some(Err((_, e))) => match record.cause(At::RunEnd) {
                Some(cause) => Ended::Stopped(cause),
                None => Ended::Failed(describe(&e)),
            },
            // A guest waiting on something (no epoch tick to stop it).
            None => Ended::Stopped(Cause::TimedOut),
        }
    }

    /// Logs and counts a timeout or failure: before the head as the
    /// request's 504 or 500, after it as a body cut short.
    pub(super) fn report(&self, ledger: Ledger<'_>, record: &Record, timeout: Duration) {
        let name = ledger.name;
        let stats = ledger.stats;
        if record.head_sent() {
            let why = match self {
                Ended::Done
                | Ended::Busy(_)
                | Ended::Stopped(Cause::BodyTooLarge | Cause::BodyStalled) => return,
                Ended::Stopped(Cause::TimedOut) => "timed out while streaming its response",
                Ended::Failed(why) => why,
            };
            stats.traps.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(guest = %name, "guest failed after sending its response head: {why}");
            return;
        }
        match self {
            Ended::Stopped(Cause::TimedOut) => {
                stats.timeouts.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(guest = %name, timeout = ?timeout, "guest request timed out; instance stopped");
            }
            Ended::Failed(why) => ledger.count_failure(why),
            Ended::Done
            | Ended::Busy(_)
            | Ended::Stopped(Cause::BodyTooLarge | Cause::BodyStalled) => {}
        }
    }

    /// The outcome of a request whose guest went without setting its
    /// head. Its run has logged and counted its own failures.
    pub(super) fn into_outcome(self, ledger: Ledger<'_>) -> Outcome {
        match self {
            Ended::Done => ledger.failed("guest returned without setting a response".into()),
            Ended::Busy(why) => Outcome::Busy(why.into()),
            Ended::Stopped(cause) => outcome_of(cause),
            Ended::Failed(why) => Outcome::Failed(why),
        }
    }
}

/// The trap reason first (the wasm backtrace only at debug level): what an
/// operator reading the log needs to tell a bug from an attack.
fn describe(e: &wasmtime::Error) -> String {
    if let Some(bt) = e.downcast_ref::<wasmtime::WasmBacktrace>() {
        tracing::debug!("guest backtrace:\n{}", bounded::display(bt, MAX_BACKTRACE));
    }
    match e.downcast_ref::<wasmtime::Trap>() {
        Some(trap) => format!("trap: {trap}"),
        None => bounded::display(&format_args!("{e:#}"), MAX_REASON),
    }
}

/// A guest's run that panicked (a bug of the runtime's, never the
/// guest's): reported like a trap, before or after the head.
pub(super) fn panicked(guest: &Guest, record: &Record) -> Ended {
    record.note_run_failed();
    let ended = Ended::Failed("the guest's run panicked".into());
    ended.report(Ledger::of(guest), record, Duration::ZERO);
    ended
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A guest's name and counters, as a [`Ledger`] borrows them.
    pub(crate) struct Books {
        name: GuestName,
        stats: GuestStats,
    }

    impl Books {
        pub(crate) fn new() -> Books {
            Books {
                name: "tested".parse().expect("a guest name"),
                stats: GuestStats::default(),
            }
        }

        pub(crate) fn ledger(&self) -> Ledger<'_> {
            Ledger {
                name: &self.name,
                stats: &self.stats,
            }
        }

        /// (traps, timeouts)
        pub(crate) fn counts(&self) -> (u64, u64) {
            (
                self.stats.traps.load(Ordering::Relaxed),
                self.stats.timeouts.load(Ordering::Relaxed),
            )
        }
    }

    #[test]
    fn a_failure_after_the_head_is_a_trap_never_a_timeout() {
        let books = Books::new();
        let record = Record::default();
        record.note_head_sent();
        let report = |ended: Ended| ended.report(books.ledger(), &record, Duration::ZERO);
        report(Ended::Stopped(Cause::TimedOut));
        assert_eq!(books.counts(), (1, 0));
        report(Ended::Failed("trap: boom".into()));
        assert_eq!(books.counts(), (2, 0));
        // The client's own body faults and a clean end count nothing.
        report(Ended::Stopped(Cause::BodyTooLarge));
        report(Ended::Stopped(Cause::BodyStalled));
        report(Ended::Done);
        assert_eq!(books.counts(), (2, 0));
    }
}
