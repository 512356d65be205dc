//! What clients get at the connection and HTTP level: a deadline for every
//! phase of a connection (raw sockets), early answers that reach the
//! system's curl over HTTP/1.1 and HTTP/2, and request-head limits.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use nacre_tests::{Runtime, TOKEN, guest, temp_dir};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

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

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// An empty SETTINGS frame.
const SETTINGS: &[u8] = &[0, 0, 0, 4, 0, 0, 0, 0, 0];

/// With `--client-timeout 2s`, a client that goes silent in any phase is
/// let go within the timeout plus the closing grace, while a request that
/// runs longer than the timeout is still answered.
#[tokio::test(flavor = "multi_thread")]
async fn every_phase_of_a_connection_has_a_deadline() {
    let rt = std::sync::Arc::new(Runtime::start(&["--client-timeout", "2s"]));
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

/// The answers a server gives before it reads a body (a wrong token, an
/// upload or a body over --max-body) reach the system's curl, status and
/// message, over both protocols, with a length, chunked, and without
/// `Expect: 100-continue`.
#[tokio::test(flavor = "multi_thread")]
async fn early_answers_reach_curl_over_http1_and_http2() {
    let rt = Runtime::start(&["--max-body", "1MiB"]);
    rt.deploy_ok("f", &guest("faulty"), "").await;
    let dir = temp_dir("early");
    let big = dir.join("big.bin");
    std::fs::write(&big, vec![7u8; 5 << 20]).unwrap();
    let big = format!("@{}", big.display());
    let auth = format!("Authorization: Bearer {TOKEN}");
    let cases: [(&str, Vec<&str>, &str, &str); 5] = [
        (
            "wrong token",
            vec![
                "-X",
                "PUT",
                "-H",
                "Authorization: Bearer wrong",
                "--data-binary",
                &big,
                "URL/enclave/guests/x",
            ],
            "401",
            "missing or wrong admin token",
        ),
        (
            "upload over --max-body",
            vec![
                "-X",
                "PUT",
                "-H",
                &auth,
                "--data-binary",
                &big,
                "URL/enclave/guests/x",
            ],
            "413",
            "upload limit (--max-body)",
        ),
        (
            "guest body over --max-body",
            vec!["--data-binary", &big, "URL/f/body"],
            "413",
            "request body is over the 1048576 byte limit",
        ),
        (
            "guest body over --max-body, no Expect",
            vec!["-H", "Expect:", "--data-binary", &big, "URL/f/body"],
            "413",
            "request body is over the 1048576 byte limit",
        ),
        (
            "chunked upload over --max-body, no Expect",
            vec![
                "-X",
                "PUT",
                "-H",
                &auth,
                "-H",
                "Expect:",
                "-H",
                "Transfer-Encoding: chunked",
                "--data-binary",
                &big,
                "URL/enclave/guests/x",
            ],
            "413",
            "upload limit (--max-body)",
        ),
    ];
    for version in ["--http1.1", "--http2"] {
        for (label, args, status, message) in &cases {
            for _ in 0..3 {
                let mut a = vec![version, "-w", "\n%{http_code}"];
                a.extend(args.iter().copied());
                let (ok, out, err) = rt.curl(&a);
                assert!(ok, "{version} {label}: curl failed: {err}");
                assert!(
                    out.ends_with(&format!("\n{status}")) && out.contains(message),
                    "{version} {label}: {out}"
                );
            }
        }
    }
    // Nothing was installed, and the runtime serves on.
    let (ok, out, _) = rt.curl(&["URL/f/ok"]);
    assert!(ok && out == "ok", "{out}");
}

/// Request heads are held to nginx's defaults: 8 KiB a line, 32 KiB in
/// all; 431 past them (414 for the target), over both protocols.
#[tokio::test(flavor = "multi_thread")]
async fn request_heads_over_the_limits_get_431() {
    let rt = Runtime::start(&[]);
    rt.deploy_ok("f", &guest("faulty"), "").await;
    let line = |n: usize| "a".repeat(n);
    let (l7, l9, l100) = (line(7000), line(9000), line(100_000));
    let h = |name: &str, v: &str| format!("{name}: {v}");
    let code = |args: Vec<String>| {
        let mut a = vec![
            "-o".to_string(),
            "/dev/null".into(),
            "-w".into(),
            "%{http_code}".into(),
        ];
        a.extend(args);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        rt.curl(&a).1
    };
    for v in ["--http1.1", "--http2"] {
        let with = |headers: &[String], path: &str| {
            let mut a = vec![v.to_string()];
            for hd in headers {
                a.extend(["-H".to_string(), hd.clone()]);
            }
            a.push(format!("URL{path}"));
            a
        };
        // Three 7 KB lines (21 KB) pass; one 9 KB line or five 7 KB lines
        // (35 KB) do not.
        let three: Vec<String> = ["x-a", "x-b", "x-c"].iter().map(|n| h(n, &l7)).collect();
        assert_eq!(code(with(&three, "/f/ok")), "200", "{v}");
        assert_eq!(code(with(&[h("x-big", &l9)], "/f/ok")), "431", "{v}");
        let five: Vec<String> = ["x-a", "x-b", "x-c", "x-d", "x-e"]
            .iter()
            .map(|n| h(n, &l7))
            .collect();
        assert_eq!(code(with(&five, "/f/ok")), "431", "{v}");
        assert_eq!(code(with(&[], &format!("/f/ok?{l9}"))), "414", "{v}");
        // Far over: never served. Over HTTP/1.1 the 431 arrives (the
        // runtime reads and discards the rest of the head before closing);
        // over HTTP/2 the h2 library ends the connection rather than
        // buffer it.
        let huge = code(with(&[h("x-huge", &l100)], "/f/ok"));
        if v == "--http1.1" {
            assert_eq!(huge, "431", "{v}");
        } else {
            assert!(huge == "431" || huge == "000", "{v}: {huge}");
        }
    }
    let (_, out, _) = rt.curl(&["--http1.1", "-H", &h("x-big", &l9), "URL/f/ok"]);
    assert!(
        out.contains("header x-big") && out.contains("8192"),
        "{out}"
    );
}
