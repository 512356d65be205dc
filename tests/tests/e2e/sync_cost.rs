//! What a state write costs a deployment: what changed moves, component
//! bytes move once per deploy.

use std::time::Duration;

use nacre_tests::fleet::{Deployment, leader_and_worker, within};
use nacre_tests::{guest, temp_dir, with_custom_section};

/// Three 15 MiB guests deployed, then 100 requests each writing 1 KiB of
/// state on the leader: the sync links carry a few exchanges of the state,
/// not the components again (before: 483 MiB through the egress proxy).
#[tokio::test(flavor = "multi_thread")]
async fn state_writes_move_what_changed_not_every_component() {
    let d = Deployment::new(2).await;
    let (leader, worker) = leader_and_worker(&d).await;
    let hello = std::fs::read(guest("hello")).expect("hello");
    let dir = temp_dir("big-guests");
    for i in 0..3 {
        let path = dir.join(format!("big-{i}.wasm"));
        let big = with_custom_section(&hello, &format!("pad-{i}"), &vec![0x5a; 15 << 20]);
        std::fs::write(&path, big).expect("write");
        leader.rt.deploy_ok(&format!("big-{i}"), &path, "").await;
    }
    leader.rt.deploy_ok("p", &guest("kv-probe"), "").await;
    within(
        Duration::from_secs(60),
        "the guests on the worker",
        || async {
            worker.rt.get("/big-2/").await.0 == 200
                && worker.rt.get("/p/state").await.1.contains("no state")
        },
    )
    .await;

    let before = leader.egress.recorded().len() + worker.egress.recorded().len();
    let cpu = || nacre_cli::process::cpu_seconds(&leader.rt.pid().to_string()).unwrap_or(0.0);
    let cpu_before = cpu();
    let started = std::time::Instant::now();
    let mut last = String::new();
    for i in 0..100 {
        last = format!("{i:04}{}", "s".repeat(1020));
        let status = leader
            .rt
            .client()
            .put(format!("{}/p/state", leader.rt.url()))
            .body(last.clone())
            .send()
            .await
            .map_or(0, |r| r.status().as_u16());
        assert_eq!(status, 200);
    }
    let wrote = started.elapsed();
    within(
        Duration::from_secs(20),
        "the last write on the worker",
        || async { worker.rt.get("/p/state").await.1 == last },
    )
    .await;
    let moved = leader.egress.recorded().len() + worker.egress.recorded().len() - before;
    let spent = cpu() - cpu_before;
    eprintln!(
        "100 state writes of 1 KiB with three 15 MiB guests: {moved} bytes over the sync links, \
         written in {wrote:?}, {spent:.2} CPU-seconds on the leader"
    );
    assert!(
        moved < 4 << 20,
        "{} KiB crossed the sync links for 100 KiB of state",
        moved >> 10
    );
}
