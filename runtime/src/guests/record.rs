//! What happened to one request, as each of its parties saw it, in one
//! byte: the epoch callback (the deadline passed), the request body (over
//! `--max-body`, or stalled by the client), the head callback (the guest's
//! head went out) and the guest's run (it failed). They act at different
//! times and in different tasks (the guest's run moves to a task of its own
//! once its head is out, and the server reads the response body), so they
//! record rather than decide; [`Record::cause`] reads the byte back as one
//! typed [`Cause`], by the one rule in [`decode`].

use std::sync::atomic::{AtomicU8, AtomicU32, Ordering};

/// What ended a request other than the guest's own answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Cause {
    /// The request ran past `--request-timeout` (504).
    TimedOut,
    /// The request body went over `--max-body` (413).
    BodyTooLarge,
    /// The client stopped sending the request body while it was awaited
    /// (408).
    BodyStalled,
}

impl Cause {
    /// The cause's bit in [`Record`].
    const fn bit(self) -> u8 {
        match self {
            Cause::TimedOut => 1,
            Cause::BodyTooLarge => 1 << 1,
            Cause::BodyStalled => 1 << 2,
        }
    }
}

/// The guest's response head went out (see [`Record::note_head_sent`]).
const HEAD_SENT: u8 = 1 << 3;
/// The guest's run ended badly (see [`Record::note_run_failed`]).
const RUN_FAILED: u8 = 1 << 4;

/// When a request's cause is read, which decides whether the deadline
/// counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum At {
    /// The guest set its head (a response or an error code) while its run
    /// went on: the client gets that head unless its own body went wrong,
    /// and a deadline passed since then only cut the body short (the run
    /// logs that).
    Head,
    /// The guest's run ended: everything recorded counts.
    RunEnd,
}

/// The cause that decides a request, of all those recorded in `bits`.
///
/// By rank, not by the order they were recorded, as the request has
/// always been decided: the deadline first (a guest that reads a body
/// over the limit, ignores the error and spins is stopped by the
/// deadline, 504), then a body over the limit, then a stalled one.
pub(super) fn decode(bits: u8, at: At) -> Option<Cause> {
    let rank: &[Cause] = match at {
        At::RunEnd => &[Cause::TimedOut, Cause::BodyTooLarge, Cause::BodyStalled],
        At::Head => &[Cause::BodyTooLarge, Cause::BodyStalled],
    };
    rank.iter().copied().find(|c| bits & c.bit() != 0)
}

/// What one request's parties tell each other: one byte of what happened,
/// and how often the guest yielded its thread.
///
/// One atomic byte: each party sets its bit with one uncontended atomic
/// operation (nothing on a request that goes well but the head's bit), and
/// every reader loads the whole byte once.
#[derive(Debug, Default)]
pub(super) struct Record {
    /// [`Cause`] bits, [`HEAD_SENT`] and [`RUN_FAILED`].
    bits: AtomicU8,
    /// Epoch ticks at which the guest yielded its thread: a count, not
    /// an event, so it has a word of its own.
    yields: AtomicU32,
}

impl Record {
    /// Records `cause` (the epoch callback, the request body).
    pub(super) fn record(&self, cause: Cause) {
        self.bits.fetch_or(cause.bit(), Ordering::Relaxed);
    }

    /// The cause that decides the request `at` this point, if any.
    pub(super) fn cause(&self, at: At) -> Option<Cause> {
        decode(self.bits.load(Ordering::Relaxed), at)
    }

    /// The guest set its response head (the server sends it on). Noted
    /// while the guest is still in `set`: whatever fails from here on fails
    /// after the head, whichever side of the request notices first.
    pub(super) fn note_head_sent(&self) {
        self.bits.fetch_or(HEAD_SENT, Ordering::Relaxed);
    }

    /// Whether the guest's response head went out.
    pub(super) fn head_sent(&self) -> bool {
        self.bits.load(Ordering::Relaxed) & HEAD_SENT != 0
    }

    /// The guest's run ended in a trap, error or timeout. Set before its
    /// store is dropped (release), so the response body, which ends when
    /// the store goes, sees it (acquire) and ends in an error.
    pub(super) fn note_run_failed(&self) {
        self.bits.fetch_or(RUN_FAILED, Ordering::Release);
    }

    /// Whether the run failed, once: the response body turns its end into
    /// one error, and ends cleanly if polled again. A load first, so a
    /// body that ends well pays no read-modify-write here.
    pub(super) fn take_run_failed(&self) -> bool {
        self.bits.load(Ordering::Acquire) & RUN_FAILED != 0
            && self.bits.fetch_and(!RUN_FAILED, Ordering::Acquire) & RUN_FAILED != 0
    }

    /// The guest yielded its thread at an epoch tick.
    pub(super) fn note_yield(&self) {
        self.yields.fetch_add(1, Ordering::Relaxed);
    }

    /// Epoch ticks at which the guest yielded so far.
    pub(super) fn yields(&self) -> u32 {
        self.yields.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Cause; 3] = [Cause::TimedOut, Cause::BodyTooLarge, Cause::BodyStalled];

    fn recorded(causes: &[Cause]) -> Record {
        let r = Record::default();
        for c in causes {
            r.record(*c);
        }
        r
    }

    #[test]
    fn nothing_recorded_is_no_cause() {
        let r = Record::default();
        assert_eq!(r.cause(At::RunEnd), None);
        assert_eq!(r.cause(At::Head), None);
        // The other bits are not causes.
        r.note_head_sent();
        r.note_run_failed();
        assert_eq!(r.cause(At::RunEnd), None);
        assert_eq!(r.cause(At::Head), None);
    }

    #[test]
    fn each_cause_alone_decodes_to_itself() {
        for c in ALL {
            assert_eq!(recorded(&[c]).cause(At::RunEnd), Some(c), "{c:?}");
        }
        assert_eq!(
            recorded(&[Cause::BodyTooLarge]).cause(At::Head),
            Some(Cause::BodyTooLarge)
        );
        assert_eq!(
            recorded(&[Cause::BodyStalled]).cause(At::Head),
            Some(Cause::BodyStalled)
        );
    }

    #[test]
    fn a_deadline_after_the_head_decides_nothing_there() {
        let r = recorded(&[Cause::TimedOut]);
        assert_eq!(r.cause(At::Head), None);
        assert_eq!(r.cause(At::RunEnd), Some(Cause::TimedOut));
        // With the head out, the body's fault still decides.
        r.record(Cause::BodyStalled);
        assert_eq!(r.cause(At::Head), Some(Cause::BodyStalled));
        assert_eq!(r.cause(At::RunEnd), Some(Cause::TimedOut));
    }

    #[test]
    fn rank_not_order_decides() {
        // Every order of every pair: the higher rank wins either way.
        let ranked = [
            (Cause::TimedOut, Cause::BodyTooLarge),
            (Cause::TimedOut, Cause::BodyStalled),
            (Cause::BodyTooLarge, Cause::BodyStalled),
        ];
        for (high, low) in ranked {
            for order in [[high, low], [low, high]] {
                assert_eq!(recorded(&order).cause(At::RunEnd), Some(high), "{order:?}");
            }
        }
        for order in [
            [Cause::BodyStalled, Cause::BodyTooLarge],
            [Cause::BodyTooLarge, Cause::BodyStalled],
        ] {
            assert_eq!(
                recorded(&order).cause(At::Head),
                Some(Cause::BodyTooLarge),
                "{order:?}"
            );
        }
        assert_eq!(recorded(&ALL).cause(At::RunEnd), Some(Cause::TimedOut));
        assert_eq!(recorded(&ALL).cause(At::Head), Some(Cause::BodyTooLarge));
    }

    #[test]
    fn decode_reads_only_cause_bits() {
        assert_eq!(decode(HEAD_SENT | RUN_FAILED, At::RunEnd), None);
        let stalled = Cause::BodyStalled.bit();
        assert_eq!(
            decode(HEAD_SENT | stalled, At::Head),
            Some(Cause::BodyStalled)
        );
        assert_eq!(decode(0b111, At::RunEnd), Some(Cause::TimedOut));
        assert_eq!(decode(0b110, At::RunEnd), Some(Cause::BodyTooLarge));
    }

    #[test]
    fn head_sent_is_kept_apart_from_the_rest() {
        let r = recorded(&ALL);
        assert!(!r.head_sent());
        r.note_head_sent();
        assert!(r.head_sent());
        r.note_run_failed();
        assert!(r.take_run_failed());
        assert!(r.head_sent(), "taking the failure leaves the head");
        assert_eq!(r.cause(At::RunEnd), Some(Cause::TimedOut));
    }

    #[test]
    fn a_failed_run_is_taken_once() {
        let r = Record::default();
        assert!(!r.take_run_failed());
        r.note_run_failed();
        assert!(r.take_run_failed());
        assert!(!r.take_run_failed(), "the second end is a clean one");
    }

    #[test]
    fn yields_count() {
        let r = Record::default();
        assert_eq!(r.yields(), 0);
        r.note_yield();
        r.note_yield();
        assert_eq!(r.yields(), 2);
    }
}
