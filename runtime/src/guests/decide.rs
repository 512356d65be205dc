//! The request's outcome, decided once: what the request's task heard
//! from the guest ([`Heard`]) and what the request's parties recorded
//! become its [`Outcome`] in [`decide`]. The request's steps are in
//! [`mod@super::invoke`]; how the guest's run ended, and where failures are
//! counted, in [`super::ended`].

use std::sync::Arc;

use http::Response;
use http_body_util::BodyExt;
use nacre_control::bounded;
use wasmtime_wasi_http::p2::bindings::http::types::ErrorCode;

use super::bodies::{Early, GuestBody, ResponseBody};
use super::ended::{Ended, Ledger, MAX_REASON, Outcome, outcome_of};
use super::record::{At, Record};

/// What the request's task heard from the guest.
pub(super) enum Heard {
    /// The guest set its response head.
    Response(Response<GuestBody>),
    /// The guest set an error code instead.
    ErrorCode(ErrorCode),
    /// The instance went without setting either: how its run ended, or
    /// why that could not be known.
    Ended(Result<Ended, tokio::task::JoinError>),
    /// The wait for the head ended without one (it never should).
    Nothing,
}

/// The request's outcome, decided once, from what its task heard from the
/// guest and what its parties recorded. Failures counted nowhere else are
/// counted and logged here; the run's own were, by [`Ended::report`].
pub(super) fn decide(
    heard: Heard,
    early: Early,
    record: Arc<Record>,
    ledger: Ledger<'_>,
) -> Outcome {
    // Whatever the guest made of a body over the limit or cut short by
    // the client, the client hears what went wrong with its body.
    if let Heard::Response(_) | Heard::ErrorCode(_) = heard
        && let Some(cause) = record.cause(At::Head)
    {
        return outcome_of(cause);
    }
    match heard {
        Heard::Response(resp) => Outcome::Response(resp.map(|inner| {
            ResponseBody {
                early,
                inner,
                record,
            }
            .boxed_unsync()
        })),
        Heard::ErrorCode(code) => ledger.failed(format!(
            "guest returned error {}",
            bounded::debug(&code, MAX_REASON)
        )),
        Heard::Ended(Ok(ended)) => ended.into_outcome(ledger),
        Heard::Ended(Err(e)) => ledger.failed(format!("guest task failed: {e}")),
        Heard::Nothing => ledger.failed("the guest's run ended without a word".into()),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;
    use http_body_util::Empty;
    use wasmtime::Trap;

    use super::*;
    use crate::guests::ended::Stage;
    use crate::guests::ended::tests::Books;
    use crate::guests::record::Cause;

    /// An outcome, comparable: `Outcome` holds a response, which is not.
    fn shown(outcome: &Outcome) -> String {
        match outcome {
            Outcome::Response(_) => "response".into(),
            Outcome::Failed(why) => format!("500 {why}"),
            Outcome::TimedOut => "504".into(),
            Outcome::BodyTooLarge => "413".into(),
            Outcome::BodyStalled => "408".into(),
            Outcome::Busy(why) => format!("503 {why}"),
        }
    }

    fn recorded(causes: &[Cause]) -> Arc<Record> {
        let record = Arc::new(Record::default());
        for cause in causes {
            record.record(*cause);
        }
        record
    }

    fn response() -> Response<GuestBody> {
        Response::new(
            Empty::<Bytes>::new()
                .map_err(|never| match never {})
                .boxed_unsync(),
        )
    }

    fn trapped() -> Option<Result<(), (Stage, wasmtime::Error)>> {
        Some(Err((
            Stage::Run,
            wasmtime::Error::new(Trap::UnreachableCodeReached),
        )))
    }

    /// What `run_guest` does as the run ends, then what `finish` decides
    /// when the guest went without a head.
    fn run_without_head(
        ran: Option<Result<(), (Stage, wasmtime::Error)>>,
        record: Arc<Record>,
        starved: bool,
        books: &Books,
    ) -> String {
        let ended = Ended::classify(ran, &record, starved);
        ended.report(books.ledger(), &record, Duration::from_secs(1));
        let outcome = decide(
            Heard::Ended(Ok(ended)),
            Early::default(),
            record,
            books.ledger(),
        );
        shown(&outcome)
    }

    fn with_head(heard: Heard, record: Arc<Record>, books: &Books) -> String {
        shown(&decide(heard, Early::default(), record, books.ledger()))
    }

    #[test]
    fn each_cause_before_the_head_is_its_status_and_counter() {
        // (cause, outcome, traps, timeouts), as the router and metrics
        // have them.
        let cases = [
            (Cause::TimedOut, "504", 0, 1),
            (Cause::BodyTooLarge, "413", 0, 0),
            (Cause::BodyStalled, "408", 0, 0),
        ];
        for (cause, status, traps, timeouts) in cases {
            let books = Books::new();
            let got = run_without_head(trapped(), recorded(&[cause]), false, &books);
            assert_eq!(got, status, "{cause:?}");
            assert_eq!(books.counts(), (traps, timeouts), "{cause:?}");
        }
    }

    #[test]
    fn the_deadline_timer_is_a_timeout() {
        let books = Books::new();
        assert_eq!(run_without_head(None, recorded(&[]), false, &books), "504");
        assert_eq!(books.counts(), (0, 1));
    }

    #[test]
    fn a_trap_is_a_500_counted_once() {
        let books = Books::new();
        let got = run_without_head(trapped(), recorded(&[]), false, &books);
        assert_eq!(got, format!("500 trap: {}", Trap::UnreachableCodeReached));
        assert_eq!(books.counts(), (1, 0));
    }

    #[test]
    fn a_handler_returning_without_a_head_is_a_500() {
        let books = Books::new();
        let got = run_without_head(Some(Ok(())), recorded(&[]), false, &books);
        assert_eq!(got, "500 guest returned without setting a response");
        assert_eq!(books.counts(), (1, 0));
    }

    #[test]
    fn a_start_without_memory_is_a_503_and_no_failure() {
        let books = Books::new();
        let failed_start = || Some(Err((Stage::Start, wasmtime::Error::msg("memory refused"))));
        let got = run_without_head(failed_start(), recorded(&[]), true, &books);
        assert_eq!(
            got,
            "503 guest memory is all in use (--guest-memory-total and each guest's share of it); retry shortly"
        );
        assert_eq!(books.counts(), (0, 0));
        // Not starved, the same error is the guest's failure.
        let got = run_without_head(failed_start(), recorded(&[]), false, &books);
        assert_eq!(got, "500 memory refused");
        assert_eq!(books.counts(), (1, 0));
    }

    #[test]
    fn a_deadline_outranks_the_body_it_followed() {
        // A guest that read a body over the limit, ignored the error and
        // spun until the deadline.
        let books = Books::new();
        let record = recorded(&[Cause::BodyTooLarge, Cause::TimedOut]);
        assert_eq!(run_without_head(trapped(), record, false, &books), "504");
        assert_eq!(books.counts(), (0, 1));
    }

    #[test]
    fn with_a_head_the_body_decides_and_the_deadline_does_not() {
        let cases: [(&[Cause], &str); 5] = [
            (&[], "response"),
            (&[Cause::TimedOut], "response"),
            (&[Cause::BodyTooLarge], "413"),
            (&[Cause::BodyStalled], "408"),
            (
                &[Cause::BodyStalled, Cause::BodyTooLarge, Cause::TimedOut],
                "413",
            ),
        ];
        for (causes, status) in cases {
            let books = Books::new();
            let got = with_head(Heard::Response(response()), recorded(causes), &books);
            assert_eq!(got, status, "{causes:?}");
            assert_eq!(books.counts(), (0, 0), "{causes:?}");
        }
    }

    #[test]
    fn an_error_code_is_a_500_unless_the_body_went_wrong() {
        let code = || ErrorCode::HttpRequestDenied;
        let books = Books::new();
        let got = with_head(Heard::ErrorCode(code()), recorded(&[]), &books);
        assert_eq!(got, format!("500 guest returned error {:?}", code()));
        assert_eq!(books.counts(), (1, 0));

        let books = Books::new();
        let record = recorded(&[Cause::BodyStalled]);
        assert_eq!(with_head(Heard::ErrorCode(code()), record, &books), "408");
        assert_eq!(books.counts(), (0, 0));
    }

    #[test]
    fn a_wait_that_heard_nothing_is_a_500() {
        let books = Books::new();
        let got = with_head(Heard::Nothing, recorded(&[]), &books);
        assert_eq!(got, "500 the guest's run ended without a word");
        assert_eq!(books.counts(), (1, 0));
    }

    #[tokio::test]
    async fn a_lost_run_task_is_a_500() {
        let task = tokio::spawn(std::future::pending::<Ended>());
        task.abort();
        let lost = task.await.err().expect("an aborted task");
        let why = format!("500 guest task failed: {lost}");
        let books = Books::new();
        assert_eq!(
            with_head(Heard::Ended(Err(lost)), recorded(&[]), &books),
            why
        );
        assert_eq!(books.counts(), (1, 0));
    }
}
