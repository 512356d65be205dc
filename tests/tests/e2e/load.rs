//! Concurrency and memory: many requests, no growth.

use futures::StreamExt;
use nacre_tests::{Runtime, guest};

async fn burst(rt: &Runtime, total: usize, concurrency: usize) -> usize {
    let client = rt.client();
    let url = format!("{}/hello/load", rt.url());
    futures::stream::iter(0..total)
        .map(|_| {
            let (c, u) = (client.clone(), url.clone());
            async move {
                match c.get(u).send().await {
                    Ok(r) if r.status() == 200 => r
                        .text()
                        .await
                        .map(|t| t.starts_with("Hello, load"))
                        .unwrap_or(false),
                    _ => false,
                }
            }
        })
        .buffer_unordered(concurrency)
        .filter(|ok| std::future::ready(*ok))
        .count()
        .await
}

#[tokio::test(flavor = "multi_thread")]
async fn three_hundred_requests_at_concurrency_thirty_without_growth() {
    let rt = Runtime::start(&[]);
    rt.deploy_ok("hello", &guest("hello"), "").await;
    // One round at full concurrency first, so "before" is the steady
    // state (pool slots and connection buffers touched once), not the
    // empty process.
    assert_eq!(burst(&rt, 30, 30).await, 30);
    let before = rt.rss();
    let ok = burst(&rt, 300, 30).await;
    let after = rt.rss();
    assert_eq!(ok, 300, "every request must succeed");
    let growth = after as f64 / before as f64;
    eprintln!("RSS before {before} after {after} ({growth:.3}x)");
    assert!(
        growth <= 1.2,
        "RSS grew from {before} to {after} bytes ({growth:.3}x)"
    );
}
