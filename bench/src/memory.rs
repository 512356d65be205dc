//! Scenario (f): the runtime's resident memory with 10 guests deployed,
//! idle, after the first 1,000 requests and after 100,000.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::ensure;

use crate::deploy::{deploy_until_served, variant};
use crate::http::nacre_behind_proxy;
use crate::load::{CONNECTIONS, rss_kib};

/// Guests deployed, each its own compiled component.
pub const GUESTS: usize = 10;

/// Resident memory of the runtime, KiB.
pub struct MemoryResults {
    /// Idle with [`GUESTS`] guests deployed.
    pub idle_kib: u64,
    /// After the first 1,000 requests.
    pub after_1k_kib: u64,
    /// After [`MEMORY_REQUESTS`].
    pub after_all_kib: u64,
}

/// Requests before the last reading.
pub const MEMORY_REQUESTS: u64 = 100_000;

/// The memory readings, with requests spread over every guest.
pub async fn run(component: &[u8]) -> anyhow::Result<MemoryResults> {
    println!("(f) memory with {GUESTS} guests");
    let (rt, _proxy) = nacre_behind_proxy(&[]);
    let client = rt.client();
    let base = rt.url();
    let mut paths = Vec::new();
    for i in 0..GUESTS {
        let name = format!("g{i}");
        let bytes = variant(component, &format!("memory {i} {}", std::process::id()));
        deploy_until_served(&client, &base, &name, bytes).await?;
        paths.push(format!("/{name}/"));
    }
    // Let the compile threads and allocator settle before reading.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle_kib = rss_kib(rt.pid()).0;
    let client = rt.client_builder().http1_only().build()?;
    send(&client, &base, &paths, 1_000).await?;
    let after_1k_kib = rss_kib(rt.pid()).0;
    send(&client, &base, &paths, MEMORY_REQUESTS - 1_000).await?;
    let after_all_kib = rss_kib(rt.pid()).0;
    Ok(MemoryResults {
        idle_kib,
        after_1k_kib,
        after_all_kib,
    })
}

/// Exactly `total` GETs over [`CONNECTIONS`] keep-alive connections,
/// rotating over `paths`; every answer must be 200.
async fn send(
    client: &reqwest::Client,
    base: &str,
    paths: &[String],
    total: u64,
) -> anyhow::Result<()> {
    let next = Arc::new(AtomicU64::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..CONNECTIONS {
        let (client, next) = (client.clone(), next.clone());
        let urls: Vec<String> = paths.iter().map(|p| format!("{base}{p}")).collect();
        workers.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    return anyhow::Ok(());
                }
                let url = &urls[(i % urls.len() as u64) as usize];
                let r = client.get(url).send().await?;
                ensure!(r.status() == 200, "{url}: {}", r.status());
                r.bytes().await?;
            }
        });
    }
    while let Some(done) = workers.join_next().await {
        done??;
    }
    Ok(())
}
