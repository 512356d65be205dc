//! Shares: one guest's stalled requests, and a flood of attestation
//! requests, never hold back the rest.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use nacre_tests::{Runtime, guest};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// 300 uploads to guest A that stall after one byte: A holds at most its
/// share of instances (--guest-instances, 64), the stalled bodies end
/// (408) after --client-timeout, well before --request-timeout, and guest
/// B answers at once throughout.
#[tokio::test(flavor = "multi_thread")]
async fn stalled_uploads_to_one_guest_never_starve_another() {
    let rt = Runtime::in_process(&["--client-timeout", "3s", "--request-timeout", "30s"]);
    rt.deploy_ok("a", &guest("faulty"), "").await;
    rt.deploy_ok("b", &guest("hello"), "").await;
    let started = Instant::now();
    let mut stalled = Vec::new();
    for _ in 0..300 {
        let mut s = rt.tls(&["http/1.1"]).await;
        s.write_all(b"POST /a/body HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1000\r\n\r\nx")
            .await
            .unwrap();
        stalled.push(s);
    }
    for _ in 0..5 {
        let t = Instant::now();
        let (status, body) = rt.get("/b/world").await;
        assert_eq!(status, 200, "{body}");
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "B took {:?} with A's uploads stalled",
            t.elapsed()
        );
    }
    let answers = futures::stream::iter(stalled)
        .map(|mut s| async move {
            let mut head = vec![0u8; 12];
            tokio::time::timeout(Duration::from_secs(20), s.read_exact(&mut head))
                .await
                .ok()
                .and_then(Result::ok)
                .map(|_| String::from_utf8_lossy(&head[9..12]).into_owned())
        })
        .buffer_unordered(300)
        .collect::<Vec<_>>()
        .await;
    let took = started.elapsed();
    let count = |code: &str| {
        answers
            .iter()
            .filter(|a| a.as_deref() == Some(code))
            .count()
    };
    let (timed_out, busy) = (count("408"), count("503"));
    assert_eq!(timed_out + busy, 300, "{answers:?}");
    assert!(timed_out >= 64, "{timed_out} stalled bodies ended with 408");
    assert!(busy >= 1, "A's share was not enforced");
    assert!(
        took < Duration::from_secs(15),
        "the stalled uploads took {took:?}; --request-timeout is 30 s"
    );
    assert_eq!(rt.get("/b/world").await.0, 200);
}

/// A flood of /enclave/attestation: past the bound, 503 with Retry-After;
/// meanwhile guests' own documents and a compile go through.
#[tokio::test(flavor = "multi_thread")]
async fn an_attestation_flood_is_bounded_and_holds_back_nobody() {
    let rt = Arc::new(Runtime::in_process(&[]));
    rt.deploy_ok("ag", &guest("attest-guest"), "").await;
    let flood = {
        let rt = rt.clone();
        tokio::spawn(async move {
            let clients: Vec<_> = (0..8).map(|_| rt.client()).collect();
            let url = format!("{}/enclave/attestation?nonce={}", rt.url(), "ab".repeat(20));
            futures::stream::iter((0..600).map(|i| {
                let (c, u) = (clients[i % clients.len()].clone(), url.clone());
                async move {
                    let r = c.get(u).send().await.unwrap();
                    let retry = r.headers().get("retry-after").cloned();
                    (r.status().as_u16(), retry)
                }
            }))
            .buffer_unordered(200)
            .collect::<Vec<_>>()
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let nonce = hex::encode([0x5au8; 20]);
    for _ in 0..10 {
        let (status, body) = rt.get(&format!("/ag/attest?{nonce}")).await;
        assert_eq!(
            status, 200,
            "a guest's own document during the flood: {body}"
        );
    }
    rt.deploy_ok("hello", &guest("hello"), "").await;
    let answers = flood.await.unwrap();
    let busy: Vec<_> = answers.iter().filter(|(s, _)| *s == 503).collect();
    assert!(!busy.is_empty(), "600 documents at once, none refused");
    assert!(
        busy.iter()
            .all(|(_, retry)| retry.as_ref().is_some_and(|r| r == "1")),
        "503 without Retry-After"
    );
    assert!(
        answers.iter().all(|(s, _)| matches!(s, 200 | 503)),
        "{answers:?}"
    );
    assert!(answers.iter().any(|(s, _)| *s == 200));
}
