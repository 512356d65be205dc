//! TCP guests end to end: the real host proxy in front (an `--inbound`
//! rule per guest port, to the runtime's unix socket for that port) and
//! behind (egress `CONNECT`), clients nobody here wrote (`openssl
//! s_client`, `socat`), Debian's `redis-server` as a guest's database, and
//! a hostile guest (`tcp-probe`) that tries what it should not.

mod guest_tls;
mod hijack;
mod stack;

use std::time::{Duration, Instant};

use nacre_tests::{guest, nacre, sha256_hex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use self::stack::{ECHO, PROBE, Redis, Stack, socat};

#[tokio::test(flavor = "multi_thread")]
async fn openssl_and_socat_reach_a_tcp_guest_through_the_host_proxy_with_tls_in_the_enclave() {
    let redis = Redis::start();
    let s = Stack::start(&[redis.port]).await;
    let got = s.s_client(s.echo, &["hello over TCP", "and again"], 2);
    assert_eq!(got, ["hello over TCP", "and again"], "{}", s.rt.log());

    let out = socat(
        &format!(
            "OPENSSL:{},cafile={},commonname=localhost",
            s.echo,
            s.ca.display()
        ),
        b"through socat\n",
    );
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
    let s = Stack::start(&[redis.port]).await;
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
    let s = Stack::start(&[redis.port]).await;
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
    let s = Stack::start(&[redis.port]).await;
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

    // A client that sends for ever to a guest that stopped reading is
    // held back, then closed at the idle limit; the guest's other
    // connections go on.
    let mut flood = s.connect(s.probe).await.unwrap();
    flood.write_all(b"deaf\n").await.unwrap();
    let started = Instant::now();
    let chunk = vec![b'z'; 64 << 10];
    let sent = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if flood.write_all(&chunk).await.is_err() || flood.flush().await.is_err() {
                return;
            }
        }
    })
    .await;
    assert!(sent.is_ok(), "a flood into a deaf guest was never closed");
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(s.s_client(s.probe, &["echo alive"], 1), ["alive"]);

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
    let s = Stack::start(&[redis.port]).await;
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
    let out = socat(&format!("TCP:{}", s.echo), b"plain, as sent\n");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "plain, as sent\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn key_value_and_attestation_work_from_a_tcp_guest() {
    let redis = Redis::start();
    let s = Stack::start(&[redis.port]).await;
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
    let binding = s.rt.guest_binding(&doc, &nonce);
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

#[tokio::test(flavor = "multi_thread")]
async fn tcp_guests_and_https_clients_share_the_runtime_s_connection_limit() {
    let s = Stack::start_with(&[], &["--max-connections", "3"]).await;
    // Three held connections, kept busy so the idle limit leaves them be
    // (a slot the start-up checks hold may take a moment to come back).
    let mut held = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while held.len() < 3 {
        assert!(
            Instant::now() < deadline,
            "three connections never held:\n{}",
            s.rt.log()
        );
        match s.connect(s.probe).await {
            Ok(c) => held.push(keep_busy(c)),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
        // One that was let in but then closed does not count.
        tokio::time::sleep(Duration::from_millis(300)).await;
        held.retain(|h: &tokio::task::JoinHandle<()>| !h.is_finished());
    }
    // A fourth, to the other TCP guest, is closed at once.
    let refused = s.connect(s.echo).await;
    assert!(refused.is_err(), "a fourth connection was served");
    s.wait_for_log("TCP connection refused: the runtime serves --max-connections clients already")
        .await;
    // An HTTPS client waits for a slot, and gets one when a TCP client
    // leaves.
    let rt = std::sync::Arc::new(s.rt.client());
    let url = format!("{}/hello", s.rt.url());
    let waiting = tokio::spawn(async move { rt.get(url).send().await.map(|r| r.status()) });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !waiting.is_finished(),
        "an HTTPS client was served past the limit"
    );
    held.pop().unwrap().abort();
    let status = tokio::time::timeout(Duration::from_secs(20), waiting)
        .await
        .expect("the HTTPS client was never served")
        .unwrap()
        .unwrap();
    assert_eq!(status, 200);
}

/// Sends a line on `c` every half second and reads its echo, until the
/// task is aborted (which closes the connection) or the connection ends.
fn keep_busy(
    mut c: tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut buf = [0u8; 64];
        loop {
            if c.write_all(b"echo busy\n").await.is_err() {
                return;
            }
            match c.read(&mut buf).await {
                Ok(n) if n > 0 => {}
                _ => return,
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    })
}
