//! The stack the TCP guest tests run against, and the tools they drive.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nacre_tests::net::{HostProxy, unix_in as unix};

use super::hijack::Hijacker;
use nacre_tests::{Runtime, guest, temp_dir};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `tcp-echo` binds 127.0.0.1:8080 as written, so it is deployed on 8080.
pub(super) const ECHO: u16 = 8080;
pub(super) const PROBE: u16 = 7000;

/// A runtime with `echo` and `probe` as TCP guests and `hello` over HTTP,
/// behind a host proxy; the probe may reach `localhost` on the ports given.
/// The runtime's egress link passes through a [`Hijacker`], which the
/// tests turn hostile.
pub(super) struct Stack {
    pub(super) proxy: HostProxy,
    pub(super) hijacker: Hijacker,
    pub(super) rt: Runtime,
    pub(super) echo: SocketAddr,
    pub(super) probe: SocketAddr,
    pub(super) ca: PathBuf,
    _dir: PathBuf,
}

impl Stack {
    pub(super) async fn start(ports: &[u16]) -> Stack {
        Stack::start_with(ports, &[]).await
    }

    /// [`Stack::start`] with more runtime flags.
    pub(super) async fn start_with(ports: &[u16], runtime_args: &[&str]) -> Stack {
        let dir = temp_dir("tcp-guests");
        let allowed: Vec<String> = ports.iter().map(|p| format!("localhost:{p}")).collect();
        let rt_sock = unix(&dir, "runtime.sock");
        let mut proxy_args: Vec<String> = vec![
            "--inbound".into(),
            format!("tcp://127.0.0.1:0={rt_sock}"),
            "--inbound".into(),
            format!("tcp://127.0.0.1:0={rt_sock}.tcp-{ECHO}"),
            "--inbound".into(),
            format!("tcp://127.0.0.1:0={rt_sock}.tcp-{PROBE}"),
            "--egress-listen".into(),
            unix(&dir, "egress.sock"),
            "--metrics-listen".into(),
            "tcp://127.0.0.1:0".into(),
            "--egress-allow-private".into(),
            "--egress-allow".into(),
            "127.0.0.1:1".into(),
        ];
        for a in &allowed {
            proxy_args.extend(["--egress-allow".to_string(), a.clone()]);
        }
        let proxy = HostProxy::start(&proxy_args);
        let hijacker = Hijacker::start(
            &dir.join("egress-front.sock"),
            proxy.egress.clone().expect("egress listener"),
        );
        let egress = format!("unix:{}", dir.join("egress-front.sock").display());
        let echo_flag = format!("echo={};tcp={ECHO}", guest("tcp-echo").display());
        let probe_flag = format!(
            "probe={};tcp={PROBE};allow={}",
            guest("tcp-probe").display(),
            allowed.join(",")
        );
        let hello_flag = format!("hello={}", guest("hello").display());
        let mut args = runtime_args.to_vec();
        args.extend([
            "--egress",
            &egress,
            "--client-timeout",
            "3s",
            "--guest",
            &echo_flag,
            "--guest",
            &probe_flag,
            "--guest",
            &hello_flag,
        ]);
        let mut rt = Runtime::start_behind(&[], &rt_sock, &args);
        rt.via(proxy.inbound_tcp());
        let tcp = |i: usize| match &proxy.inbound[i] {
            nacre_transport::Address::Tcp { host, port } => {
                format!("{host}:{port}").parse::<SocketAddr>().unwrap()
            }
            other => panic!("inbound {i}: {other}"),
        };
        let (echo, probe) = (tcp(1), tcp(2));
        let ca = rt.ca_file().expect("a test CA");
        let stack = Stack {
            proxy,
            hijacker,
            rt,
            echo,
            probe,
            ca,
            _dir: dir,
        };
        stack.wait_until_answering(stack.probe).await;
        stack.wait_until_answering(stack.echo).await;
        // Boot guests compile one at a time: hello may come last.
        let deadline = Instant::now() + Duration::from_secs(60);
        while stack.rt.get("/hello").await.0 != 200 {
            assert!(Instant::now() < deadline, "hello never deployed");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        stack
    }

    /// The guests start after the runtime: until their listener is bound
    /// the proxy's connection to it fails.
    pub(super) async fn wait_until_answering(&self, at: SocketAddr) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(mut c) = self.connect(at).await
                && c.write_all(b"echo ready\n").await.is_ok()
            {
                let mut buf = [0u8; 64];
                if let Ok(Ok(n)) =
                    tokio::time::timeout(Duration::from_secs(2), c.read(&mut buf)).await
                    && n > 0
                {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "no TCP guest answered at {at}:\n{}",
                self.rt.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits (at most 10 s) for the runtime's log to hold `needle`: it is
    /// written after the connection it is about has gone.
    pub(super) async fn wait_for_log(&self, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.rt.log().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "no {needle:?} in the log:\n{}",
                self.rt.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A TLS connection of our own (rustls), for what the system's clients
    /// cannot do: cut the connection without `close_notify`.
    pub(super) async fn connect(
        &self,
        at: SocketAddr,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
        let config = rustls::ClientConfig::builder()
            .with_root_certificates(self.rt.roots())
            .with_no_client_auth();
        let tcp = tokio::net::TcpStream::connect(at).await?;
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
    }

    /// Sends `lines` with `openssl s_client` (the CA checked, the name
    /// `localhost`) and returns the first `want` lines it prints.
    pub(super) fn s_client(&self, at: SocketAddr, lines: &[&str], want: usize) -> Vec<String> {
        let mut child = Command::new("openssl")
            .args([
                "s_client",
                "-quiet",
                "-verify_return_error",
                "-servername",
                "localhost",
            ])
            .arg("-connect")
            .arg(at.to_string())
            .arg("-CAfile")
            .arg(&self.ca)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("openssl");
        let mut stdin = child.stdin.take().unwrap();
        for l in lines {
            writeln!(stdin, "{l}").unwrap();
        }
        read_lines(child, want)
    }
}

/// `socat - ADDRESS` with `input` on its standard input: what it printed,
/// and how it ended.
pub(super) fn socat(address: &str, input: &[u8]) -> std::process::Output {
    Command::new("socat")
        .args(["-t", "5", "-", address])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin.take().unwrap().write_all(input)?;
            c.wait_with_output()
        })
        .expect("socat (apt-get install socat)")
}

/// The first `want` lines of `child`'s output (within 20 s), then kills it.
fn read_lines(mut child: Child, want: usize) -> Vec<String> {
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while got.len() < want {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => got.push(line),
            Err(_) => break,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    got
}

/// `redis-server` on a free loopback port, killed on drop.
pub(super) struct Redis {
    child: Child,
    pub(super) port: u16,
}

impl Redis {
    pub(super) fn start() -> Redis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--port", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (apt-get install redis-server)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Redis { child, port }
    }

    /// `GET key` with redis' own client.
    pub(super) fn get(&self, key: &str) -> String {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string(), "GET", key])
            .output()
            .expect("redis-cli");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
