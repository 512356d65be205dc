//! The host proxy on its own: what it answers to bad or refused CONNECTs,
//! its connection cap, and SIGTERM draining.

use std::time::{Duration, Instant};

use nacre_tests::net::{HostProxy, closed_port};
use nacre_tests::temp_dir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UnixStream};

/// An echo server on loopback.
async fn echo() -> String {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = l.accept().await.unwrap();
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

async fn ping(s: &mut TcpStream, msg: &[u8]) -> bool {
    if s.write_all(msg).await.is_err() {
        return false;
    }
    let mut back = vec![0u8; msg.len()];
    matches!(
        tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut back)).await,
        Ok(Ok(_))
    ) && back == msg
}

async fn answer(sock: &std::path::Path, request: &[u8]) -> String {
    let mut s = UnixStream::connect(sock).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn connect_requests_get_the_documented_answers() {
    let target = echo().await;
    let port = target.rsplit(':').next().unwrap();
    let dir = temp_dir("proxy");
    let sock = dir.join("egress.sock");
    let _proxy = HostProxy::start(&[
        "--egress-listen".into(),
        format!("unix:{}", sock.display()),
        "--egress-allow".into(),
        format!("localhost:{port}"),
        "--egress-allow-private".into(),
    ]);
    let ok = format!("CONNECT localhost:{port} HTTP/1.1\r\nHost: localhost:{port}\r\n\r\n");
    let mut s = UnixStream::connect(&sock).await.unwrap();
    s.write_all(ok.as_bytes()).await.unwrap();
    s.write_all(b"through the tunnel").await.unwrap();
    let mut got = vec![0u8; "HTTP/1.1 200 Connection Established\r\n\r\n".len() + 18];
    s.read_exact(&mut got).await.unwrap();
    assert!(got.ends_with(b"\r\n\r\nthrough the tunnel"), "{got:?}");

    let r = answer(&sock, b"CONNECT example.org:443 HTTP/1.1\r\n\r\n").await;
    assert!(r.starts_with("HTTP/1.1 403 "), "{r}");
    let r = answer(&sock, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(r.starts_with("HTTP/1.1 400 "), "{r}");
    let r = answer(&sock, b"CONNECT localhost HTTP/1.1\r\n\r\n").await;
    assert!(r.starts_with("HTTP/1.1 400 "), "{r}");
    // A head that never ends is cut off at the size bound, not buffered.
    let mut huge = b"CONNECT localhost:1 HTTP/1.1\r\nX: ".to_vec();
    huge.extend(std::iter::repeat_n(b'a', 64 * 1024));
    let r = answer(&sock, &huge).await;
    assert!(r.is_empty() || r.starts_with("HTTP/1.1 400 "), "{r}");
    // Allowed but nothing listens (a port held, not listening): 502.
    let (closed_port, _held) = closed_port();
    let dir2 = temp_dir("proxy2");
    let sock2 = dir2.join("egress.sock");
    let _p2 = HostProxy::start(&[
        "--egress-listen".into(),
        format!("unix:{}", sock2.display()),
        "--egress-allow".into(),
        format!("localhost:{closed_port}"),
        "--egress-allow-private".into(),
    ]);
    let r = answer(
        &sock2,
        format!("CONNECT localhost:{closed_port} HTTP/1.1\r\n\r\n").as_bytes(),
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 502 "), "{r}");
}

/// A proxy serving CONNECT on a unix socket of its own, with `args`; the
/// proxy and the socket.
fn egress_proxy(args: &[String]) -> (HostProxy, std::path::PathBuf) {
    let sock = temp_dir("egress").join("egress.sock");
    let mut all = vec![
        "--egress-listen".to_string(),
        format!("unix:{}", sock.display()),
    ];
    all.extend_from_slice(args);
    (HostProxy::start(&all), sock)
}

/// A name in the allow list stands for a public service: one that resolves
/// to loopback (or a private or unspecified address) is refused unless the
/// operator asks for it, while an IP-literal rule is dialled as written.
#[tokio::test(flavor = "multi_thread")]
async fn names_resolving_to_private_addresses_are_refused_by_default() {
    let target = echo().await;
    let port = target.rsplit(':').next().unwrap().to_string();
    let start = |extra: &[&str]| {
        let mut args = vec![
            "--egress-allow".to_string(),
            format!("localhost:{port}"),
            "--egress-allow".into(),
            format!("127.0.0.1:{port}"),
            "--metrics-listen".into(),
            "tcp://127.0.0.1:0".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        egress_proxy(&args)
    };
    let by_name = format!("CONNECT localhost:{port} HTTP/1.1\r\n\r\n");
    let by_ip = format!("CONNECT 127.0.0.1:{port} HTTP/1.1\r\n\r\n");

    let (proxy, sock) = start(&[]);
    let r = answer(&sock, by_name.as_bytes()).await;
    assert!(r.starts_with("HTTP/1.1 403 "), "{r}");
    let log = logged(&proxy, "loopback address").await;
    assert!(log.contains("--egress-allow-private-to"), "{log}");
    let refused = "nacre_proxy_refusals_total{kind=\"egress\",reason=\"address_not_allowed\"}";
    assert_eq!(proxy.metric(refused).await, 1.0);
    let mut s = UnixStream::connect(&sock).await.unwrap();
    s.write_all(by_ip.as_bytes()).await.unwrap();
    let mut head = vec![0u8; "HTTP/1.1 200 Connection Established\r\n\r\n".len()];
    s.read_exact(&mut head).await.unwrap();
    assert!(
        head.starts_with(b"HTTP/1.1 200 "),
        "the IP literal is dialled"
    );

    let (_proxy, sock) = start(&["--egress-allow-private"]);
    let mut s = UnixStream::connect(&sock).await.unwrap();
    s.write_all(by_name.as_bytes()).await.unwrap();
    let mut head = vec![0u8; "HTTP/1.1 200 Connection Established\r\n\r\n".len()];
    s.read_exact(&mut head).await.unwrap();
    assert!(
        head.starts_with(b"HTTP/1.1 200 "),
        "the flag admits the name"
    );
}

/// Asks the proxy at `sock` for a tunnel to `host:port`; the status line
/// of its answer, read without waiting for the tunnel to end.
async fn tunnel(sock: &std::path::Path, host: &str, port: &str) -> String {
    let mut s = UnixStream::connect(sock).await.unwrap();
    let request = format!("CONNECT {host}:{port} HTTP/1.1\r\n\r\n");
    s.write_all(request.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    while !got.windows(2).any(|w| w == b"\r\n") {
        match tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => got.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    let head = String::from_utf8_lossy(&got);
    head.lines().next().unwrap_or_default().to_string()
}

/// The proxy's log once it has a line with `needle` (its stderr arrives
/// through a pipe, a little after the answer it accompanies).
async fn logged(proxy: &HostProxy, needle: &str) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let log = proxy.log();
        if log.contains(needle) {
            return log;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no {needle:?} in the log:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `--egress-allow-private-to` lets its own destinations (sync peers, the
/// leader name) resolve into the parent's network and nothing else: a
/// guest's destination allowed beside them that resolves to loopback is
/// still refused. `--egress-allow-private`, the blunt form, still admits
/// every name, with a warning naming the per-destination flag.
#[tokio::test(flavor = "multi_thread")]
async fn the_private_allowance_is_per_destination() {
    let (peer, guest) = (echo().await, echo().await);
    let peer = peer.rsplit(':').next().unwrap().to_string();
    let guest = guest.rsplit(':').next().unwrap().to_string();
    let start = |blunt: bool| {
        let mut args = vec![
            "--egress-allow-private-to".to_string(),
            format!("localhost:{peer}"),
            "--egress-allow".into(),
            format!("localhost:{guest}"),
        ];
        if blunt {
            args.push("--egress-allow-private".into());
        }
        egress_proxy(&args)
    };

    let (proxy, sock) = start(false);
    let r = tunnel(&sock, "localhost", &peer).await;
    assert!(r.starts_with("HTTP/1.1 200 "), "the peer: {r}");
    let r = tunnel(&sock, "localhost", &guest).await;
    assert!(
        r.starts_with("HTTP/1.1 403 "),
        "the guest's destination: {r}"
    );
    let fix = format!("--egress-allow-private-to localhost:{guest}");
    logged(&proxy, &fix).await;
    // The rule names a port: another port of the name is not allowed.
    let r = tunnel(&sock, "localhost", "1").await;
    assert!(r.starts_with("HTTP/1.1 403 "), "another port: {r}");

    let (proxy, sock) = start(true);
    let r = tunnel(&sock, "localhost", &guest).await;
    assert!(r.starts_with("HTTP/1.1 200 "), "the blunt flag: {r}");
    let log = logged(&proxy, "--egress-allow-private-to HOST:PORT").await;
    assert!(log.contains("WARN"), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cap_holds_and_sigterm_drains() {
    let target = echo().await;
    let mut proxy = HostProxy::start(&[
        "--inbound".into(),
        format!("tcp://127.0.0.1:0=tcp://{target}"),
        "--max-connections".into(),
        "2".into(),
        "--metrics-listen".into(),
        "tcp://127.0.0.1:0".into(),
    ]);
    let addr = proxy.inbound_tcp();
    let mut a = TcpStream::connect(addr).await.unwrap();
    let mut b = TcpStream::connect(addr).await.unwrap();
    assert!(ping(&mut a, b"a").await && ping(&mut b, b"b").await);
    // A third is over the cap: closed at once.
    let mut c = TcpStream::connect(addr).await.unwrap();
    assert!(!ping(&mut c, b"c").await);
    let refused = "nacre_proxy_refusals_total{kind=\"inbound\",reason=\"capacity\"}";
    assert_eq!(proxy.metric(refused).await, 1.0);

    // SIGTERM: no new connections, the open ones keep working.
    proxy.sigterm();
    // The kernel queues connections until the proxy's signal task has
    // closed the listener: wait for that, not a fixed time.
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(addr).await.is_ok() {
        assert!(
            Instant::now() < deadline,
            "still accepting 10 s after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ping(&mut a, b"still here").await);
    assert!(proxy.wait_exit(Duration::from_millis(300)).is_none());
    drop(a);
    drop(b);
    let status = proxy
        .wait_exit(Duration::from_secs(10))
        .expect("exits once drained");
    assert!(status.success(), "{status}");
}
