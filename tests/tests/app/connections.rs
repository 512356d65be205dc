//! A deadline for every phase of a connection, seen from raw sockets.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use nacre_tests::{Runtime, guest};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// An empty SETTINGS frame.
const SETTINGS: &[u8] = &[0, 0, 0, 4, 0, 0, 0, 0, 0];

/// Reads until the peer closes (or the read fails); how long that took,
/// or None if it was still open after `limit`.
async fn closed_within<S: AsyncRead + Unpin>(s: &mut S, limit: Duration) -> Option<Duration> {
    let t = Instant::now();
    let mut buf = [0u8; 4096];
    let ended = tokio::time::timeout(limit, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    ended.ok().map(|()| t.elapsed())
}

/// With `--client-timeout 2s`, a client that goes silent in any phase is
/// let go within the timeout plus the closing grace, while a request that
/// runs longer than the timeout is still answered.
#[tokio::test(flavor = "multi_thread")]
async fn every_phase_of_a_connection_has_a_deadline() {
    let rt = std::sync::Arc::new(Runtime::in_process(&["--client-timeout", "2s"]));
    rt.deploy_ok("f", &guest("faulty"), "").await;
    let limit = Duration::from_secs(20);

    let mut tasks = Vec::new();
    // Before TLS: nothing, or half a ClientHello.
    for (label, bytes) in [
        ("TCP, no ClientHello", &[][..]),
        (
            "half a ClientHello",
            &[0x16, 0x03, 0x01, 0x02, 0x00, 0x01][..],
        ),
    ] {
        let addr = rt.addr;
        tasks.push(tokio::spawn(async move {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            s.write_all(bytes).await.unwrap();
            (label, closed_within(&mut s, limit).await)
        }));
    }
    // After TLS: silent with each ALPN choice, or stopped part-way.
    let cases: [(&str, &[&str], Vec<u8>); 8] = [
        ("no ALPN, silent", &[], vec![]),
        ("h2, silent", &["h2"], vec![]),
        ("http/1.1, silent", &["http/1.1"], vec![]),
        ("h2, part of the preface", &["h2"], PREFACE[..10].to_vec()),
        (
            "h2, preface and SETTINGS, no stream",
            &["h2"],
            [PREFACE, SETTINGS].concat(),
        ),
        (
            "http/1.1, part of a head",
            &["http/1.1"],
            b"GET /f/ok HTTP/1.1\r\nHost: localhost\r\n".to_vec(),
        ),
        (
            "http/1.1, keep-alive after a request",
            &["http/1.1"],
            b"GET /f/ok HTTP/1.1\r\nHost: localhost\r\n\r\n".to_vec(),
        ),
        (
            "no ALPN, keep-alive after a request",
            &[],
            b"GET /f/ok HTTP/1.1\r\nHost: localhost\r\n\r\n".to_vec(),
        ),
    ];
    for (label, alpn, bytes) in cases {
        let rt = rt.clone();
        tasks.push(tokio::spawn(async move {
            let mut s = rt.tls(alpn).await;
            s.write_all(&bytes).await.unwrap();
            (label, closed_within(&mut s, limit).await)
        }));
    }
    // HTTP/2 with no open stream after a request.
    let h2 = rt.clone();
    tasks.push(tokio::spawn(async move {
        let tls = h2.tls(&["h2"]).await;
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                .await
                .unwrap();
        let conn = tokio::spawn(conn);
        let req = http::Request::get("https://localhost/f/ok")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let r = sender.send_request(req).await.unwrap();
        assert_eq!(r.status(), 200);
        r.into_body().collect().await.unwrap();
        let t = Instant::now();
        let ended = tokio::time::timeout(limit, conn).await.is_ok();
        (
            "h2, no open stream after a request",
            ended.then(|| t.elapsed()),
        )
    }));

    for task in tasks {
        let (label, took) = task.await.unwrap();
        let took = took.unwrap_or_else(|| panic!("{label}: still open after {limit:?}"));
        assert!(
            took >= Duration::from_millis(1500) && took < Duration::from_secs(8),
            "{label}: closed after {took:?}"
        );
    }

    // In flight is not idle: a request longer than the timeout is answered
    // over both protocols.
    for client in [
        rt.client_builder().http1_only().build().unwrap(),
        rt.client_builder().http2_prior_knowledge().build().unwrap(),
    ] {
        let r = client
            .get(format!("{}/f/sleep?3000", rt.url()))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.text().await.unwrap(), "slept 3000 ms");
    }
}
