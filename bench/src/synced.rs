//! Scenario (h): scenario (a)'s load on a worker of a two-enclave
//! deployment, so the cost of sync on requests (heartbeats every second,
//! the guest table and state received from the leader) shows next to a
//! runtime alone.

use std::path::Path;
use std::time::Duration;

use anyhow::bail;
use nacre_tests::fleet::{Deployment, within};

use crate::Plan;
use crate::http::Scenario;
use crate::load::rss_kib;
use crate::tools::Tools;

/// Starts a leader and a worker, deploys `hello` on the leader, and loads
/// the worker once the guest has reached it.
pub async fn run(plan: &Plan, tools: &Tools, hello: &Path) -> anyhow::Result<Scenario> {
    println!("(h) Nacre as a worker of a two-enclave deployment");
    let deployment = Deployment::new(2).await;
    let leader = deployment.start(0).await;
    let worker = deployment.start(1).await;
    within(
        Duration::from_secs(60),
        "the deployment settled",
        || async { leader.role().await == "leader" && worker.role().await == "worker" },
    )
    .await;
    leader.rt.deploy_ok("hello", hello, "").await;
    within(
        Duration::from_secs(30),
        "hello reached the worker",
        || async { worker.rt.get("/hello/").await.0 == 200 },
    )
    .await;
    if worker.certificate().await != leader.certificate().await {
        bail!("the worker serves another certificate than the leader: sync failed");
    }
    let port = worker.proxy.inbound_tcp().port();
    let load = tools.load(&format!("https://127.0.0.1:{port}/hello/"), plan.http_secs)?;
    if worker.role().await != "worker" {
        bail!("the worker left its role during the load; the figures are not a worker's");
    }
    Ok(Scenario {
        load,
        rounds: vec![load],
        peak_rss_kib: vec![
            ("worker runtime", rss_kib(worker.rt.pid()).1),
            ("its host proxy", rss_kib(worker.proxy.pid()).1),
        ],
        command: "nacre-runtime --listen unix:… --attestation dev --fqdn-leader localhost:P \
                  --sync-listen unix:… --control unix:… --egress unix:… twice (leader and \
                  worker), each behind its own nacre-host-proxy (--sync-advertise \
                  localhost:Q); hello deployed on the leader; wrk on the worker's proxy"
            .into(),
    })
}
