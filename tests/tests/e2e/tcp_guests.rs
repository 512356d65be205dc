//! TCP guests end to end: the real host proxy in front (an `--inbound`
//! rule per guest port, to the runtime's unix socket for that port) and
//! behind (egress `CONNECT`), clients nobody here wrote (`openssl
//! s_client`, `socat`), Debian's `redis-server` as a guest's database, and
//! a hostile guest (`tcp-probe`) that tries what it should not.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nacre_tests::net::{HostProxy, unix_in as unix};
use nacre_tests::{Runtime, guest, nacre, sha256_hex, temp_dir};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `tcp-echo` binds 127.0.0.1:8080 as written, so it is deployed on 8080.
const ECHO: u16 = 8080;
const PROBE: u16 = 7000;

/// A runtime with `echo` and `probe` as TCP guests and `hello` over HTTP,
/// behind a host proxy; `redis` is the port the probe may reach.
struct Stack {
    proxy: HostProxy,
    rt: Runtime,
    echo: SocketAddr,
    probe: SocketAddr,
    ca: PathBuf,
    _dir: PathBuf,
}

impl Stack {
    async fn start(redis: u16) -> Stack {
        let dir = temp_dir("tcp-guests");
        let rt_sock = unix(&dir, "runtime.sock");
        let proxy = HostProxy::start(&[
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
            format!("localhost:{redis}"),
            "--egress-allow".into(),
            "127.0.0.1:1".into(),
        ]);
        let egress = proxy.egress.clone().expect("egress listener").to_string();
        let echo_flag = format!("echo={};tcp={ECHO}", guest("tcp-echo").display());
        let probe_flag = format!(
            "probe={};tcp={PROBE};allow=localhost:{redis}",
            guest("tcp-probe").display()
        );
        let hello_flag = format!("hello={}", guest("hello").display());
        let mut rt = Runtime::start_behind(
            &[],
            &rt_sock,
            &[
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
            ],
        );
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
    async fn wait_until_answering(&self, at: SocketAddr) {
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
    async fn wait_for_log(&self, needle: &str) {
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
    async fn connect(
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
    fn s_client(&self, at: SocketAddr, lines: &[&str], want: usize) -> Vec<String> {
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
struct Redis {
    child: Child,
    port: u16,
}

impl Redis {
    fn start() -> Redis {
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
    fn get(&self, key: &str) -> String {
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

#[tokio::test(flavor = "multi_thread")]
async fn openssl_and_socat_reach_a_tcp_guest_through_the_host_proxy_with_tls_in_the_enclave() {
    let redis = Redis::start();
    let s = Stack::start(redis.port).await;
    let got = s.s_client(s.echo, &["hello over TCP", "and again"], 2);
    assert_eq!(got, ["hello over TCP", "and again"], "{}", s.rt.log());

    let out = Command::new("socat")
        .args(["-t", "5", "-"])
        .arg(format!(
            "OPENSSL:{},cafile={},commonname=localhost",
            s.echo,
            s.ca.display()
        ))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin.take().unwrap().write_all(b"through socat\n")?;
            c.wait_with_output()
        })
        .expect("socat");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "through socat\n");
    // Counted as the guest's connections, in /enclave/metrics.
    let handed =
        s.rt.guest_metric(r#"nacre_guest_tcp_connections_total{guest="echo"}"#)
            .await;
    assert!(handed >= 2.0, "{handed}");

    // Plaintext on the TLS port is refused; the guest never sees it.
    let mut raw = tokio::net::TcpStream::connect(s.echo).await.unwrap();
    raw.write_all(b"plain text\n").await.unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), raw.read_to_end(&mut buf)).await;
    assert!(
        !buf.windows(10).any(|w| w == b"plain text"),
        "echoed plaintext"
    );

    // The manifest names the TCP guest, its code, port and TLS mode, and
    // `nacre attest --guest` covers it.
    let (status, manifest) = s.rt.get("/enclave/manifest").await;
    assert_eq!(status, 200);
    let m: serde_json::Value = serde_json::from_str(&manifest).unwrap();
    let echo = m["guests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == "echo")
        .unwrap();
    assert_eq!(
        echo["tcp"],
        serde_json::json!({"port": 8080, "tls": "enclave"})
    );
    assert_eq!(echo["route"], "");
    let sha = sha256_hex(&std::fs::read(guest("tcp-echo")).unwrap());
    assert_eq!(echo["sha256"], sha.as_str());
    let url = format!("https://localhost:{}", s.rt.addr.port());
    let mut args = vec![
        "attest".to_string(),
        url,
        "--guest".into(),
        format!("echo={sha}"),
    ];
    args.extend(s.rt.attest_args());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, out, err) = nacre(&args);
    assert!(ok, "{out}{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_guest_talks_to_redis_through_the_egress_proxy_and_reaches_nothing_else() {
    let redis = Redis::start();
    let s = Stack::start(redis.port).await;
    let egress = r#"nacre_proxy_connections_total{kind="egress"}"#;
    let before = s.proxy.metric(egress).await;
    let target = format!("localhost:{}", redis.port);
    let got = s.s_client(
        s.probe,
        &[
            &format!("redis {target} greeting hello-from-a-guest"),
            "lookup evil.example",
            &format!("connect 127.0.0.1:{}", redis.port),
            "connect 198.18.0.77:80",
            "connect 127.0.0.1:1",
        ],
        5,
    );
    assert_eq!(got[0], "got hello-from-a-guest", "{got:?}\n{}", s.rt.log());
    assert_eq!(redis.get("greeting"), "hello-from-a-guest");
    assert!(
        got[1].starts_with("error"),
        "a name no rule names resolved: {got:?}"
    );
    // An address it found by itself, though the proxy would allow it.
    assert!(got[2].starts_with("error"), "{got:?}");
    assert!(got[3].starts_with("error"), "{got:?}");
    // Allowed by the host proxy, not by the guest's list.
    assert!(got[4].starts_with("error"), "{got:?}");
    // Only the allowed connection reached the host.
    assert_eq!(s.proxy.metric(egress).await - before, 1.0);
    let log = s.rt.log();
    for needle in [
        "name lookup refused: no allow rule names it",
        "connect refused: an address this instance was never given",
        "outbound TCP denied",
    ] {
        assert!(log.contains(needle), "no {needle:?} in the log:\n{log}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hostile_tcp_guest_is_refused_and_affects_only_itself() {
    let redis = Redis::start();
    let s = Stack::start(redis.port).await;
    let log = s.rt.log();
    for (wrong, says) in [
        ("127.0.0.1:7001", "refused"),
        ("10.1.2.3:7000", "refused"),
        ("127.0.0.1:0", "refused"),
        (
            "second listener on 127.0.0.1:7000",
            "refused: address in use",
        ),
    ] {
        assert!(
            log.lines().any(|l| l.contains(wrong) && l.contains(says)),
            "bind {wrong} not {says}:\n{log}"
        );
    }
    let got = s.s_client(s.probe, &["sockets 5000"], 1);
    assert!(
        got[0].starts_with("created 25") && got[0].contains("new-socket-limit"),
        "{got:?}"
    );

    // A guest that traps is started again, and answers.
    let _ = s.s_client(s.probe, &["trap"], 1);
    s.wait_until_answering(s.probe).await;
    s.wait_for_log("TCP guest trapped; starting it again").await;

    // One that spins for ever holds only itself: the other TCP guest and
    // HTTP guests answer meanwhile.
    let mut spinning = s.connect(s.probe).await.unwrap();
    spinning.write_all(b"spin\n").await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    assert_eq!(s.s_client(s.echo, &["still here"], 1), ["still here"]);
    assert_eq!(s.rt.get("/hello").await.0, 200);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );

    // Redeploying it replaces the spinning instance; its connection ends
    // without close_notify, never as a clean end.
    let query = format!("tcp={PROBE}&allow=localhost:{}", redis.port);
    let info = s.rt.deploy_ok("probe", &guest("tcp-probe"), &query).await;
    assert_eq!(info.tcp.map(|t| t.port), Some(PROBE));
    let mut buf = [0u8; 16];
    let ended = tokio::time::timeout(Duration::from_secs(10), spinning.read(&mut buf)).await;
    match ended {
        Ok(Err(e)) => assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof, "{e}"),
        other => panic!("the old instance's connection did not end abruptly: {other:?}"),
    }
    s.wait_until_answering(s.probe).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn silent_clients_are_closed_and_a_cut_client_is_an_error_to_the_guest() {
    let redis = Redis::start();
    let s = Stack::start(redis.port).await;
    // No TLS handshake at all: closed after --client-timeout (3 s).
    let started = Instant::now();
    let mut silent = tokio::net::TcpStream::connect(s.probe).await.unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(15), silent.read(&mut buf)).await;
    assert!(matches!(n, Ok(Ok(0)) | Ok(Err(_))), "{n:?}");
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    // A handshake, then nothing: closed as idle.
    let mut idle = s.connect(s.probe).await.unwrap();
    let n = tokio::time::timeout(Duration::from_secs(15), idle.read(&mut buf)).await;
    assert!(n.is_ok(), "an idle connection stayed open");
    s.wait_for_log("idle past --client-timeout").await;

    // Cut mid-stream (no close_notify): the guest reads an error.
    let mut cut = s.connect(s.probe).await.unwrap();
    cut.write_all(b"collect\n").await.unwrap();
    cut.write_all(&[b'x'; 1000]).await.unwrap();
    cut.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (tcp, _) = cut.into_inner();
    drop(tcp);
    // Closed properly: a clean end.
    let mut clean = s.connect(s.probe).await.unwrap();
    clean.write_all(b"collect\n").await.unwrap();
    clean.write_all(&[b'y'; 500]).await.unwrap();
    clean.shutdown().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = s.rt.log();
        let cut_seen = log.contains("collect ended: error after 1000 bytes");
        let clean_seen = log.contains("collect ended: clean after 500 bytes");
        if cut_seen && clean_seen {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "cut {cut_seen}, clean {clean_seen}:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn with_tls_in_the_guest_the_bytes_reach_it_as_sent() {
    let redis = Redis::start();
    let s = Stack::start(redis.port).await;
    let info =
        s.rt.deploy_ok("echo", &guest("tcp-echo"), &format!("tcp={ECHO}&tls=guest"))
            .await;
    assert_eq!(info.tcp.map(|t| t.tls), Some("guest".to_string()));
    let (_, manifest) = s.rt.get("/enclave/manifest").await;
    assert!(
        manifest.contains(r#""tcp":{"port":8080,"tls":"guest"}"#),
        "{manifest}"
    );
    // A TLS ClientHello's first bytes come back as sent: the runtime did
    // not answer them, the guest got them.
    let hello: &[u8] = b"\x16\x03\x01\x00\x05hello";
    let deadline = Instant::now() + Duration::from_secs(20);
    let echoed = loop {
        let mut c = tokio::net::TcpStream::connect(s.echo).await.unwrap();
        c.write_all(hello).await.unwrap();
        let mut buf = vec![0u8; hello.len()];
        let got = tokio::time::timeout(Duration::from_secs(2), c.read_exact(&mut buf)).await;
        if matches!(got, Ok(Ok(_))) {
            break buf;
        }
        // The new code binds once the old is gone.
        assert!(
            Instant::now() < deadline,
            "no echo in tls=guest mode:\n{}",
            s.rt.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(echoed, hello);
    let out = Command::new("socat")
        .args(["-t", "5", "-"])
        .arg(format!("TCP:{}", s.echo))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin.take().unwrap().write_all(b"plain, as sent\n")?;
            c.wait_with_output()
        })
        .expect("socat");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "plain, as sent\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn key_value_and_attestation_work_from_a_tcp_guest() {
    use nacre_attestation::{GuestBinding, Verifier};
    let redis = Redis::start();
    let s = Stack::start(redis.port).await;
    let nonce = [0x5au8; 16];
    let nonce_hex: String = nonce.iter().map(|b| format!("{b:02x}")).collect();
    let got = s.s_client(
        s.probe,
        &[
            "kv-incr visits",
            "kv-incr visits",
            &format!("attest {nonce_hex}"),
        ],
        3,
    );
    assert_eq!(got[..2], ["count 1", "count 2"], "{got:?}");
    let doc = hex::decode(&got[2]).unwrap_or_else(|e| panic!("{e}: {}", got[2]));
    let root = std::fs::read(s.rt.dev_root.join("root.pem")).unwrap();
    let v = Verifier::with_root_pem(&root)
        .unwrap()
        .nonce(nonce.to_vec())
        .verify(&doc)
        .unwrap();
    let binding = GuestBinding::from_bytes(v.document.user_data.as_deref().unwrap()).unwrap();
    let sha: [u8; 32] = hex::decode(sha256_hex(&std::fs::read(guest("tcp-probe")).unwrap()))
        .unwrap()
        .try_into()
        .unwrap();
    // The runtime names the code that asked: the TCP guest's.
    assert_eq!(binding.guest_sha256, sha);
    assert_eq!(binding.data.as_deref(), Some(&b"tcp-probe"[..]));
    // The count lives in the guest's namespace, across connections.
    assert_eq!(s.s_client(s.probe, &["kv-incr visits"], 1), ["count 3"]);
}
