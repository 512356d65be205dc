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
    /// Connections handed to this lane and not yet closed (queued ones
    /// included).
    open: Arc<AtomicUsize>,
    /// The lane's runtime, for its count of live tasks: HTTP/2 streams and
    /// guests still running after their connection closed weigh too.
    handle: tokio::runtime::Handle,
}

impl Lane {
    /// How busy the lane is: a new connection goes to the least busy.
    fn load(&self) -> usize {
        self.open.load(Ordering::Relaxed) + self.handle.metrics().num_alive_tasks()
    }
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
    pub(super) async fn start(n: usize, name: &str) -> io::Result<Lanes> {
        let mut lanes = Vec::with_capacity(n.max(1));
        for i in 0..n.max(1) {
            let (jobs, mut queue) = mpsc::unbounded_channel::<Job>();
            let (ready, handle) = tokio::sync::oneshot::channel();
            std::thread::Builder::new()
                .name(format!("{name}-{i}"))
                .spawn(move || {
                    // Made on its own thread, so that no runtime is ever
                    // dropped inside the caller's async context.
                    let rt = match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(rt) => rt,
                        Err(e) => {
                            let _ = ready.send(Err(e));
                            return;
                        }
                    };
                    let _ = ready.send(Ok(rt.handle().clone()));
                    rt.block_on(async move {
                        while let Some(job) = queue.recv().await {
                            tokio::spawn(job);
                        }
                    });
                    // Dropping `rt` here cancels what is left: the caller
                    // drained its connections before ending the queue.
                })?;
            let handle = handle
                .await
                .map_err(|_| io::Error::other("a serving thread stopped while starting"))??;
            lanes.push(Lane {
                jobs,
                open: Arc::new(AtomicUsize::new(0)),
                handle,
            });
        }
        Ok(Lanes { lanes })
    }

    /// Runs `job` on the lane with the fewest connections. `job` starts on
    /// that lane's thread, so whatever it registers (sockets, timers,
    /// tasks) belongs to that lane.
    pub(super) fn run(&self, job: impl Future<Output = ()> + Send + 'static) {
        let Some(lane) = self.lanes.iter().min_by_key(|l| l.load()) else {
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
    use tokio::sync::watch;

    async fn next<T>(rx: &mut mpsc::UnboundedReceiver<T>) -> T {
        tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("a job ran")
            .expect("the job reported")
    }

    fn thread_name() -> String {
        std::thread::current()
            .name()
            .expect("lane threads are named")
            .to_owned()
    }

    #[tokio::test]
    async fn jobs_run_on_the_lanes_threads_spread_by_load() {
        let lanes = Lanes::start(2, "test-lane").await.unwrap();
        assert_eq!(lanes.len(), 2);
        let (tx, mut rx) = mpsc::unbounded_channel();
        let (hold_tx, hold_rx) = watch::channel(false);
        let mut names = Vec::new();
        for _ in 0..4 {
            let tx = tx.clone();
            let mut hold = hold_rx.clone();
            lanes.run(async move {
                tx.send(thread_name()).unwrap();
                // Stay open, so the next job sees this lane busy.
                let _ = hold.wait_for(|v| *v).await;
            });
            names.push(next(&mut rx).await);
        }
        assert_eq!(
            names,
            ["test-lane-0", "test-lane-1", "test-lane-0", "test-lane-1"]
        );
        hold_tx.send(true).unwrap();
    }

    /// Work a connection leaves running after it closed (a guest still
    /// computing, HTTP/2 streams) weighs on its lane: new connections go
    /// elsewhere.
    #[tokio::test]
    async fn tasks_left_running_count_against_their_lane() {
        let lanes = Lanes::start(2, "busy-lane").await.unwrap();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let (hold_tx, hold_rx) = watch::channel(false);
        let (tx1, mut hold) = (tx.clone(), hold_rx.clone());
        lanes.run(async move {
            tokio::spawn(async move {
                let _ = hold.wait_for(|v| *v).await;
            });
            tx1.send(thread_name()).unwrap();
        });
        assert_eq!(next(&mut rx).await, "busy-lane-0");
        // The connection itself has ended; its task has not.
        tokio::time::timeout(Duration::from_secs(5), async {
            while lanes.lanes[0].open.load(Ordering::Relaxed) != 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the job ended");
        lanes.run(async move {
            tx.send(thread_name()).unwrap();
        });
        assert_eq!(next(&mut rx).await, "busy-lane-1");
        hold_tx.send(true).unwrap();
    }
}
