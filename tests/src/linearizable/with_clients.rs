//! The Python client (`tests/clients/kv_client.py`) against the fake store
//! (`tests/clients/fake_kv_server.py`), honest and lying, and the checker
//! on what the client recorded: the same path a history from a real
//! runtime takes.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use super::*;
use crate::root;

/// The fake store, killed on drop.
struct FakeStore {
    child: Child,
    port: u16,
}

impl FakeStore {
    fn start(args: &[&str]) -> FakeStore {
        let mut child = Command::new("python3")
            .arg(root().join("tests/clients/fake_kv_server.py"))
            .args(["--prefix", "/lin", "--exit-with-stdin"])
            .args(args)
            // Its end of the pipe closes when this process ends, however it
            // ends, and the server with it.
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs (the test command installs it when missing)");
        let mut line = String::new();
        let stdout = child.stdout.take().expect("piped");
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("its port");
        let port = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("not a port: {line:?}"));
        FakeStore { child, port }
    }
}

impl Drop for FakeStore {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the client against a fake store started with `server_args` for a
/// second; the checker's verdict on the history it wrote.
fn verdict(name: &str, server_args: &[&str]) -> Result<Report, Violation> {
    let store = FakeStore::start(server_args);
    let out = std::env::temp_dir().join(format!("nacre-kv-{}-{name}.jsonl", std::process::id()));
    let run = Command::new("python3")
        .arg(root().join("tests/clients/kv_client.py"))
        .arg(format!("http://127.0.0.1:{}/lin", store.port))
        .args([
            "--clients=4",
            "--duration=1",
            "--ops=400",
            "--keys=2",
            "--seed=3",
        ])
        .arg("--out")
        .arg(&out)
        .output()
        .expect("python3 runs");
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "kv_client.py failed: {stderr}");
    let text = std::fs::read_to_string(&out).expect("the history");
    let _ = std::fs::remove_file(&out);
    let events = parse(&text).unwrap_or_else(|e| panic!("{name}: the client wrote {e}"));
    check(&events)
}

#[test]
fn histories_from_the_python_client_pass_or_fail_as_the_store_behaved() {
    let runs: Vec<(&str, &[&str])> = vec![
        ("honest", &["--chaos", "0.05"]),
        ("lose-incr", &["--broken", "lose-incr"]),
        ("stale-read", &["--broken", "stale-read"]),
        ("ack-failed", &["--broken", "ack-failed"]),
    ];
    // Each takes a second of traffic: all at once.
    let verdicts: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (runs.iter())
            .map(|&(name, args)| s.spawn(move || (name, verdict(name, args))))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("no panic"))
            .collect()
    });
    for (name, verdict) in verdicts {
        match (name, verdict) {
            ("honest", Ok(report)) => {
                // Chaos made outcomes unknown and failed, and they passed.
                assert!(report.unknown > 0 && report.failed > 0, "{report}");
                assert!(report.ok > 100, "{report}");
            }
            ("honest", Err(v)) => panic!("an honest store failed the check:\n{v}"),
            // The culprit need not be the lie itself: a stale read may fit
            // until a later answer contradicts it.
            (_, Err(Violation::NotLinearizable(c))) => {
                let text = c.to_string();
                assert!(text.contains("not linearizable"), "{name}: {text}");
            }
            (_, other) => panic!("{name}: expected a violation, got {other:?}"),
        }
    }
}
