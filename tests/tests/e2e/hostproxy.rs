//! The host proxy on its own: what it answers to bad or refused CONNECTs,
//! its connection cap, and SIGTERM draining.

use std::time::Duration;

use nacre_tests::net::HostProxy;
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
    // Allowed but nothing listens: 502.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_port = closed.local_addr().unwrap().port();
    drop(closed);
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

/// A name in the allow list stands for a public service: one that resolves
/// to loopback (or a private or unspecified address) is refused unless the
/// operator asks for it, while an IP-literal rule is dialled as written.
#[tokio::test(flavor = "multi_thread")]
async fn names_resolving_to_private_addresses_are_refused_by_default() {
    let target = echo().await;
    let port = target.rsplit(':').next().unwrap().to_string();
    let start = |extra: &[&str]| {
        let sock = temp_dir("private").join("egress.sock");
        let mut args = vec![
            "--egress-listen".to_string(),
            format!("unix:{}", sock.display()),
            "--egress-allow".into(),
            format!("localhost:{port}"),
            "--egress-allow".into(),
            format!("127.0.0.1:{port}"),
            "--metrics-listen".into(),
            "tcp://127.0.0.1:0".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        (HostProxy::start(&args), sock)
    };
    let by_name = format!("CONNECT localhost:{port} HTTP/1.1\r\n\r\n");
    let by_ip = format!("CONNECT 127.0.0.1:{port} HTTP/1.1\r\n\r\n");

    let (proxy, sock) = start(&[]);
    let r = answer(&sock, by_name.as_bytes()).await;
    assert!(r.starts_with("HTTP/1.1 403 "), "{r}");
    let log = proxy.log();
    assert!(
        log.contains("loopback address") && log.contains("--egress-allow-private"),
        "{log}"
    );
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
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(TcpStream::connect(addr).await.is_err(), "still accepting");
    assert!(ping(&mut a, b"still here").await);
    assert!(proxy.wait_exit(Duration::from_millis(300)).is_none());
    drop(a);
    drop(b);
    let status = proxy
        .wait_exit(Duration::from_secs(10))
        .expect("exits once drained");
    assert!(status.success(), "{status}");
}
