//! Serving threads ("lanes"): one single-threaded async runtime per core,
//! each serving the connections handed to it from the handshake to the
//! close, with every task those connections start (HTTP/2 streams, guests
//! still running after their answer) on the same thread.
//!
//! On the multi-threaded runtime a request's wake-ups crossed between
//! worker threads, and a worker that found work woke an idle one to steal
//! some: context switches and wake-ups that cost more CPU per request than
//! the work they moved (bench/TUNING.md). A guest that computes still
//! yields at every epoch tick, so the other connections of its lane are
//! served between its slices, as they were between tasks before.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::mpsc;

/// One connection's whole life, to be run on a lane.
pub(super) type Job = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The lanes of one listener. Dropping this ends them once their queues
/// are empty; the caller drains the connections first.
pub(super) struct Lanes {
    lanes: Vec<Lane>,
}

struct Lane {
    jobs: mpsc::UnboundedSender<Job>,
    /// Connections on this lane now: a new one goes to the least busy.
    open: Arc<AtomicUsize>,
}

/// Counts a connection on its lane while it lives.
struct Open(Arc<AtomicUsize>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Lanes {
    /// Starts `n` lanes (at least one), named `name-0`, `name-1`, ….
    pub(super) fn start(n: usize, name: &str) -> io::Result<Lanes> {
        let mut lanes = Vec::with_capacity(n.max(1));
        for i in 0..n.max(1) {
            // Built here, so a failure is the caller's error at startup
            // rather than a lane that silently never runs.
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let (jobs, mut queue) = mpsc::unbounded_channel::<Job>();
            std::thread::Builder::new()
                .name(format!("{name}-{i}"))
                .spawn(move || {
                    rt.block_on(async move {
                        while let Some(job) = queue.recv().await {
                            tokio::spawn(job);
                        }
                    });
                    // Dropping `rt` here cancels what is left: the caller
                    // drained its connections before ending the queue.
                })?;
            lanes.push(Lane {
                jobs,
                open: Arc::new(AtomicUsize::new(0)),
            });
        }
        Ok(Lanes { lanes })
    }

    /// Runs `job` on the lane with the fewest connections. `job` starts on
    /// that lane's thread, so whatever it registers (sockets, timers,
    /// tasks) belongs to that lane.
    pub(super) fn run(&self, job: impl Future<Output = ()> + Send + 'static) {
        let Some(lane) = self
            .lanes
            .iter()
            .min_by_key(|l| l.open.load(Ordering::Relaxed))
        else {
            return;
        };
        lane.open.fetch_add(1, Ordering::Relaxed);
        let open = Open(lane.open.clone());
        let job: Job = Box::pin(async move {
            let _open = open;
            job.await
        });
        if let Err(mpsc::error::SendError(job)) = lane.jobs.send(job) {
            // The lane's thread is gone (it can only panic out of a task's
            // poll, which tokio catches): serve here rather than drop the
            // client.
            tracing::error!("a serving thread has stopped; serving on the main runtime");
            tokio::spawn(job);
        }
    }

    /// How many lanes there are.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lanes.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn jobs_run_on_the_lanes_threads_spread_by_load() {
        let lanes = Lanes::start(2, "test-lane").unwrap();
        assert_eq!(lanes.len(), 2);
        let (tx, mut rx) = mpsc::unbounded_channel();
        let (hold_tx, hold_rx) = tokio::sync::watch::channel(false);
        for _ in 0..4 {
            let tx = tx.clone();
            let mut hold = hold_rx.clone();
            lanes.run(async move {
                let name = std::thread::current().name().map(str::to_owned);
                tx.send(name).unwrap();
                // Stay open, so the next job sees this lane busy.
                let _ = hold.wait_for(|v| *v).await;
            });
        }
        let mut names = Vec::new();
        for _ in 0..4 {
            let name = tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .expect("a job ran")
                .unwrap();
            names.push(name.expect("lane threads are named"));
        }
        names.sort();
        assert_eq!(
            names,
            ["test-lane-0", "test-lane-0", "test-lane-1", "test-lane-1"]
        );
        hold_tx.send(true).unwrap();
    }
}
