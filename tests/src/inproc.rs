//! A runtime in this test process: assembled by the library's composition
//! root ([`nacre_runtime::Runtime::build`]) from the same flags the binary
//! takes, on an async runtime and threads of its own, with its log kept
//! apart from other runtimes' in the same process.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing_subscriber::prelude::*;

/// A runtime served on threads of this process until dropped.
pub(crate) struct InProcess {
    stop: CancellationToken,
    thread: Option<JoinHandle<()>>,
    log: Log,
}

/// One runtime's log records, as text.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<u8>>>);

impl Write for Log {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut log) = self.0.lock() {
            log.extend_from_slice(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl InProcess {
    /// Builds and serves a runtime from `args` (as `nacre-runtime` takes
    /// them, without the program's name); the public listener's bound
    /// address, or why it did not start, with its log.
    pub(crate) fn start(args: Vec<String>, filter: &str) -> Result<(InProcess, String), String> {
        let settings = nacre_runtime::Settings::from_args(
            std::iter::once("nacre-runtime".to_string()).chain(args),
        )
        .map_err(|e| format!("error: {e}"))?;
        let log = Log::default();
        let (control_layer, control) = match &settings.control {
            Some(addr) => {
                let (layer, link) = nacre_runtime::control::channel(addr.clone());
                (Some(layer), Some(link))
            }
            None => (None, None),
        };
        let writer = log.clone();
        let dispatch: tracing::Dispatch = tracing_subscriber::registry()
            .with(tracing_subscriber::EnvFilter::new(filter))
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(false)
                    .with_writer(move || writer.clone()),
            )
            .with(control_layer)
            .into();
        let stop = CancellationToken::new();
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn({
            let stop = stop.clone();
            let dispatch = dispatch.clone();
            move || serve(settings, control, dispatch, stop, tx)
        });
        let bound = rx
            .recv_timeout(Duration::from_secs(60))
            .map_err(|e| format!("the runtime did not start: {e}"))
            .and_then(|r| r);
        let host = InProcess {
            stop,
            thread: Some(thread),
            log,
        };
        match bound {
            Ok(bound) => Ok((host, bound)),
            Err(e) => Err(format!("{e}\n{}", host.log())),
        }
    }

    /// Everything the runtime logged so far.
    pub(crate) fn log(&self) -> String {
        self.log
            .0
            .lock()
            .map(|l| String::from_utf8_lossy(&l).into_owned())
            .unwrap_or_default()
    }

    /// Whether it still serves.
    pub(crate) fn is_running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Stops serving and waits for the runtime's threads.
    pub(crate) fn stop(&mut self) {
        self.stop.cancel();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!("--- in-process runtime log ---\n{}", self.log());
        }
    }
}

/// The runtime's own thread: its async runtime, every worker thread with
/// this runtime's log as the default subscriber.
fn serve(
    settings: nacre_runtime::Settings,
    control: Option<nacre_runtime::control::ControlLink>,
    dispatch: tracing::Dispatch,
    stop: CancellationToken,
    started: std::sync::mpsc::Sender<Result<String, String>>,
) {
    let _default = tracing::dispatcher::set_default(&dispatch);
    let on_start = dispatch.clone();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        // A worker's default subscriber lasts as long as the thread.
        .on_thread_start(move || std::mem::forget(tracing::dispatcher::set_default(&on_start)))
        .build();
    let rt = match rt {
        Ok(rt) => rt,
        Err(e) => {
            let _ = started.send(Err(format!("no async runtime: {e}")));
            return;
        }
    };
    rt.block_on(async move {
        let runtime = match nacre_runtime::Runtime::build(settings, control).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!("{e}");
                let _ = started.send(Err(format!("error: {e}")));
                return;
            }
        };
        let _ = started.send(Ok(runtime.bound().public.to_string()));
        if let Err(e) = runtime.serve(stop).await {
            tracing::error!("{e}");
        }
    });
    // Connections still open would keep their tasks: end them now.
    rt.shutdown_timeout(Duration::from_secs(5));
}
