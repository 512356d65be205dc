//! One HTTP request through one fresh guest instance, in steps: `admit`
//! the request to one of the guest's instances, build its store
//! (`new_store`), `bind` the request to the store, `run_guest`,
//! `wait_for_head` while driving the guest in the request's own task, and
//! `finish`. The parties of a request (the epoch callback, the request
//! body, the head callback, the guest's run) record what they saw in the
//! request's [`Record`]; [`decide`] (in [`super::decide`]) turns that and
//! the guest's answer into the request's [`Outcome`], in one place. How a
//! request ends (the [`Outcome`], how the guest's run [`Ended`], the
//! [`Ledger`] of a guest's failures) is in [`super::ended`]; neither file
//! needs anything of this one.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response};
use http_body::Body;
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
use super::bodies::{CappedBody, Early};
use super::decide::{Heard, decide};
use super::ended::{Ended, Ledger, MAX_REASON, Outcome, Stage, panicked};
use super::host::Host;
use super::record::{Cause, Record};
use super::{Guest, GuestEngine, Limits};

/// How long a request waits for one of its guest's instances when the
/// guest is at its `--guest-instances` limit, before 503.
const SHARE_WAIT: Duration = Duration::from_secs(1);

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
        None,
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
        let super::engine::Code::Http(pre) = &guest.code else {
            // Never routed: a TCP guest has no route.
            return Err((
                Stage::Start,
                wasmtime::format_err!("a TCP guest serves no HTTP"),
            ));
        };
        let proxy = pre
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
