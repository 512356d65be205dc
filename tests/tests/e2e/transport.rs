//! Hostile connections: garbage instead of TLS, stalls in the handshake
//! and in the headers. Each is dropped; serving continues; nothing leaks.

use std::sync::Arc;
use std::time::{Duration, Instant};

use nacre_tests::{Runtime, guest};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads until the server closes; returns how long that took.
async fn wait_closed<S: tokio::io::AsyncRead + Unpin>(mut s: S, limit: Duration) -> Duration {
    let t = Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(limit, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return t.elapsed(),
            Ok(Ok(_)) => continue,
            Err(_) => panic!("server kept the connection open past {limit:?}"),
        }
    }
}

async fn open_connections(rt: &Runtime) -> u64 {
    let (_, body) = rt.get("/enclave/debug").await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["connections"]["open"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn garbage_and_stalled_clients_are_dropped_and_serving_continues() {
    let rt = Runtime::start(&["--debug"]);
    rt.deploy_ok("hello", &guest("hello"), "").await;
    let fds_before = rt.fd_count();

    // Garbage instead of a ClientHello: closed at once.
    let mut g = TcpStream::connect(rt.addr).await.unwrap();
    g.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nthis is not TLS")
        .await
        .unwrap();
    let took = wait_closed(g, Duration::from_secs(5)).await;
    assert!(
        took < Duration::from_secs(2),
        "garbage connection lived {took:?}"
    );

    // Connects and says nothing: closed at the handshake timeout.
    let silent = TcpStream::connect(rt.addr).await.unwrap();
    let silent = tokio::spawn(wait_closed(silent, Duration::from_secs(20)));

    // Completes TLS, then stalls halfway through the headers.
    let roots = rt.roots();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(rt.addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    tls.write_all(b"GET /hello HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
        .await
        .unwrap();
    tls.flush().await.unwrap();
    let stalled = tokio::spawn(wait_closed(tls, Duration::from_secs(20)));

    // Meanwhile everyone else is served.
    for _ in 0..5 {
        assert_eq!(rt.get("/hello").await.0, 200);
    }

    let t1 = silent.await.unwrap();
    let t2 = stalled.await.unwrap();
    assert!(
        t1 >= Duration::from_secs(8),
        "silent client dropped too early ({t1:?})"
    );
    assert!(
        t2 >= Duration::from_secs(8),
        "stalled client dropped too early ({t2:?})"
    );
    assert_eq!(rt.get("/hello").await.0, 200);

    // No connection task or descriptor is left behind.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        // The request asking counts itself.
        let open = open_connections(&rt).await;
        if open <= 1 && rt.fd_count() <= fds_before + 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{open} connections still open; fds {} vs {fds_before}",
            rt.fd_count()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
