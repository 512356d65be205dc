//! One set of guest data for a deployment: key-value data replicated by
//! Raft across three enclaves, checked from the outside with clients
//! nobody here wrote (curl, a Python client) while the host kills the
//! leader, cuts an enclave off and restarts one.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use nacre_tests::fleet::{Deployment, Forwarder, Member, MemberSpec, within};
use nacre_tests::linearizable::{self, Violation};
use nacre_tests::{guest, root, temp_dir};

/// Three members, settled: the first leads, three voters.
async fn three(d: &Deployment, extra: &'static [&'static str]) -> Vec<Member> {
    let mut members = Vec::new();
    for i in 0..3 {
        members.push(Member::start(MemberSpec { extra, ..d.spec(i) }).await);
    }
    let first = &members[0];
    within(Duration::from_secs(40), "three voters", || async {
        first.leads().await && first.voters().await == 3
    })
    .await;
    members
}

/// Deploys `name` on the leader and waits until every member serves it.
async fn deploy_everywhere(members: &[Member], name: &str, probe: &str) {
    let leader = &members[0];
    leader.rt.deploy_ok(name, &guest(name), "").await;
    within(Duration::from_secs(10), "the guest everywhere", || async {
        for m in members {
            if m.rt.get(probe).await.0 == 404 && m.rt.get(probe).await.1.contains("no guest") {
                return false;
            }
        }
        true
    })
    .await;
}

/// The public URL of `m`'s guest at `route`, through its host proxy.
fn url(m: &Member, route: &str) -> String {
    format!("https://{}{route}", m.proxy.inbound_tcp())
}

/// `kv_client.py` against `urls` with `args`; the history it wrote.
fn python_history(urls: &[String], args: &[&str], out: &Path) -> String {
    let run = Command::new("python3")
        .arg(root().join("tests/clients/kv_client.py"))
        .args(urls)
        .args(args)
        .arg("--out")
        .arg(out)
        .output()
        .expect("python3 runs");
    assert!(
        run.status.success(),
        "kv_client.py: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    std::fs::read_to_string(out).expect("the history")
}

/// `kv-counter` behind a round-robin forwarder over three enclaves: each
/// of 120 `curl` runs is a new connection, so the requests go to the
/// leader and the followers in turn, and the count goes 1, 2, 3, … with
/// no gap and no repeat.
#[tokio::test(flavor = "multi_thread")]
async fn kv_counter_behind_a_round_robin_forwarder_counts_without_gaps() {
    let d = Deployment::new(3).await;
    let members = three(&d, &[]).await;
    deploy_everywhere(&members, "kv-counter", "/kv-counter/").await;
    let balancer = Forwarder::start().await;
    let targets: Vec<_> = members.iter().map(|m| m.proxy.inbound_tcp()).collect();
    balancer.spread_over(&targets);
    let script = format!(
        "for i in $(seq 120); do curl -sk -m 5 -X POST https://127.0.0.1:{}/kv-counter/incr || echo failed; done",
        balancer.port
    );
    let out = tokio::task::spawn_blocking(move || {
        Command::new("bash")
            .args(["-c", &script])
            .output()
            .expect("bash and curl")
    })
    .await
    .expect("curl loop");
    let counts: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    let want: Vec<String> = (1..=120).map(|n| n.to_string()).collect();
    assert_eq!(counts, want, "{}", String::from_utf8_lossy(&out.stderr));
    for m in &members {
        assert_eq!(m.rt.get("/kv-counter/").await, (200, "120\n".to_string()));
    }
}

/// Six Python clients and a curl loop increment, compare-and-swap, write
/// and read three keys on all three enclaves for 24 s while the host
/// kills the leader, restarts an enclave in its place, and cuts another
/// off for 6 s (so it is removed, and rejoins under a new id); then every
/// enclave reads every key. The whole history is linearizable per key,
/// and every enclave ends on the same values.
#[tokio::test(flavor = "multi_thread")]
async fn histories_stay_linearizable_while_the_host_kills_cuts_and_restarts() {
    let d = Deployment::new(3).await;
    let mut members: Vec<Option<Member>> = three(&d, &[]).await.into_iter().map(Some).collect();
    {
        let settled: Vec<&Member> = members.iter().flatten().collect();
        settled[0]
            .rt
            .deploy_ok("kv-lin", &guest("kv-lin"), "")
            .await;
        within(Duration::from_secs(10), "the guest everywhere", || async {
            for m in &settled {
                if m.rt.get("/kv-lin/k/none").await.1.contains("no guest") {
                    return false;
                }
            }
            true
        })
        .await;
    }
    // Each client's address is a forwarder the host re-points when an
    // enclave is restarted behind a new host proxy; curl's goes round.
    let slots: Vec<Forwarder> = futures::future::join_all((0..3).map(|_| Forwarder::start())).await;
    for (slot, m) in slots.iter().zip(&members) {
        slot.spread_over(&[m.as_ref().expect("started").proxy.inbound_tcp()]);
    }
    let round = Forwarder::start().await;
    let inbound = |ms: &[Option<Member>]| -> Vec<std::net::SocketAddr> {
        ms.iter().flatten().map(|m| m.proxy.inbound_tcp()).collect()
    };
    round.spread_over(&inbound(&members));
    let dir = temp_dir("raft-history");
    let prefix = format!("run{}-", std::process::id());
    let urls: Vec<String> = slots
        .iter()
        .map(|s| format!("https://127.0.0.1:{}/kv-lin", s.port))
        .collect();

    let (py_urls, py_prefix, py_out) = (urls.clone(), prefix.clone(), dir.join("python.jsonl"));
    let python = tokio::task::spawn_blocking(move || {
        let args = [
            "--clients=6",
            "--duration=24",
            "--keys=3",
            "--round-robin",
            "--timeout=5",
            "--clock=realtime",
            "--key-prefix",
            &py_prefix,
        ];
        python_history(&py_urls, &args, &py_out)
    });
    let curl_out = dir.join("curl.jsonl");
    let curl_url = format!("https://127.0.0.1:{}/kv-lin", round.port);
    let (curl_key, curl_file) = (format!("{prefix}curl"), curl_out.clone());
    let curl = tokio::task::spawn_blocking(move || {
        Command::new("bash")
            .arg(root().join("tests/clients/curl_incr.sh"))
            .args([&curl_url, &curl_key, "150", "1"])
            .arg(&curl_file)
            .output()
            .expect("curl_incr.sh")
    });

    // The faults, while the clients run.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let killed = leader_of(&members).await;
    eprintln!("killing the leader, member {killed}");
    members[killed] = None;
    tokio::time::sleep(Duration::from_secs(4)).await;
    eprintln!("restarting an enclave in its place");
    let fresh = Member::start(d.spec(killed)).await;
    slots[killed].spread_over(&[fresh.proxy.inbound_tcp()]);
    members[killed] = Some(fresh);
    round.spread_over(&inbound(&members));
    tokio::time::sleep(Duration::from_secs(4)).await;
    let cut = (leader_of(&members).await + 1) % members.len();
    // Longer than --raft-remove-after (4 s in tests): the others remove
    // it, and it rejoins under a new id once it hears it was removed.
    eprintln!("cutting member {cut} off for 6 s");
    let cut_member = members[cut].as_ref().expect("live");
    cut_member.isolate(&d.ports, true);
    tokio::time::sleep(Duration::from_secs(6)).await;
    cut_member.isolate(&d.ports, false);

    let mut history = python.await.expect("python clients");
    let curl = curl.await.expect("curl loop");
    assert!(
        curl.status.success(),
        "{}",
        String::from_utf8_lossy(&curl.stderr)
    );
    history.push_str(&std::fs::read_to_string(&curl_out).expect("curl history"));

    // Settled: three voters again, and every enclave reads every key.
    let settled: Vec<&Member> = members.iter().flatten().collect();
    within(
        Duration::from_secs(30),
        "the three live enclaves the voters",
        || async {
            for x in &settled {
                if !x.voters_are(&settled).await {
                    return false;
                }
            }
            true
        },
    )
    .await;
    let final_urls: Vec<String> = settled.iter().map(|m| url(m, "/kv-lin")).collect();
    let (final_prefix, final_out) = (prefix.clone(), dir.join("final.jsonl"));
    let finals = tokio::task::spawn_blocking(move || {
        let args = [
            "--clients=3",
            "--ops=4",
            "--keys=3",
            "--mix=incr=0,cas=0,read=1,write=0,delete=0",
            "--clock=realtime",
            "--seed=7",
            "--key-prefix",
            &final_prefix,
        ];
        python_history(&final_urls, &args, &final_out)
    })
    .await
    .expect("final reads");
    history.push_str(&finals);
    std::fs::write(dir.join("history.jsonl"), &history).expect("keep the history");

    let events = linearizable::parse(&history).expect("a history");
    let report = linearizable::check(&events).unwrap_or_else(|v| panic!("{v}"));
    eprintln!("{report} (history in {})", dir.display());
    assert!(report.ok > 300, "too few operations completed: {report}");
}

/// The check is trusted only because it fails on a store that is not
/// linearizable: the same clients against enclaves that acknowledge
/// writes applied on the enclave that took them, with no commit by a
/// majority (`--kv-unsafe-local-ack`, a test-only flag), are caught.
#[tokio::test(flavor = "multi_thread")]
async fn the_check_catches_a_store_that_acknowledges_without_a_majority() {
    let d = Deployment::new(3).await;
    let members = three(&d, &["--kv-unsafe-local-ack"]).await;
    deploy_everywhere(&members, "kv-lin", "/kv-lin/k/none").await;
    let urls: Vec<String> = members.iter().map(|m| url(m, "/kv-lin")).collect();
    let out = temp_dir("raft-broken").join("history.jsonl");
    let history = tokio::task::spawn_blocking(move || {
        python_history(
            &urls,
            &["--clients=4", "--duration=4", "--keys=2", "--round-robin"],
            &out,
        )
    })
    .await
    .expect("clients");
    let events = linearizable::parse(&history).expect("a history");
    match linearizable::check(&events) {
        Err(Violation::NotLinearizable(why)) => eprintln!("caught, as it must be:\n{why}"),
        other => panic!("a store with no consensus passed the check: {other:?}"),
    }
}

/// The slot of the member that leads now.
async fn leader_of(members: &[Option<Member>]) -> usize {
    for _ in 0..100 {
        for (i, m) in members.iter().enumerate() {
            if let Some(m) = m
                && m.leads().await
            {
                return i;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no leader within 10 s");
}

/// Two of three enclaves gone: a write on the last fails within the write
/// deadline with an error the guest handles (kv-lin answers it as 409,
/// "nothing was written", or 503, "may or may not"), and a read fails too;
/// nothing hangs and nothing is written locally.
#[tokio::test(flavor = "multi_thread")]
async fn without_a_majority_calls_fail_fast() {
    let d = Deployment::new(3).await;
    let mut members = three(&d, &[]).await;
    deploy_everywhere(&members, "kv-lin", "/kv-lin/k/none").await;
    let last = members.remove(0);
    let post = |path: &'static str| {
        let client = last.rt.client();
        let url = format!("{}{path}", last.rt.url());
        async move {
            let r = client.post(url).send().await.expect("an answer");
            (r.status().as_u16(), r.text().await.expect("a body"))
        }
    };
    assert_eq!(post("/kv-lin/incr/n").await, (200, "1".to_string()));
    drop(members);
    tokio::time::sleep(Duration::from_secs(1)).await;
    for _ in 0..3 {
        let started = std::time::Instant::now();
        let (status, body) = post("/kv-lin/incr/n").await;
        let took = started.elapsed();
        assert!(status == 409 || status == 503, "{status} {body}");
        assert!(body.contains("no majority"), "{body}");
        assert!(took < Duration::from_millis(2500), "a write took {took:?}");
        let started = std::time::Instant::now();
        let (status, body) = last.rt.get("/kv-lin/k/n").await;
        assert_eq!(status, 409, "{body}");
        assert!(body.contains("no majority"), "{body}");
        assert!(started.elapsed() < Duration::from_millis(2500));
    }
}
