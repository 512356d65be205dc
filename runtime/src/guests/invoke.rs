//! One HTTP request through one fresh guest instance.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderValue, Request, Response};
use http_body::Body;
use http_body_util::BodyExt;
use nacre_control::bounded;
use tokio::time::Instant;
use wasmtime::{Store, UpdateDeadline};
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;

use super::bodies::{CappedBody, Early, Flags, ResponseBody};
use super::host::Host;
use super::{Guest, GuestEngine};

/// Response bodies as the HTTP server sends them.
pub type GuestBody = wasmtime_wasi_http::p2::body::HyperOutgoingBody;

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
const SHARE_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

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
    guest.stats.requests.fetch_add(1, Ordering::Relaxed);
    if req.body().size_hint().lower() > limits.max_body {
        return Outcome::BodyTooLarge;
    }
    // The guest's share of instances, held until its instance is gone: a
    // guest whose requests stall or pile up waits on its own share only.
    let share = guest.share.instances.clone();
    let permit = match share.clone().try_acquire_owned() {
        Ok(p) => p,
        Err(_) => match tokio::time::timeout(SHARE_WAIT, share.acquire_owned()).await {
            Ok(Ok(p)) => p,
            _ => {
                return Outcome::Busy(format!(
                    "guest {} is running its limit of {} instances at once (--guest-instances); retry shortly",
                    guest.config.name, guest.share.max_instances
                ));
            }
        },
    };
    if let Err(e) = rewrite_uri(&mut req, path_and_query, &guest) {
        return failed(&guest, e);
    }
    let flags = Arc::new(Flags::default());
    let req = req.map(|b| CappedBody {
        inner: b,
        left: limits.max_body,
        limit: limits.max_body,
        flags: flags.clone(),
    });

    let deadline = Instant::now() + limits.request_timeout;
    let mut store = Store::new(
        engine.engine(),
        Host::new(
            &guest.config,
            guest.sha256,
            &limits,
            (engine.memory(), guest.share.clone()),
            engine.enclave(),
            engine.egress(),
            guest.stats.clone(),
        ),
    );
    store.limiter(|h| &mut h.limits);
    store.set_epoch_deadline(1);
    let epoch_flags = flags.clone();
    store.epoch_deadline_callback(move |_| {
        if Instant::now() >= deadline {
            epoch_flags.timed_out.store(true, Ordering::Relaxed);
            Err(wasmtime::Error::msg("request timeout"))
        } else {
            // Yield at every tick: a spinning guest shares its thread.
            // Through tokio's `yield_now`, which wakes the task only after
            // the thread has looked at its sockets and timers: a plain
            // wake-up would put it straight back on the run queue, and a
            // serving thread with nothing else to run would check its
            // sockets only every 61 polls (tokio's event interval), 300 ms
            // of a spinning guest.
            epoch_flags.yields.fetch_add(1, Ordering::Relaxed);
            Ok(UpdateDeadline::YieldCustom(
                1,
                Box::pin(tokio::task::yield_now()),
            ))
        }
    });

    let (tx, mut rx) = tokio::sync::oneshot::channel();
    let prepared = (|| -> wasmtime::Result<_> {
        let req = store
            .data_mut()
            .http()
            .new_incoming_request(Scheme::Https, req)?;
        let head_flags = flags.clone();
        let out = store
            .data_mut()
            .http()
            .new_response_outparam_from_callback(move |head| {
                // Noted while the guest is still in `set`: whatever fails
                // from here on fails after the head, whichever side of the
                // request notices first.
                if head.is_ok() {
                    head_flags.head_sent.store(true, Ordering::Relaxed);
                }
                let _ = tx.send(head);
            })?;
        Ok((req, out))
    })();
    let (wasi_req, out) = match prepared {
        Ok(p) => p,
        Err(e) => {
            let why = bounded::display(&format_args!("{e:#}"), MAX_REASON);
            return failed(&guest, format!("request not accepted: {why}"));
        }
    };

    let pre = guest.pre.clone();
    let task_guest = guest.clone();
    let task_flags = flags.clone();
    // The deadline bounds the whole run: past it the future is dropped,
    // and with it the store, which tears the instance down and drops the
    // response outparam, so the side waiting for the head always hears
    // back. The run reports its own failures; nothing has to wait for it
    // once the head is out.
    let run = async move {
        let _permit = permit;
        let run = async {
            let proxy = pre
                .instantiate_async(&mut store)
                .await
                .map_err(|e| (Stage::Start, e))?;
            proxy
                .wasi_http_incoming_handler()
                .call_handle(&mut store, wasi_req, out)
                .await
                .map_err(|e| (Stage::Run, e))
        };
        let ran = tokio::time::timeout_at(deadline, run).await;
        let ended = Ended::classify(ran, &task_flags, store.data().limits.starved);
        if !matches!(ended, Ended::Done) {
            task_flags.failed.store(true, Ordering::Release);
        }
        // Only now may the instance go: a response body still streaming
        // ends when it does, and `ResponseBody` must already know how.
        drop(store);
        ended.report(&task_guest, &task_flags, limits.request_timeout);
        ended
    };
    let mut run = Run::new(run, guest.clone(), flags.clone());
    let mut head = None;
    let mut early = Early::default();
    // The guest runs here, in the task serving the request, until its
    // response head is out and as long as it keeps writing its body
    // without waiting on anything but the reader: most guests answer and
    // finish in one go, so the whole response is in hand before the
    // server writes it, with no other task, no wake-up across threads and
    // no partial write. The run's deadline holds meanwhile: the timer
    // wakes this task, which the server always polls. A guest that used up
    // an epoch tick in this poll gives the thread back, as it would in a
    // task of its own.
    std::future::poll_fn(|cx| {
        let ticks = flags.yields.load(Ordering::Relaxed);
        loop {
            run.poll_step(cx);
            let yielded = flags.yields.load(Ordering::Relaxed) != ticks;
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
            if early.full() || yielded {
                return Poll::Ready(());
            }
            match Pin::new(resp.body_mut()).poll_frame(cx) {
                // The frame frees the guest's stream: let it go on.
                Poll::Ready(Some(Ok(frame))) => early.push(frame),
                Poll::Ready(Some(Err(e))) => {
                    early.error = Some(e);
                    return Poll::Ready(());
                }
                Poll::Ready(None) => {
                    early.ended = true;
                    return Poll::Ready(());
                }
                // The guest waits on something else (a timer, an outbound
                // call, its request body): answer with what it wrote.
                Poll::Pending => return Poll::Ready(()),
            }
        }
    })
    .await;
    // A guest still running (streaming its body, or busy after it) goes
    // on in a task of its own, so its deadline holds whoever reads the
    // response and however slowly.
    run.detach();

    let Some(head) = head else {
        return failed(&guest, "the guest's run ended without a word".into());
    };
    match head {
        // Whatever the guest made of a body over the limit or cut short
        // by the client, the client hears what went wrong with its body.
        Ok(_) if flags.over_limit.load(Ordering::Relaxed) => Outcome::BodyTooLarge,
        Ok(_) if flags.stalled.load(Ordering::Relaxed) => Outcome::BodyStalled,
        Ok(Ok(resp)) => Outcome::Response(resp.map(|inner| {
            ResponseBody {
                early,
                inner,
                flags,
            }
            .boxed_unsync()
        })),
        Ok(Err(code)) => failed(
            &guest,
            format!("guest returned error {}", bounded::debug(&code, MAX_REASON)),
        ),
        // The instance is gone without answering; its run says why (and
        // has logged it).
        Err(_) => match run.ended().await {
            Ok(Ended::Done) => failed(&guest, "guest returned without setting a response".into()),
            Ok(Ended::Busy(why)) => Outcome::Busy(why.into()),
            Ok(Ended::TimedOut) => Outcome::TimedOut,
            Ok(Ended::BodyTooLarge) => Outcome::BodyTooLarge,
            Ok(Ended::BodyStalled) => Outcome::BodyStalled,
            Ok(Ended::Failed(why)) => Outcome::Failed(why),
            Err(e) => failed(&guest, format!("guest task failed: {e}")),
        },
    }
}

/// A guest's run: driven by the request's own task until the response
/// head is out, then, if it has not ended, by a task of its own.
struct Run {
    state: RunState,
    guest: Arc<Guest>,
    flags: Arc<Flags>,
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
        flags: Arc<Flags>,
    ) -> Run {
        Run {
            state: RunState::Here(Box::pin(run)),
            guest,
            flags,
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
                    let ended = panicked(&self.guest, &self.flags);
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
                let (guest, flags) = (self.guest.clone(), self.flags.clone());
                RunState::Task(tokio::spawn(async move {
                    use futures::FutureExt;
                    match std::panic::AssertUnwindSafe(fut).catch_unwind().await {
                        Ok(ended) => ended,
                        Err(_) => panicked(&guest, &flags),
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
fn panicked(guest: &Guest, flags: &Flags) -> Ended {
    flags.failed.store(true, Ordering::Release);
    let ended = Ended::Failed("the guest's run panicked".into());
    ended.report(guest, flags, std::time::Duration::ZERO);
    ended
}

/// Counts and logs a failure seen before the guest's task could.
fn failed(guest: &Guest, why: String) -> Outcome {
    count_failure(guest, &why);
    Outcome::Failed(why)
}

/// The one place a failed request (500) is counted and logged.
fn count_failure(guest: &Guest, why: &str) {
    guest.stats.traps.fetch_add(1, Ordering::Relaxed);
    tracing::warn!(guest = %guest.config.name, "guest request failed: {why}");
}

/// How a guest's task ended.
enum Ended {
    /// The handler returned.
    Done,
    /// No instance could be had: the process's slots or memory are in use.
    Busy(&'static str),
    /// Stopped at the deadline.
    TimedOut,
    /// The request body went over `--max-body`.
    BodyTooLarge,
    /// The client stopped sending the request body.
    BodyStalled,
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
    fn classify(
        ran: Result<Result<(), (Stage, wasmtime::Error)>, tokio::time::error::Elapsed>,
        flags: &Flags,
        starved: bool,
    ) -> Ended {
        match ran {
            Ok(Ok(())) => Ended::Done,
            Ok(Err((Stage::Start, e))) if e.is::<wasmtime::PoolConcurrencyLimitError>() => {
                Ended::Busy("all guest instance slots are busy; retry shortly")
            }
            Ok(Err((Stage::Start, _))) if starved => Ended::Busy(
                "guest memory is all in use (--guest-memory-total and each guest's share of it); retry shortly",
            ),
            Ok(Err(_)) if flags.timed_out.load(Ordering::Relaxed) => Ended::TimedOut,
            Ok(Err(_)) if flags.over_limit.load(Ordering::Relaxed) => Ended::BodyTooLarge,
            Ok(Err(_)) if flags.stalled.load(Ordering::Relaxed) => Ended::BodyStalled,
            Ok(Err((_, e))) => Ended::Failed(describe(&e)),
            Err(_elapsed) => Ended::TimedOut,
        }
    }

    /// Logs and counts a timeout or failure: before the head as the
    /// request's 504 or 500, after it as a body cut short.
    fn report(&self, guest: &Guest, flags: &Flags, timeout: std::time::Duration) {
        let name = &guest.config.name;
        let stats = &guest.stats;
        if flags.head_sent.load(Ordering::Relaxed) {
            let why = match self {
                Ended::Done | Ended::Busy(_) | Ended::BodyTooLarge | Ended::BodyStalled => return,
                Ended::TimedOut => "timed out while streaming its response",
                Ended::Failed(why) => why,
            };
            stats.traps.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(guest = %name, "guest failed after sending its response head: {why}");
            return;
        }
        match self {
            Ended::TimedOut => {
                stats.timeouts.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(guest = %name, timeout = ?timeout, "guest request timed out; instance stopped");
            }
            Ended::Failed(why) => count_failure(guest, why),
            Ended::Done | Ended::Busy(_) | Ended::BodyTooLarge | Ended::BodyStalled => {}
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
