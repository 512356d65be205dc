//! The real `nacre-host-proxy` with `--store`: store links and the log
//! link on one `--control-listen`, as a runtime makes them.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nacre_control::store::{ObjectName, StoreClient, StoreError};
use nacre_control::{Body, Frame, Level, LogRecord};
use nacre_transport::Address;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A running proxy; killed when dropped.
struct Proxy {
    child: Child,
    lines: mpsc::Receiver<String>,
    control: Address,
    metrics: Address,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proxy {
    fn start(args: &[&str], env: &[(&str, &str)]) -> Proxy {
        let mut command = Command::new(env!("CARGO_BIN_EXE_nacre-host-proxy"));
        command
            .args([
                "--control-listen",
                "tcp://127.0.0.1:0",
                "--metrics-listen",
                "tcp://127.0.0.1:0",
            ])
            .args(args)
            .env("NACRE_LOG", "info")
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .env_remove("AWS_SESSION_TOKEN")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = command.spawn().expect("the proxy starts");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let mut proxy = Proxy {
            child,
            lines,
            control: "tcp://127.0.0.1:1".parse().unwrap(),
            metrics: "tcp://127.0.0.1:1".parse().unwrap(),
        };
        loop {
            let line = proxy.line_with("nacre-host-proxy ");
            if let Some(addr) = line.strip_prefix("nacre-host-proxy control ") {
                proxy.control = addr.parse().unwrap();
            } else if let Some(addr) = line.strip_prefix("nacre-host-proxy metrics ") {
                proxy.metrics = addr.parse().unwrap();
            } else if line == "nacre-host-proxy ready" {
                return proxy;
            }
        }
    }

    /// The next stdout line containing `words`, within 10 s.
    fn line_with(&self, words: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(words) => return line,
                Ok(_) => continue,
                Err(_) => panic!("no stdout line with {words:?} within 10 s"),
            }
        }
    }

    async fn store(&self) -> StoreClient<nacre_transport::Stream> {
        let link = nacre_transport::connect(&self.control).await.unwrap();
        StoreClient::open(link, "test runtime").await.unwrap()
    }

    /// The proxy's metrics, as a scraper reads them.
    async fn metrics(&self) -> String {
        let mut link = nacre_transport::connect(&self.metrics).await.unwrap();
        link.write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut text = String::new();
        link.read_to_string(&mut text).await.unwrap();
        text
    }
}

/// A fresh, empty directory (`--store` wants one that exists).
fn temp_dir(tag: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("nacre-host-proxy-it-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn name(s: &str) -> ObjectName {
    s.parse().unwrap()
}

/// A runtime's log link: its Hello (the log channel, as today's runtime
/// sends it), then one record.
async fn log_line(proxy: &Proxy, message: &str) -> nacre_transport::Stream {
    let mut link = nacre_transport::connect(&proxy.control).await.unwrap();
    let (_, host) = nacre_control::handshake(&mut link, nacre_control::hello("test runtime"))
        .await
        .unwrap();
    assert_eq!(host.channel, 0, "the log channel, as before");
    let record = Frame {
        body: Some(Body::Log(LogRecord {
            unix_ms: nacre_control::now_ms(),
            level: Level::Info as i32,
            target: "test".into(),
            message: message.into(),
            fields: Default::default(),
        })),
    };
    nacre_control::write_frame(&mut link, &record)
        .await
        .unwrap();
    link
}

fn files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.push(p.strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn store_links_and_the_log_link_share_the_control_listener() {
    let dir = temp_dir("store");
    let proxy = Proxy::start(
        &["--store", dir.to_str().unwrap(), "--aws-credentials", "env"],
        &[
            ("AWS_ACCESS_KEY_ID", "ASIAFROMENV"),
            ("AWS_SECRET_ACCESS_KEY", "env-secret"),
            ("AWS_SESSION_TOKEN", "env-token"),
        ],
    );

    // The log link works as it always has…
    let log = log_line(&proxy, "before the store").await;
    assert!(proxy.line_with("before the store").contains("enclave test"));

    // …and store links beside it, several at once.
    let mut a = proxy.store().await;
    let mut b = proxy.store().await;
    assert!(a.host_software().starts_with("nacre-host-proxy "));
    let big: Vec<u8> = (0..3 << 20).map(|i: u32| (i % 253) as u8).collect();
    let (big_name, small_name) = (name("snapshots/big.sealed"), name("snapshots/small.sealed"));
    let (put_a, put_b) = tokio::join!(a.put(&big_name, &big), b.put(&small_name, b"ciphertext"));
    put_a.unwrap();
    put_b.unwrap();
    assert!(a.get(&name("snapshots/big.sealed")).await.unwrap().unwrap() == big);
    assert_eq!(
        b.get(&name("snapshots/small.sealed"))
            .await
            .unwrap()
            .unwrap(),
        b"ciphertext"
    );
    assert_eq!(b.get(&name("snapshots/none")).await.unwrap(), None);
    assert_eq!(
        std::fs::read(dir.join("snapshots/small.sealed")).unwrap(),
        b"ciphertext"
    );
    assert_eq!(
        a.list("snapshots/").await.unwrap(),
        [name("snapshots/big.sealed"), name("snapshots/small.sealed")]
    );
    a.delete(&name("snapshots/big.sealed")).await.unwrap();
    assert_eq!(files(&dir), ["snapshots/small.sealed"]);

    // A create-only put: written, then the name is taken and nothing is.
    let root = name("root/wrapped");
    assert!(a.put_new(&root, b"first root").await.unwrap());
    assert!(!b.put_new(&root, b"second root").await.unwrap());
    assert_eq!(
        std::fs::read(dir.join("root/wrapped")).unwrap(),
        b"first root"
    );
    assert_eq!(
        b.get_at_most(&root, 10).await.unwrap().unwrap(),
        b"first root"
    );
    a.delete(&root).await.unwrap();
    assert_eq!(files(&dir), ["snapshots/small.sealed"]);

    let c = b.credentials().await.unwrap();
    assert_eq!(c.access_key_id, "ASIAFROMENV");
    assert_eq!(c.secret_access_key, "env-secret");
    assert_eq!(c.session_token.as_deref(), Some("env-token"));

    // The log link is still up and printing.
    drop(log);
    let _log = log_line(&proxy, "after the store").await;
    proxy.line_with("after the store");

    // Sixteen store links at once; the seventeenth is told why it is not
    // served, and one closing makes room.
    let mut open = vec![a, b];
    while open.len() < 16 {
        open.push(proxy.store().await);
    }
    for link in &mut open {
        link.list("").await.unwrap();
    }
    let mut over = proxy.store().await;
    let e = over.list("").await.unwrap_err();
    assert!(
        matches!(&e, StoreError::Failed(why) if why.contains("16 store links")),
        "{e}"
    );
    drop(open.pop());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut another = proxy.store().await;
        match another.list("").await {
            Ok(names) => {
                assert_eq!(names, [name("snapshots/small.sealed")]);
                break;
            }
            Err(e) if Instant::now() < deadline => {
                assert!(e.to_string().contains("16 store links"), "{e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("no room after a link closed: {e}"),
        }
    }

    // Counted, in operations and bytes.
    let metrics = proxy.metrics().await;
    for line in [
        r#"nacre_proxy_store_operations_total{op="put",result="ok"} 2"#,
        r#"nacre_proxy_store_operations_total{op="get",result="absent"} 1"#,
        r#"nacre_proxy_store_operations_total{op="credentials",result="ok"} 1"#,
        r#"nacre_proxy_store_operations_total{op="put_new",result="ok"} 1"#,
        r#"nacre_proxy_store_operations_total{op="put_new",result="exists"} 1"#,
        r#"nacre_proxy_store_operations_total{op="unknown",result="busy"}"#,
        "nacre_proxy_store_links ",
    ] {
        assert!(metrics.contains(line), "{line}:\n{metrics}");
    }
    let written = format!(
        r#"nacre_proxy_store_bytes_total{{direction="written"}} {}"#,
        big.len() + 10 + 10
    );
    assert!(metrics.contains(&written), "{written}:\n{metrics}");
    drop(open);
    let _ = std::fs::remove_dir_all(temp_dir("store"));
}

/// `--store DIR` that does not exist (a volume not mounted): the proxy
/// does not start, says how to fix it, and makes nothing.
#[test]
fn a_missing_store_directory_stops_the_proxy() {
    let missing = temp_dir("missing").join("mnt/store");
    let mut child = Command::new(env!("CARGO_BIN_EXE_nacre-host-proxy"))
        .args(["--control-listen", "tcp://127.0.0.1:0", "--store"])
        .arg(&missing)
        .env("NACRE_LOG", "off")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the proxy starts");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the proxy ran on without its --store directory");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(!status.success());
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    let d = missing.display();
    let words = format!(
        "--store {d}: no such directory: create it on durable storage (mkdir -p {d}); the proxy \
         does not make it, so an unmounted volume is never taken for an empty store"
    );
    assert!(stderr.contains(&words), "{stderr}");
    assert!(!missing.parent().unwrap().exists(), "nothing was made");
    let _ = std::fs::remove_dir_all(temp_dir("missing"));
}

#[tokio::test(flavor = "multi_thread")]
async fn without_store_or_credentials_the_answers_name_the_flags() {
    let proxy = Proxy::start(&[], &[("AWS_ACCESS_KEY_ID", "ignored")]);
    let mut link = proxy.store().await;
    let e = link.put(&name("a"), b"x").await.unwrap_err();
    assert!(
        matches!(&e, StoreError::Failed(why) if why.contains("start it with --store DIR")),
        "{e}"
    );
    let e = link.credentials().await.unwrap_err();
    assert!(
        matches!(&e, StoreError::Failed(why) if why.contains("--aws-credentials imds")),
        "{e}"
    );
    // The link is in step after failures.
    let e = link.get(&name("a")).await.unwrap_err();
    assert!(matches!(e, StoreError::Failed(_)), "{e}");

    // A channel this proxy does not know: its Hello answers the log
    // channel, and the link is closed.
    let mut raw = nacre_transport::connect(&proxy.control).await.unwrap();
    let mut hello = nacre_control::hello("future runtime");
    hello.channel = 9;
    let (_, host) = nacre_control::handshake(&mut raw, hello).await.unwrap();
    assert_eq!(host.channel, 0);
    assert!(matches!(
        nacre_control::read_frame(&mut raw).await,
        Err(nacre_control::FrameError::Closed)
    ));

    // Garbage on a store link ends that link only.
    let mut raw = nacre_transport::connect(&proxy.control).await.unwrap();
    let mut hello = nacre_control::hello("bad runtime");
    hello.channel = nacre_control::Channel::Store as i32;
    nacre_control::handshake(&mut raw, hello).await.unwrap();
    raw.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    let answer = nacre_control::read_frame(&mut raw).await.unwrap();
    assert!(
        format!("{answer:?}").contains("65536-byte limit"),
        "{answer:?}"
    );
    let mut link = proxy.store().await;
    assert!(matches!(
        link.list("").await,
        Err(StoreError::Failed(why)) if why.contains("--store")
    ));
}
