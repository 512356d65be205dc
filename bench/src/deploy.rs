//! Scenario (e): how long from the start of an upload to the first 200
//! from the new guest, through the host proxy, for new bytes (compiled)
//! and for bytes the runtime has compiled before (cached).

use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use bytes::Bytes;
use nacre_tests::TOKEN;

use crate::Plan;
use crate::http::nacre_behind_proxy;

/// Upload → first 200, milliseconds.
pub struct DeployResults {
    /// New bytes: compiled on upload.
    pub cold_ms: Vec<f64>,
    /// Bytes deployed before: taken from the compile cache.
    pub cached_ms: Vec<f64>,
}

/// `component` with a custom section appended: the same code, new bytes
/// (and a new SHA-256), so the runtime cannot reuse a compiled copy.
pub fn variant(component: &[u8], tag: &str) -> Bytes {
    Bytes::from(nacre_tests::with_custom_section(
        component,
        "nacre-bench",
        tag.as_bytes(),
    ))
}

/// Deploys `bytes` as `name` and waits for `GET /name/` to answer 200.
pub async fn deploy_until_served(
    client: &reqwest::Client,
    base: &str,
    name: &str,
    bytes: Bytes,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let r = client
        .put(format!("{base}/enclave/guests/{name}"))
        .bearer_auth(TOKEN)
        .body(bytes)
        .send()
        .await
        .context("uploading")?;
    let status = r.status();
    ensure!(
        status.is_success(),
        "upload of {name}: {status} {}",
        r.text().await.unwrap_or_default()
    );
    loop {
        let r = client.get(format!("{base}/{name}/")).send().await?;
        if r.status() == 200 {
            r.bytes().await?;
            return Ok(started.elapsed());
        }
        if started.elapsed() > Duration::from_secs(60) {
            bail!("{name} still answers {} 60 s after its upload", r.status());
        }
    }
}

/// Cold deploys of new variants, then cached redeploys of the last one.
pub async fn run(plan: &Plan, component: &[u8]) -> anyhow::Result<DeployResults> {
    println!("(e) deploy latency");
    let (rt, _proxy) = nacre_behind_proxy(&[]);
    let client = rt.client();
    let base = rt.url();
    let mut cold_ms = Vec::new();
    let mut last = Bytes::new();
    for i in 0..plan.cold_deploys {
        last = variant(component, &format!("cold {i} {}", std::process::id()));
        let t = deploy_until_served(&client, &base, "app", last.clone()).await?;
        cold_ms.push(t.as_secs_f64() * 1e3);
    }
    let mut cached_ms = Vec::new();
    for _ in 0..plan.cached_deploys {
        let t = deploy_until_served(&client, &base, "app", last.clone()).await?;
        cached_ms.push(t.as_secs_f64() * 1e3);
    }
    Ok(DeployResults { cold_ms, cached_ms })
}

#[cfg(test)]
mod tests {
    use super::*;
    use nacre_tests::{Runtime, guest, sha256_hex};

    /// A variant is a different upload (new hash, compiled anew) that the
    /// runtime accepts and serves like the original.
    #[tokio::test]
    async fn a_variant_is_new_bytes_that_still_serve() {
        let hello = std::fs::read(guest("hello")).unwrap();
        let a = variant(&hello, "a");
        let b = variant(&hello, "b");
        assert_ne!(sha256_hex(&a), sha256_hex(&hello));
        assert_ne!(sha256_hex(&a), sha256_hex(&b));
        let rt = Runtime::start(&[]);
        let client = rt.client();
        let wanted = [sha256_hex(&a), sha256_hex(&b)];
        for (name, bytes) in [("a", a), ("b", b)] {
            deploy_until_served(&client, &rt.url(), name, bytes)
                .await
                .unwrap();
        }
        let manifest = client
            .get(format!("{}/enclave/manifest", rt.url()))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        for sha in wanted {
            assert!(manifest.contains(&sha), "{sha} not in {manifest}");
        }
        let r = client.get(format!("{}/b/", rt.url())).send().await.unwrap();
        assert_eq!(r.text().await.unwrap(), "Hello from a Nacre enclave!\n");
    }
}
