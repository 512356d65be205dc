//! Serving threads ("lanes"): one single-threaded async runtime per core,
//! each serving the connections handed to it from the handshake to the
//! close, with the tasks those connections start (guests still running
//! after their answer, HTTP/2 streams while the lane is not much busier
//! than the others) on the same thread.
//!
//! On the multi-threaded runtime a request's wake-ups crossed between
//! worker threads, and a worker that found work woke an idle one to steal
//! some: context switches and wake-ups that cost more CPU per request than
//! the work they moved (bench/TUNING.md). A guest that computes still
//! yields at every epoch tick, so the other connections of its lane are
//! served between its slices, as they were between tasks before.

use std::cell::Cell;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::runtime::Handle;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

thread_local! {
    /// The lane this thread runs, if it is one.
    static HOME: Cell<Option<usize>> = const { Cell::new(None) };
}

/// The lanes of one listener. [`Lanes::stop`] or dropping this ends them:
/// the caller drains the connections first.
pub(super) struct Lanes {
    lanes: Vec<Lane>,
    stop: CancellationToken,
}

impl Drop for Lanes {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

struct Lane {
    handle: Handle,
    /// Connections handed to this lane and not yet closed.
    open: Arc<AtomicUsize>,
}

impl Lane {
    /// How busy the lane is: its connections and its live tasks (HTTP/2
    /// streams, guests still running after their connection closed).
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
        let stop = CancellationToken::new();
        for i in 0..n.max(1) {
            let (ready, handle) = oneshot::channel();
            let stopped = stop.clone().cancelled_owned();
            // The lanes log where their creator logs: the process's
            // subscriber in `nacre-runtime`, or the one a runtime embedded
            // in a larger process (the in-process tests) was given.
            let logs = tracing::dispatcher::get_default(Clone::clone);
            std::thread::Builder::new()
                .name(format!("{name}-{i}"))
                .spawn(move || {
                    let _logs = tracing::dispatcher::set_default(&logs);
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
                    HOME.with(|h| h.set(Some(i)));
                    let _ = ready.send(Ok(rt.handle().clone()));
                    // Runs the tasks spawned onto this lane until the lanes
                    // stop; dropping `rt` then cancels what is left.
                    rt.block_on(stopped);
                })?;
            let handle = handle
                .await
                .map_err(|_| io::Error::other("a serving thread stopped while starting"))??;
            lanes.push(Lane {
                handle,
                open: Arc::new(AtomicUsize::new(0)),
            });
        }
        Ok(Lanes { lanes, stop })
    }

    /// Ends every lane, cancelling the tasks still on them (connections
    /// past the drain, the streams and guests they started).
    pub(super) fn stop(&self) {
        self.stop.cancel();
    }

    fn least_busy(&self) -> Option<(usize, usize)> {
        self.lanes
            .iter()
            .enumerate()
            .map(|(i, l)| (i, l.load()))
            .min_by_key(|&(_, load)| load)
    }

    /// Runs `job`, a connection's whole life, on the lane with the least
    /// load. `job` starts on that lane's thread, so whatever it registers
    /// (sockets, timers, tasks) belongs to that lane.
    pub(super) fn run(&self, job: impl Future<Output = ()> + Send + 'static) {
        let Some((i, _)) = self.least_busy() else {
            return;
        };
        let lane = &self.lanes[i];
        lane.open.fetch_add(1, Ordering::Relaxed);
        let open = Open(lane.open.clone());
        lane.handle.spawn(async move {
            let _open = open;
            job.await
        });
    }

    /// Runs `task`, started by a connection (an HTTP/2 stream), on the
    /// connection's own lane, unless that lane carries more than twice
    /// the load of the least busy one: then there. Streams of one busy
    /// connection thus spread over the cores, at the price of wake-ups
    /// across threads, while connections spread evenly stay on their own.
    pub(super) fn spawn_near<F>(&self, task: F)
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let Some(home) = HOME.with(Cell::get).filter(|&i| i < self.lanes.len()) else {
            // Not on a lane (tests, or a caller on the main runtime).
            tokio::spawn(task);
            return;
        };
        // One pass over the loads, the home lane's among them.
        let mut home_load = 0;
        let mut least = (home, usize::MAX);
        for (i, lane) in self.lanes.iter().enumerate() {
            let load = lane.load();
            if i == home {
                home_load = load;
            }
            if load < least.1 {
                least = (i, load);
            }
        }
        let target = if home_load > 2 * least.1 + 2 {
            least.0
        } else {
            home
        };
        self.lanes[target].handle.spawn(task);
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
    use tokio::sync::{mpsc, watch};

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

    /// A connection's streams stay on its lane while the lanes carry
    /// similar loads, and go to the least busy lane once its own carries
    /// more than twice as much: one busy HTTP/2 connection uses every core.
    #[tokio::test]
    async fn streams_stay_home_unless_home_is_much_busier() {
        let lanes = Arc::new(Lanes::start(2, "near-lane").await.unwrap());
        let (tx, mut rx) = mpsc::unbounded_channel();
        let (hold_tx, hold_rx) = watch::channel(false);
        let near = lanes.clone();
        let (tx1, hold1) = (tx.clone(), hold_rx.clone());
        lanes.run(async move {
            // Balanced: both lanes idle but for this connection.
            let t = tx1.clone();
            near.spawn_near(async move { t.send((1, thread_name())).unwrap() });
            // Twenty streams held open on this lane make it far busier.
            for _ in 0..20 {
                let mut hold = hold1.clone();
                tokio::spawn(async move {
                    let _ = hold.wait_for(|v| *v).await;
                });
            }
            let t = tx1.clone();
            near.spawn_near(async move { t.send((2, thread_name())).unwrap() });
            let mut hold = hold1.clone();
            let _ = hold.wait_for(|v| *v).await;
        });
        // The two streams run on different threads, in either order.
        let mut ran = vec![next(&mut rx).await, next(&mut rx).await];
        ran.sort();
        assert_eq!(
            ran,
            [(1, "near-lane-0".to_owned()), (2, "near-lane-1".to_owned())]
        );
        hold_tx.send(true).unwrap();
    }
}
