//! docs/operating.md (limits): traps, loops, memory bombs and oversized bodies each fail
//! their own request only.

use std::time::{Duration, Instant};

use futures::StreamExt;
use nacre_tests::{Runtime, guest};

async fn faulty(extra: &[&str]) -> Runtime {
    let rt = Runtime::in_process(extra);
    rt.deploy_ok("f", &guest("faulty"), "").await;
    rt
}

/// The longest of ten `GET /f/ok`, each from a new client (connection,
/// TLS handshake and request).
async fn slowest_of_ten_oks(rt: &Runtime) -> Duration {
    let mut slowest = Duration::ZERO;
    for _ in 0..10 {
        let t = Instant::now();
        assert_eq!(rt.get("/f/ok").await, (200, "ok".into()));
        slowest = slowest.max(t.elapsed());
    }
    slowest
}

/// No guest state survives from one request to the next: a static counter
/// and a value kept on the heap read as new on every request, one after
/// another on one connection (HTTP/1.1 and HTTP/2) and many at once.
#[tokio::test(flavor = "multi_thread")]
async fn every_request_gets_a_fresh_instance() {
    let rt = faulty(&[]).await;
    let h1 = rt.client_builder().http1_only().build().unwrap();
    for (proto, client) in [("h1", h1), ("h2", rt.client())] {
        for i in 0..30 {
            let token = format!("{proto}-seq-{i}");
            let r = client
                .get(format!("{}/f/remember?{token}", rt.url()))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            assert_eq!(r.text().await.unwrap(), format!("calls=1 first={token}"));
        }
        let answers = futures::stream::iter(0..64)
            .map(|i| {
                let client = client.clone();
                let url = format!("{}/f/remember?{proto}-par-{i}", rt.url());
                async move {
                    (
                        i,
                        client.get(url).send().await.unwrap().text().await.unwrap(),
                    )
                }
            })
            .buffer_unordered(64)
            .collect::<Vec<_>>()
            .await;
        for (i, body) in answers {
            assert_eq!(body, format!("calls=1 first={proto}-par-{i}"));
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn trap_is_500_and_the_next_request_succeeds() {
    let rt = faulty(&[]).await;
    let (status, body) = rt.get("/f/trap").await;
    assert_eq!(status, 500);
    assert!(body.contains("guest f failed"), "{body}");
    assert!(
        !body.contains("unreachable"),
        "trap details stay in the log: {body}"
    );
    assert_eq!(rt.get("/f/ok").await, (200, "ok".into()));
}

#[tokio::test(flavor = "multi_thread")]
async fn infinite_loop_is_504_within_the_timeout_and_others_keep_running() {
    let rt = faulty(&["--request-timeout", "2s"]).await;
    let client = rt.client();
    let url = format!("{}/f/loop", rt.url());
    let started = Instant::now();
    let looping =
        tokio::spawn(async move { client.get(url).send().await.unwrap().status().as_u16() });

    // While it spins, other requests are served promptly.
    tokio::time::sleep(Duration::from_millis(200)).await;
    for _ in 0..10 {
        let t = Instant::now();
        assert_eq!(rt.get("/f/ok").await, (200, "ok".into()));
        assert!(
            t.elapsed() < Duration::from_millis(1500),
            "a looping guest delayed another request"
        );
    }

    assert_eq!(looping.await.unwrap(), 504);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(4),
        "504 after {took:?}"
    );
    assert_eq!(rt.get("/f/ok").await, (200, "ok".into()));

    // A guest blocked in a host call is stopped too.
    let t = Instant::now();
    assert_eq!(rt.get("/f/sleep?60000").await.0, 504);
    assert!(t.elapsed() < Duration::from_secs(4));
}

/// A guest that spins between the chunks of its body gives its thread
/// back at every epoch tick after its head, as before it: requests to
/// others are not held up behind it.
#[tokio::test(flavor = "multi_thread")]
async fn a_guest_spinning_while_it_streams_shares_its_thread() {
    let rt = faulty(&["--request-timeout", "10s"]).await;
    let drips: Vec<_> = (0..4)
        .map(|_| {
            let client = rt.client();
            let url = format!("{}/f/drip?60,10", rt.url());
            tokio::spawn(async move {
                let r = client.get(url).send().await.unwrap();
                (r.status().as_u16(), r.text().await.unwrap())
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let slowest = slowest_of_ten_oks(&rt).await;
    assert!(
        slowest < Duration::from_millis(300),
        "a guest spinning between chunks held up another request for {slowest:?}"
    );
    for drip in drips {
        assert_eq!(drip.await.unwrap(), (200, ".".repeat(60)));
    }
}

/// Connections are served on one thread per core, and a spinning guest
/// shares its thread with the connections there: with two looping guests
/// on every serving thread, a new client still gets its TLS handshake and
/// its answer promptly (the thread looks at its sockets between the
/// guests' time slices, not only every 61 polls of 5 ms).
#[tokio::test(flavor = "multi_thread")]
async fn looping_guests_on_every_serving_thread_hold_up_no_new_client() {
    let rt = faulty(&["--request-timeout", "4s"]).await;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let loops: Vec<_> = (0..2 * cores)
        .map(|_| {
            let client = rt.client();
            let url = format!("{}/f/loop", rt.url());
            tokio::spawn(async move { client.get(url).send().await.unwrap().status().as_u16() })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let slowest = slowest_of_ten_oks(&rt).await;
    assert!(
        slowest < Duration::from_millis(250),
        "a new client waited {slowest:?} behind looping guests"
    );
    for l in loops {
        assert_eq!(l.await.unwrap(), 504);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn memory_bomb_fails_inside_the_guest() {
    let rt = faulty(&["--guest-memory", "32MiB"]).await;
    let (status, _) = rt.get("/f/membomb").await;
    assert!(status >= 500, "membomb got {status}");
    assert_eq!(rt.get("/f/ok").await, (200, "ok".into()));
    // Growth past the limit is refused (memory.grow = -1), not a trap.
    assert_eq!(
        rt.get("/f/grow").await,
        (200, "memory.grow returned -1".into())
    );
    assert_eq!(rt.get("/f/ok").await, (200, "ok".into()));
}

#[tokio::test(flavor = "multi_thread")]
async fn request_body_over_the_limit_is_413() {
    // The limit applies to uploads too: leave room for the component.
    let rt = faulty(&["--max-body", "100KiB"]).await;
    let c = rt.client();
    let post = |body: reqwest::Body| c.post(format!("{}/f/body", rt.url())).body(body).send();

    let r = post(vec![7u8; 1000].into()).await.unwrap();
    assert_eq!(
        (r.status().as_u16(), r.text().await.unwrap()),
        (200, "1000".into())
    );

    // Declared too large: refused before the guest runs.
    let r = post(vec![7u8; 101 * 1024].into()).await.unwrap();
    assert_eq!(r.status(), 413);

    // Chunked, no length: cut off at the limit, still 413.
    let chunks =
        futures::stream::iter((0..20).map(|_| Ok::<_, std::io::Error>(vec![1u8; 16 * 1024])));
    let r = post(reqwest::Body::wrap_stream(chunks.boxed()))
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(rt.get("/f/ok").await, (200, "ok".into()));
}

#[tokio::test(flavor = "multi_thread")]
async fn trap_after_the_head_cuts_the_body_and_is_counted_once() {
    let rt = faulty(&["--debug"]).await;
    let h1 = rt.client_builder().http1_only().build().unwrap();
    for client in [h1, rt.client()] {
        let sent = client
            .get(format!("{}/f/trap-after-head", rt.url()))
            .send()
            .await;
        match sent {
            // The head left before the trap: 200, then a body that ends
            // in an error, never a clean end.
            Ok(r) => {
                assert_eq!(r.status(), 200);
                assert!(
                    r.bytes().await.is_err(),
                    "a cut body must not look complete"
                );
            }
            // Or the stream was cut before the head left the server.
            Err(e) => assert!(e.is_request(), "{e}"),
        }
    }
    assert_eq!(rt.get("/f/ok").await, (200, "ok".into()));

    // Nobody waits for the guest once the head is sent: its own task
    // logs and counts each failure, exactly once.
    let cut = "guest failed after sending its response head: trap";
    let mut log = String::new();
    for _ in 0..50 {
        log = rt.log();
        if log.matches(cut).count() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(log.matches(cut).count(), 2, "{log}");
    // The per-guest figures are the operator's (/enclave/metrics).
    assert_eq!(
        rt.guest_metric("nacre_guest_traps_total{guest=\"f\"}")
            .await,
        2.0
    );
    assert_eq!(
        rt.guest_metric("nacre_guest_timeouts_total{guest=\"f\"}")
            .await,
        0.0
    );
}
