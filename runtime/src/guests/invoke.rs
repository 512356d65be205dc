//! One HTTP request through one fresh guest instance, in steps: `admit`
//! the request to one of the guest's instances, build its store
//! (`new_store`), `bind` the request to the store, `run_guest`,
//! `wait_for_head` while driving the guest in the request's own task, and
//! `finish`. The parties of a request (the epoch callback, the request
//! body, the head callback, the guest's run) record what they saw in the
//! request's [`Record`]; `decide` turns that and the guest's answer into
//! the request's [`Outcome`], in one place.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response};
use http_body::Body;
use http_body_util::BodyExt;
use nacre_control::bounded;
use tokio::sync::{OwnedSemaphorePermit, oneshot};
use tokio::time::Instant;
use wasmtime::component::Resource;
use wasmtime::{Store, StoreContextMut, UpdateDeadline};
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::p2::bindings::http::types::{ErrorCode, Scheme};
use wasmtime_wasi_http::p2::types::{HostIncomingRequest, HostResponseOutparam};

// Named where `guests` has always taken it from; defined with the bodies,
// so that they need nothing of this module.
pub use super::bodies::GuestBody;
use super::bodies::{CappedBody, Early, ResponseBody};
use super::host::Host;
use super::record::{At, Cause, Record};
use super::stats::GuestStats;
use super::{Guest, GuestEngine, GuestName, Limits};

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

/// How long a request waits for one of its guest's instances when the
/// guest is at its `--guest-instances` limit, before 503.
const SHARE_WAIT: Duration = Duration::from_secs(1);

/// Bytes of a failure's reason kept. The reason can be the guest's own
/// words (the string of an `error-code` it returned, the names in its
/// trap): cut here, before any log line is made of it, so every log sink
/// gets a bounded line and a 16 MiB error string costs no more than this.
const MAX_REASON: usize = 4 * 1024;
/// Bytes of a guest's wasm backtrace logged (its frames carry the
/// guest's own function names).
const MAX_BACKTRACE: usize = 8 * 1024;

/// Runs `req` on a fresh instance of `guest`. `path_and_query` is what the
/// guest sees (its route prefix already removed).
pub async fn invoke<B>(
    engine: &GuestEngine,
    guest: Arc<Guest>,
    mut req: Request<B>,
    path_and_query: &str,
) -> Outcome
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<wasmtime_wasi_http::Error>,
{
    let limits = engine.limits();
    let declared = req.body().size_hint().lower();
    let permit = match admit(&guest, declared, limits.max_body).await {
        Ok(permit) => permit,
        Err(refused) => return refused,
    };
    if let Err(e) = rewrite_uri(&mut req, path_and_query, &guest) {
        return Ledger::of(&guest).failed(e);
    }
    let record = Arc::new(Record::default());
    let deadline = Instant::now() + limits.request_timeout;
    let store = new_store(engine, &guest, &limits, &record, deadline);
    let (bound, head_rx) = match bind(store, req, limits.max_body, &record) {
        Ok(bound) => bound,
        Err(e) => {
            let why = bounded::display(&format_args!("{e:#}"), MAX_REASON);
            return Ledger::of(&guest).failed(format!("request not accepted: {why}"));
        }
    };
    let run = run_guest(
        bound,
        permit,
        guest.clone(),
        record.clone(),
        deadline,
        limits.request_timeout,
    );
    let mut run = Run::new(run, guest.clone(), record.clone());
    let (head, early) = wait_for_head(&mut run, head_rx, &record).await;
    // A guest still running (streaming its body, or busy after it) goes
    // on in a task of its own, so its deadline holds whoever reads the
    // response and however slowly.
    run.detach();
    finish(head, early, record, &mut run, &guest).await
}

/// Step 1, admission: counts the request, refuses a body declared over
/// `--max-body` (413) and takes one of the guest's instances (503 if none
/// frees up within [`SHARE_WAIT`]). The permit is held until the instance
/// is gone: a guest whose requests stall or pile up waits on its own share
/// only.
async fn admit(
    guest: &Guest,
    declared_body: u64,
    max_body: u64,
) -> Result<OwnedSemaphorePermit, Outcome> {
    guest.stats.requests.fetch_add(1, Ordering::Relaxed);
    if declared_body > max_body {
        return Err(Outcome::BodyTooLarge);
    }
    let share = &guest.share.instances;
    if let Ok(permit) = share.clone().try_acquire_owned() {
        return Ok(permit);
    }
    match tokio::time::timeout(SHARE_WAIT, share.clone().acquire_owned()).await {
        Ok(Ok(permit)) => Ok(permit),
        _ => Err(Outcome::Busy(format!(
            "guest {} is running its limit of {} instances at once (--guest-instances); retry shortly",
            guest.config.name, guest.share.max_instances
        ))),
    }
}

/// Step 2, the store: fresh state for one request to `guest`, its memory
/// limited, and stopped at `deadline` by its epoch callback.
fn new_store(
    engine: &GuestEngine,
    guest: &Guest,
    limits: &Limits,
    record: &Arc<Record>,
    deadline: Instant,
) -> Store<Host> {
    let host = Host::new(
        &guest.config,
        guest.sha256,
        limits,
        (engine.memory(), guest.share.clone()),
        engine.enclave(),
        engine.egress(),
        guest.stats.clone(),
    );
    let mut store = Store::new(engine.engine(), host);
    store.limiter(|h| &mut h.limits);
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(on_epoch(record.clone(), deadline));
    store
}

/// The store's callback at every epoch tick: past `deadline` it records
/// the timeout and stops the guest; before it, the guest yields its thread.
fn on_epoch(
    record: Arc<Record>,
    deadline: Instant,
) -> impl FnMut(StoreContextMut<'_, Host>) -> wasmtime::Result<UpdateDeadline> + Send + Sync + 'static
{
    move |_| {
        if Instant::now() >= deadline {
            record.record(Cause::TimedOut);
            Err(wasmtime::Error::msg("request timeout"))
        } else {
            // Yield at every tick: a spinning guest shares its thread.
            // Through tokio's `yield_now`, which wakes the task only after
            // the thread has looked at its sockets and timers: a plain
            // wake-up would put it straight back on the run queue, and a
            // serving thread with nothing else to run would check its
            // sockets only every 61 polls (tokio's event interval), 300 ms
            // of a spinning guest.
            record.note_yield();
            Ok(UpdateDeadline::YieldCustom(
                1,
                Box::pin(tokio::task::yield_now()),
            ))
        }
    }
}

/// A request bound to its store: what the guest's run takes.
struct Bound {
    store: Store<Host>,
    request: Resource<HostIncomingRequest>,
    outparam: Resource<HostResponseOutparam>,
}

/// Where the guest's response head arrives: a response or an error code,
/// or the sender dropped unused when the instance went without setting it.
type HeadRx = oneshot::Receiver<Result<Response<GuestBody>, ErrorCode>>;

/// Step 3, binding: `req`, its body capped at `max_body`, becomes the
/// guest's incoming request in `store`, and the response outparam's
/// callback sends the guest's head to the receiver returned.
fn bind<B>(
    mut store: Store<Host>,
    req: Request<B>,
    max_body: u64,
    record: &Arc<Record>,
) -> wasmtime::Result<(Bound, HeadRx)>
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<wasmtime_wasi_http::Error>,
{
    let req = req.map(|body| CappedBody::new(body, max_body, record.clone()));
    let (tx, rx) = oneshot::channel();
    let mut http = store.data_mut().http();
    let request = http.new_incoming_request(Scheme::Https, req)?;
    let head_record = record.clone();
    let outparam = http.new_response_outparam_from_callback(move |head| {
        if head.is_ok() {
            head_record.note_head_sent();
        }
        let _ = tx.send(head);
    })?;
    let bound = Bound {
        store,
        request,
        outparam,
    };
    Ok((bound, rx))
}

/// Step 4, the guest's run: instantiates it and calls its handler within
/// the deadline, then says how that ended, and logs and counts it.
///
/// The deadline bounds the whole run: past it the future is dropped, and
/// with it the store, which tears the instance down and drops the response
/// outparam, so the side waiting for the head always hears back. The run
/// reports its own failures; nothing has to wait for it once the head is
/// out.
async fn run_guest(
    bound: Bound,
    _permit: OwnedSemaphorePermit,
    guest: Arc<Guest>,
    record: Arc<Record>,
    deadline: Instant,
    timeout: Duration,
) -> Ended {
    let Bound {
        mut store,
        request,
        outparam,
    } = bound;
    let run = async {
        let proxy = guest
            .pre
            .instantiate_async(&mut store)
            .await
            .map_err(|e| (Stage::Start, e))?;
        proxy
            .wasi_http_incoming_handler()
            .call_handle(&mut store, request, outparam)
            .await
            .map_err(|e| (Stage::Run, e))
    };
    let ran = tokio::time::timeout_at(deadline, run).await.ok();
    let ended = Ended::classify(ran, &record, store.data().limits.starved);
    if !matches!(ended, Ended::Done) {
        record.note_run_failed();
    }
    // Only now may the instance go: a response body still streaming
    // ends when it does, and `ResponseBody` must already know how.
    drop(store);
    ended.report(Ledger::of(&guest), &record, timeout);
    ended
}

/// The guest's head as the request's task got it: what the guest set, or
/// the sender gone unused.
type Head = Result<Result<Response<GuestBody>, ErrorCode>, oneshot::error::RecvError>;

/// Step 5, waiting for the head: the guest runs here, in the task serving
/// the request, until its response head is out and as long as it keeps
/// writing its body without waiting on anything but the reader.
///
/// Most guests answer and finish in one go, so the whole response is in
/// hand before the server writes it, with no other task, no wake-up across
/// threads and no partial write. The run's deadline holds meanwhile: the
/// timer wakes this task, which the server always polls. A guest that used
/// up an epoch tick in this poll gives the thread back, as it would in a
/// task of its own.
async fn wait_for_head(run: &mut Run, mut rx: HeadRx, record: &Record) -> (Option<Head>, Early) {
    let mut head = None;
    let mut early = Early::default();
    std::future::poll_fn(|cx| {
        let ticks = record.yields();
        loop {
            run.poll_step(cx);
            let yielded = record.yields() != ticks;
            let resp = match &mut head {
                Some(Ok(Ok(resp))) => resp,
                Some(_) => return Poll::Ready(()),
                None => match Pin::new(&mut rx).poll(cx) {
                    Poll::Ready(h) => {
                        head = Some(h);
                        continue;
                    }
                    Poll::Pending => return Poll::Pending,
                },
            };
            if early.full() || yielded || !early.take_frame(resp.body_mut(), cx) {
                return Poll::Ready(());
            }
        }
    })
    .await;
    (head, early)
}

/// Step 6, finishing: what the guest's head said or, when the instance
/// went without setting one, how its run ended (waited for); then the
/// outcome.
async fn finish(
    head: Option<Head>,
    early: Early,
    record: Arc<Record>,
    run: &mut Run,
    guest: &Guest,
) -> Outcome {
    let heard = match head {
        Some(Ok(Ok(resp))) => Heard::Response(resp),
        Some(Ok(Err(code))) => Heard::ErrorCode(code),
        // The instance is gone without answering; its run says why (and
        // has logged it).
        Some(Err(_)) => Heard::Ended(run.ended().await),
        None => Heard::Nothing,
    };
    decide(heard, early, record, Ledger::of(guest))
}

/// What the request's task heard from the guest.
enum Heard {
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
fn decide(heard: Heard, early: Early, record: Arc<Record>, ledger: Ledger<'_>) -> Outcome {
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

/// The outcome a recorded cause makes of a request.
fn outcome_of(cause: Cause) -> Outcome {
    match cause {
        Cause::TimedOut => Outcome::TimedOut,
        Cause::BodyTooLarge => Outcome::BodyTooLarge,
        Cause::BodyStalled => Outcome::BodyStalled,
    }
}

/// A guest's run: driven by the request's own task until the response
/// head is out, then, if it has not ended, by a task of its own.
struct Run {
    state: RunState,
    guest: Arc<Guest>,
    record: Arc<Record>,
}

enum RunState {
    /// Driven by whoever polls `poll_step`.
    Here(Pin<Box<dyn Future<Output = Ended> + Send>>),
    /// Ended while driven here.
    Ended(Ended),
    /// Went on in a task of its own.
    Task(tokio::task::JoinHandle<Ended>),
    /// The outcome was taken.
    Taken,
}

impl Run {
    fn new(
        run: impl Future<Output = Ended> + Send + 'static,
        guest: Arc<Guest>,
        record: Arc<Record>,
    ) -> Run {
        Run {
            state: RunState::Here(Box::pin(run)),
            guest,
            record,
        }
    }

    /// Drives the run while it is here; a panic in it ends it as a
    /// failure rather than taking the connection's task down.
    fn poll_step(&mut self, cx: &mut Context<'_>) {
        if let RunState::Here(fut) = &mut self.state {
            let polled =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| fut.as_mut().poll(cx)));
            match polled {
                Ok(Poll::Pending) => {}
                Ok(Poll::Ready(ended)) => self.state = RunState::Ended(ended),
                Err(_) => {
                    let ended = panicked(&self.guest, &self.record);
                    let old = std::mem::replace(&mut self.state, RunState::Ended(ended));
                    // Its store goes with it; a second panic there stays here.
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(old)));
                }
            }
        }
    }

    /// Moves a run that has not ended into a task of its own.
    fn detach(&mut self) {
        self.state = match std::mem::replace(&mut self.state, RunState::Taken) {
            RunState::Here(fut) => {
                let (guest, record) = (self.guest.clone(), self.record.clone());
                RunState::Task(tokio::spawn(async move {
                    use futures::FutureExt;
                    match std::panic::AssertUnwindSafe(fut).catch_unwind().await {
                        Ok(ended) => ended,
                        Err(_) => panicked(&guest, &record),
                    }
                }))
            }
            other => other,
        };
    }

    /// How the run ended, waiting for it if it has not yet.
    async fn ended(&mut self) -> Result<Ended, tokio::task::JoinError> {
        match std::mem::replace(&mut self.state, RunState::Taken) {
            RunState::Ended(ended) => Ok(ended),
            RunState::Task(task) => task.await,
            RunState::Here(fut) => Ok(fut.await),
            RunState::Taken => Ok(Ended::Failed(
                "the guest's outcome was already taken".into(),
            )),
        }
    }
}

impl Drop for Run {
    /// A request dropped before its head (the client went away) leaves
    /// the guest to finish within its deadline, as a task of its own.
    fn drop(&mut self) {
        if let RunState::Here(_) = self.state
            && tokio::runtime::Handle::try_current().is_ok()
        {
            self.detach();
        }
    }
}

/// A guest's run that panicked (a bug of the runtime's, never the
/// guest's): reported like a trap, before or after the head.
fn panicked(guest: &Guest, record: &Record) -> Ended {
    record.note_run_failed();
    let ended = Ended::Failed("the guest's run panicked".into());
    ended.report(Ledger::of(guest), record, Duration::ZERO);
    ended
}

/// Where a guest's failures are counted and logged: its name and its
/// counters, which is all the outcome needs of a [`Guest`] (and can be
/// had without compiling one, in tests).
#[derive(Clone, Copy)]
struct Ledger<'a> {
    name: &'a GuestName,
    stats: &'a GuestStats,
}

impl<'a> Ledger<'a> {
    fn of(guest: &'a Guest) -> Ledger<'a> {
        Ledger {
            name: &guest.config.name,
            stats: &guest.stats,
        }
    }

    /// Counts and logs a failure seen before the guest's task could.
    fn failed(self, why: String) -> Outcome {
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
enum Ended {
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
enum Stage {
    /// Making the instance.
    Start,
    /// Running the handler.
    Run,
}

impl Ended {
    /// How the run ended, from what it returned (`None`: the deadline's
    /// timer fired first) and what the request recorded.
    fn classify(
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
    fn report(&self, ledger: Ledger<'_>, record: &Record, timeout: Duration) {
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
    fn into_outcome(self, ledger: Ledger<'_>) -> Outcome {
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

/// Gives the guest the path below its route, keeping the query, and says
/// which prefix was removed.
fn rewrite_uri<B>(req: &mut Request<B>, path_and_query: &str, guest: &Guest) -> Result<(), String> {
    let mut parts = req.uri().clone().into_parts();
    parts.path_and_query = Some(
        path_and_query
            .parse()
            .map_err(|e| format!("bad path {path_and_query:?}: {e}"))?,
    );
    *req.uri_mut() = http::Uri::from_parts(parts).map_err(|e| format!("bad URI: {e}"))?;
    let prefix = HeaderValue::from_str(guest.config.route.as_str()).map_err(|e| e.to_string())?;
    req.headers_mut().insert("x-forwarded-prefix", prefix);
    Ok(())
}

#[cfg(test)]
mod tests {
    use http_body_util::Empty;
    use wasmtime::Trap;

    use super::*;

    /// A guest's name and counters, as a [`Ledger`] borrows them.
    struct Books {
        name: GuestName,
        stats: GuestStats,
    }

    impl Books {
        fn new() -> Books {
            Books {
                name: "tested".parse().expect("a guest name"),
                stats: GuestStats::default(),
            }
        }

        fn ledger(&self) -> Ledger<'_> {
            Ledger {
                name: &self.name,
                stats: &self.stats,
            }
        }

        /// (traps, timeouts)
        fn counts(&self) -> (u64, u64) {
            (
                self.stats.traps.load(Ordering::Relaxed),
                self.stats.timeouts.load(Ordering::Relaxed),
            )
        }
    }

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
