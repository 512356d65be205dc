//! Child processes that say when they are ready: `nacre dev`, the
//! end-to-end tests and the benchmark all start the runtime, the host
//! proxy and their peers this one way.
//!
//! A [`Supervised`] child has its stdout watched line by line for the line
//! that says it is ready (an address, usually), its stderr kept (in memory
//! or in a log file) to show when something fails, and is killed when
//! dropped, so nothing outlives the caller.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Lines kept for [`Supervised::wait_for`] beyond the ones it has read; a
/// chatty child never blocks on a full pipe, its extra lines are dropped.
const LINES: usize = 4096;

/// Where a child's stderr goes.
#[derive(Debug, Clone)]
pub enum Stderr {
    /// Kept in memory; with `watch`, its lines are also offered to
    /// [`Supervised::wait_for`] (for programs that say "ready" there).
    Keep {
        /// Offer stderr lines to `wait_for` too.
        watch: bool,
    },
    /// Written to this file (created or truncated).
    File(PathBuf),
}

/// A running child process; killed on drop.
pub struct Supervised {
    child: Child,
    name: String,
    /// Under a lock only so a `Supervised` can be shared across threads.
    lines: Mutex<Receiver<String>>,
    kept: Arc<Mutex<String>>,
    /// The thread keeping stderr, while it runs.
    keeper: Option<std::thread::JoinHandle<()>>,
    log: Option<PathBuf>,
    report_on_panic: bool,
}

impl Supervised {
    /// Starts `command` with stdout piped and watched, stderr as `stderr`
    /// says.
    pub fn spawn(mut command: Command, stderr: Stderr) -> std::io::Result<Supervised> {
        let name = command.get_program().to_string_lossy().into_owned();
        command.stdout(Stdio::piped());
        let log = match &stderr {
            Stderr::Keep { .. } => {
                command.stderr(Stdio::piped());
                None
            }
            Stderr::File(path) => {
                command.stderr(File::create(path)?);
                Some(path.clone())
            }
        };
        let mut child = command.spawn()?;
        let (tx, lines) = sync_channel(LINES);
        let kept = Arc::new(Mutex::new(String::new()));
        let keeper = match (child.stderr.take(), stderr) {
            (Some(err), Stderr::Keep { watch }) => {
                Some(pump(err, watch.then(|| tx.clone()), Some(kept.clone())))
            }
            _ => None,
        };
        if let Some(out) = child.stdout.take() {
            pump(out, Some(tx), None);
        }
        Ok(Supervised {
            child,
            name,
            lines: Mutex::new(lines),
            kept,
            keeper,
            log,
            report_on_panic: false,
        })
    }

    /// Prints what the child wrote when it is dropped while the thread
    /// panics: a failing test then explains itself.
    pub fn report_on_panic(mut self) -> Supervised {
        self.report_on_panic = true;
        self
    }

    /// Reads the child's lines until `ready` makes something of one, for at
    /// most `limit`. Fails with what the child wrote when it ends first or
    /// the time runs out.
    pub fn wait_for<T>(
        &mut self,
        limit: Duration,
        mut ready: impl FnMut(&str) -> Option<T>,
    ) -> Result<T, String> {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let next = match self.lines.get_mut() {
                Ok(lines) => lines.recv_timeout(left),
                Err(_) => Err(RecvTimeoutError::Disconnected),
            };
            match next {
                Ok(line) => {
                    if let Some(found) = ready(&line) {
                        return Ok(found);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    return Err(format!(
                        "{} was not ready within {limit:?}; its output:\n{}",
                        self.name,
                        self.output()
                    ));
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait().ok();
                    // Its last words may still be on their way.
                    if let Some(keeper) = self.keeper.take() {
                        let until = Instant::now() + Duration::from_secs(1);
                        while !keeper.is_finished() && Instant::now() < until {
                            std::thread::sleep(Duration::from_millis(10));
                        }
                    }
                    return Err(format!(
                        "{} ended ({}) before it was ready; its output:\n{}",
                        self.name,
                        status.map_or("?".into(), |s| s.to_string()),
                        self.output()
                    ));
                }
            }
        }
    }

    /// What the child wrote to stderr so far.
    pub fn output(&self) -> String {
        match &self.log {
            Some(path) => std::fs::read_to_string(path).unwrap_or_default(),
            None => self.kept.lock().map(|k| k.clone()).unwrap_or_default(),
        }
    }

    /// Process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status, if the child has ended.
    pub fn try_wait(&mut self) -> std::io::Result<Option<ExitStatus>> {
        self.child.try_wait()
    }

    /// Sends SIGTERM (the child's graceful stop); returns at once.
    pub fn terminate(&self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
    }

    /// Waits up to `limit` for the child to end.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the child at once (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        self.kill();
        if self.report_on_panic && std::thread::panicking() {
            eprintln!("---- {} output ----\n{}", self.name, self.output());
        }
    }
}

/// Reads `from` line by line on a thread, appending each line to `keep`
/// (if any) and offering it to `lines` (if any), never blocking the child.
fn pump(
    from: impl Read + Send + 'static,
    lines: Option<SyncSender<String>>,
    keep: Option<Arc<Mutex<String>>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        for line in BufReader::new(from).lines().map_while(Result::ok) {
            if let Some(k) = &keep
                && let Ok(mut k) = k.lock()
            {
                k.push_str(&line);
                k.push('\n');
            }
            if let Some(tx) = &lines {
                let _ = tx.try_send(line);
            }
        }
    })
}

/// Resident set size of process `pid` in bytes, from /proc (Linux).
pub fn rss(pid: u32) -> Option<u64> {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    Some(statm.split_whitespace().nth(1)?.parse::<u64>().ok()? * 4096)
}

/// CPU seconds (user and system) process `pid` (or `"self"`) has used,
/// from /proc (Linux).
pub fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the command name, which is in parentheses.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i)?.parse::<f64>().ok();
    // utime and stime, in clock ticks (100 per second on Linux).
    Some((ticks(11)? + ticks(12)?) / 100.0)
}

/// Peak resident set size of process `pid` in bytes (VmHWM), from /proc.
pub fn peak_rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches(" kB")
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// Open file descriptors of process `pid`, from /proc.
pub fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Command {
        let mut c = Command::new("sh");
        c.args(["-c", script]);
        c
    }

    #[test]
    fn ready_lines_output_and_ends() {
        let mut p = Supervised::spawn(
            sh("echo noise; echo 'ready at 42' ; echo oops >&2; sleep 30"),
            Stderr::Keep { watch: false },
        )
        .unwrap();
        let port = p
            .wait_for(Duration::from_secs(5), |l| {
                l.strip_prefix("ready at ").map(str::to_string)
            })
            .unwrap();
        assert_eq!(port, "42");
        let pid = p.pid();
        assert!(rss(pid).is_some() && fd_count(pid) > 0);
        drop(p);
        assert!(rss(pid).is_none(), "killed on drop");

        let mut early =
            Supervised::spawn(sh("echo bye >&2; exit 3"), Stderr::Keep { watch: false }).unwrap();
        let e = early
            .wait_for(Duration::from_secs(5), |_| Some(()))
            .unwrap_err();
        assert!(e.contains("ended") && e.contains("bye"), "{e}");

        // Programs that say they are ready on stderr.
        let mut on_err = Supervised::spawn(
            sh("echo 'Serving HTTP on x' >&2; sleep 30"),
            Stderr::Keep { watch: true },
        )
        .unwrap();
        assert!(
            on_err
                .wait_for(Duration::from_secs(5), |l| l
                    .starts_with("Serving")
                    .then_some(()))
                .is_ok()
        );
    }
}
