//! Scenario (i): replicated key-value. The `kv-counter` guest's writes
//! and reads, and `hello` (which touches no key-value), on one enclave
//! alone (A), on three enclaves each alone (A3), and on a three-enclave
//! deployment whose key-value data Raft replicates (B): there every write
//! is committed by a majority before the guest sees success (a follower
//! forwards it to the leader over the sync link), and a read on a worker
//! is served under a read lease from the leader, or after a read index.
//!
//! (A3) runs the same processes as (B) on the same cores, without Raft:
//! (B)/(A3) is what replication costs, the targets' measure. (B)/(A)
//! adds what running three enclaves on this machine's cores costs
//! instead of one, which `hello` shows alone.
//!
//! Clients reach every setup the same way, through a loopback forwarder:
//! in (A3) and (B) it hands connections to the three enclaves in turn, so
//! in (B) two thirds land on followers; in (A) it leads to the one
//! enclave, so what the forwarder costs is in all. Afterwards
//! kv-counter's count is checked against the POSTs wrk saw answered.

mod section;

pub use section::{HEADING, splice, splice_at};

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use nacre_tests::Runtime;
use nacre_tests::fleet::{Deployment, Forwarder, Member, MemberSpec, within};
use nacre_tests::net::HostProxy;

use crate::Plan;
use crate::http::nacre_behind_proxy;
use crate::load::{CONNECTIONS, Load, Shape, THREADS};
use crate::tools::Tools;

/// Connections of the latency measurement, (3).
pub const FEW: u32 = 4;
/// Target of (1): (B)/(A) requests/s of `POST /incr`, at least.
pub const INCR_RATIO_MIN: f64 = 0.3;
/// Target of (2): (B)/(A) requests/s of `GET /`, at least.
pub const READ_RATIO_MIN: f64 = 0.8;
/// Target of (3): p99 of `POST /incr` on [`FEW`] connections in (B), at
/// most, milliseconds.
pub const INCR_FEW_P99_MAX_MS: f64 = 5.0;

/// Raft as a deployment runs it (the runtime's defaults), not the test
/// harness's loopback timings: the figures should be what a deployment
/// gets, elections under load included.
const RAFT_FLAGS: &[&str] = &[
    "--raft-heartbeat",
    "100ms",
    "--raft-election-timeout",
    "500ms-1s",
    "--raft-remove-after",
    "30s",
];

/// How long the closing count check may take; it sends about a second's
/// worth of POSTs at the rate measured.
const EXACT_SECS: u32 = 6;

/// One measurement of (i).
#[derive(Debug, Clone, Copy)]
enum Kind {
    /// (1) `POST /incr`, [`CONNECTIONS`] connections.
    Incr,
    /// (2) `GET /`, [`CONNECTIONS`] connections.
    Read,
    /// (3) `POST /incr`, [`FEW`] connections.
    IncrFew,
    /// (4) `hello`, [`CONNECTIONS`] connections.
    Hello,
}

impl Kind {
    const ALL: [Kind; 4] = [Kind::Incr, Kind::Read, Kind::IncrFew, Kind::Hello];

    fn path(self) -> &'static str {
        match self {
            Kind::Incr | Kind::IncrFew => "/counter/incr",
            Kind::Read => "/counter/",
            Kind::Hello => "/hello/",
        }
    }

    fn connections(self) -> u32 {
        match self {
            Kind::IncrFew => FEW,
            _ => CONNECTIONS,
        }
    }

    fn writes(self) -> bool {
        matches!(self, Kind::Incr | Kind::IncrFew)
    }

    fn shape(self) -> Shape {
        Shape {
            // kv-counter reads no body: an empty POST is the least to send.
            post_bytes: self.writes().then_some(0),
            connections: Some(self.connections()),
            ..Shape::default()
        }
    }
}

/// One measurement on every setup, round by round.
#[derive(Debug, Default)]
pub struct Pair {
    /// (A), one enclave alone.
    pub alone: Vec<Load>,
    /// (A3), three enclaves, each alone.
    pub alone3: Vec<Load>,
    /// (B), the three-enclave deployment.
    pub replicated: Vec<Load>,
}

impl Pair {
    /// (A)'s rounds together.
    pub fn a(&self) -> Load {
        Load::combine(&self.alone)
    }

    /// (A3)'s rounds together.
    pub fn a3(&self) -> Load {
        Load::combine(&self.alone3)
    }

    /// (B)'s rounds together.
    pub fn b(&self) -> Load {
        Load::combine(&self.replicated)
    }

    /// (B)/(A) requests/s: what replication costs, plus what running
    /// three enclaves on this machine's cores instead of one costs.
    pub fn ratio_one(&self) -> f64 {
        self.b().rps / self.a().rps
    }

    /// (B)/(A3) requests/s: what replication costs, the same processes
    /// on the same cores on both sides. The targets are on this one.
    pub fn ratio(&self) -> f64 {
        self.b().rps / self.a3().rps
    }
}

/// kv-counter's count against what wrk saw, on one setup.
#[derive(Debug, Clone, Copy, Default)]
pub struct CountCheck {
    /// The count after every timed run (warm-ups included).
    pub count: u64,
    /// POSTs those runs saw answered with 2xx or 3xx.
    pub answered: u64,
    /// Their other answers and socket errors.
    pub failed: u64,
    /// Requests that may have been in flight when a timed run stopped
    /// (carried out, never counted by wrk): each run's connections, summed.
    pub in_flight: u64,
    /// The closing run: POSTs sent, each wrk thread a fixed number.
    pub exact_sent: u64,
    /// Of them, answered with 2xx or 3xx.
    pub exact_answered: u64,
    /// Its other answers and socket errors.
    pub exact_failed: u64,
    /// How much the count rose over the closing run.
    pub exact_rise: u64,
}

impl CountCheck {
    /// No POST failed, the timed runs' count is within what was in
    /// flight of the answers, and the closing run's rise is exactly its
    /// answers, all it sent.
    pub fn holds(&self) -> bool {
        self.failed == 0
            && self.answered <= self.count
            && self.count <= self.answered + self.in_flight
            && self.exact_failed == 0
            && self.exact_answered == self.exact_sent
            && self.exact_rise == self.exact_sent
    }
}

/// Everything (i) measured.
#[derive(Debug, Default)]
pub struct RaftResults {
    /// (1) `POST /incr`, [`CONNECTIONS`] connections.
    pub incr: Pair,
    /// (2) `GET /`, [`CONNECTIONS`] connections.
    pub read: Pair,
    /// (3) `POST /incr`, [`FEW`] connections.
    pub incr_few: Pair,
    /// (4) `hello`, [`CONNECTIONS`] connections.
    pub hello: Pair,
    /// The count checks of (A), (A3) and (B).
    pub counts: [CountCheck; 3],
    /// (B)'s Raft term before the first load and after the last.
    pub terms: (u64, u64),
    /// Whether (B)'s first leader still led after the last load.
    pub leader_held: bool,
    /// Seconds of each timed run.
    pub secs: u32,
}

/// Where one setup's clients go, and what its POST runs saw.
struct Side<'a> {
    /// `https://127.0.0.1:PORT`: the forwarder in front of the setup.
    base: String,
    /// The runtimes whose counts, summed, are the setup's count: one
    /// member of a deployment, every enclave of enclaves alone.
    readers: Vec<&'a Runtime>,
    /// Every POST run (warm-ups too) with its connections.
    posts: Vec<(Load, u32)>,
}

/// Starts both setups, measures them in alternating rounds, then checks
/// the counts.
pub async fn run(
    plan: &Plan,
    tools: &Tools,
    kv_counter: &Path,
    hello: &Path,
) -> anyhow::Result<RaftResults> {
    println!(
        "(i) replicated key-value: one enclave, three enclaves alone, a three-enclave deployment"
    );
    let (alone, to_alone) = enclaves_alone(1, kv_counter, hello).await;
    let (alone3, to_alone3) = enclaves_alone(3, kv_counter, hello).await;

    let deployment = Deployment::new(3).await;
    let members = start_members(&deployment).await;
    let leader = &members[0];
    deploy(&leader.rt, kv_counter, hello).await;
    let runtimes: Vec<&Runtime> = members.iter().map(|m| &m.rt).collect();
    serving(&runtimes).await;
    let certificate = leader.certificate().await;
    for m in &members[1..] {
        if m.certificate().await != certificate {
            bail!("a worker serves another certificate than the leader: sync failed");
        }
    }
    let publics: Vec<SocketAddr> = members.iter().map(|m| m.proxy.inbound_tcp()).collect();
    let to_members = Forwarder::start().await;
    to_members.spread_over(&publics);

    let mut sides = [
        side(&to_alone, alone.iter().map(|(rt, _)| rt).collect()),
        side(&to_alone3, alone3.iter().map(|(rt, _)| rt).collect()),
        side(&to_members, vec![&leader.rt]),
    ];
    let term = |raft: serde_json::Value| raft["term"].as_u64().unwrap_or_default();
    let first_term = term(leader.raft().await);
    let mut results = measure(plan, tools, &mut sides)?;
    results.terms = (first_term, term(leader.raft().await));
    results.leader_held = leader.leads().await;
    let rates = [
        results.incr.a().rps,
        results.incr.a3().rps,
        results.incr.b().rps,
    ];
    for (i, side) in sides.iter().enumerate() {
        results.counts[i] = check_count(tools, side, rates[i]).await?;
    }
    drop((to_members, to_alone3, to_alone, alone3, alone));
    Ok(results)
}

/// `n` enclaves, each alone behind its own host proxy, serving both
/// guests, and a forwarder handing connections to them in turn.
async fn enclaves_alone(
    n: usize,
    kv_counter: &Path,
    hello: &Path,
) -> (Vec<(Runtime, HostProxy)>, Forwarder) {
    let mut alone = Vec::new();
    for _ in 0..n {
        let (rt, proxy) = nacre_behind_proxy(&[]);
        deploy(&rt, kv_counter, hello).await;
        alone.push((rt, proxy));
    }
    serving(&alone.iter().map(|(rt, _)| rt).collect::<Vec<_>>()).await;
    let forwarder = Forwarder::start().await;
    let publics: Vec<SocketAddr> = alone.iter().map(|(_, p)| p.inbound_tcp()).collect();
    forwarder.spread_over(&publics);
    (alone, forwarder)
}

/// A side reached through `forwarder`, its count the sum of `readers'`.
fn side<'a>(forwarder: &Forwarder, readers: Vec<&'a Runtime>) -> Side<'a> {
    Side {
        base: format!("https://127.0.0.1:{}", forwarder.port),
        readers,
        posts: Vec::new(),
    }
}

/// `kv-counter` as `counter` and `hello` as `hello`, through the admin API.
async fn deploy(rt: &Runtime, kv_counter: &Path, hello: &Path) {
    rt.deploy_ok("counter", kv_counter, "").await;
    rt.deploy_ok("hello", hello, "").await;
}

/// Waits until every runtime of `runtimes` serves both guests.
async fn serving(runtimes: &[&Runtime]) {
    within(
        Duration::from_secs(30),
        "kv-counter and hello answering on every enclave",
        || async {
            for rt in runtimes {
                if rt.get("/counter/").await.0 != 200 || rt.get("/hello/").await.0 != 200 {
                    return false;
                }
            }
            true
        },
    )
    .await;
}

/// Three members with the runtime's own Raft timings, once the first
/// leads three voters and the others are workers.
async fn start_members(deployment: &Deployment) -> Vec<Member> {
    let mut members = Vec::new();
    for i in 0..3 {
        let spec = MemberSpec {
            extra: RAFT_FLAGS,
            direct: true,
            ..deployment.spec(i)
        };
        members.push(Member::start(spec).await);
    }
    within(
        Duration::from_secs(60),
        "a leader with three voters and two workers",
        || async {
            members[0].leads().await
                && members[0].voters().await == 3
                && members[1].role().await == "worker"
                && members[2].role().await == "worker"
        },
    )
    .await;
    members
}

/// Each round loads (1) to (4), each on (A), (A3) then (B).
fn measure(plan: &Plan, tools: &Tools, sides: &mut [Side; 3]) -> anyhow::Result<RaftResults> {
    let mut results = RaftResults {
        secs: plan.http_secs,
        ..RaftResults::default()
    };
    for round in 1..=plan.http_rounds.max(1) {
        println!(
            "  round {round}: POST /incr, GET /, POST /incr on {FEW} connections, hello; (A), (A3), (B) each"
        );
        for kind in Kind::ALL {
            for (i, side) in sides.iter_mut().enumerate() {
                let url = format!("{}{}", side.base, kind.path());
                // wrk holds this thread for the whole run; the forwarder
                // in front of the setups is a task of this runtime and
                // needs its threads.
                let (warm_up, load) = tokio::task::block_in_place(|| {
                    tools.load_and_warm_up(&url, plan.http_secs, kind.shape())
                })?;
                if kind.writes() {
                    side.posts.push((warm_up, kind.connections()));
                    side.posts.push((load, kind.connections()));
                }
                let pair = match kind {
                    Kind::Incr => &mut results.incr,
                    Kind::Read => &mut results.read,
                    Kind::IncrFew => &mut results.incr_few,
                    Kind::Hello => &mut results.hello,
                };
                [&mut pair.alone, &mut pair.alone3, &mut pair.replicated][i].push(load);
            }
        }
    }
    Ok(results)
}

/// kv-counter's count against `side`'s POST runs, then a closing run of
/// about a second's POSTs at `rate` that ends with none in flight.
async fn check_count(tools: &Tools, side: &Side<'_>, rate: f64) -> anyhow::Result<CountCheck> {
    let count = read_count(&side.readers).await?;
    let loads = || side.posts.iter().map(|(l, _)| l);
    let per_thread = ((rate / f64::from(THREADS)) as u64).max(100);
    let url = format!("{}/counter/incr", side.base);
    let exact = tokio::task::block_in_place(|| tools.post_exactly(&url, per_thread, EXACT_SECS))?;
    let after = read_count(&side.readers).await?;
    let Some(exact_rise) = after.checked_sub(count) else {
        bail!("kv-counter's count went down, from {count} to {after}");
    };
    Ok(CountCheck {
        count,
        answered: loads().map(|l| l.requests - l.bad_status).sum(),
        failed: loads().map(|l| l.bad_status + l.socket_errors).sum(),
        in_flight: side.posts.iter().map(|(_, c)| u64::from(*c)).sum(),
        exact_sent: per_thread * u64::from(THREADS),
        exact_answered: exact.requests - exact.bad_status,
        exact_failed: exact.bad_status + exact.socket_errors,
        exact_rise,
    })
}

/// kv-counter's counts, as `GET /counter/` on each of `readers` answers
/// it, summed.
async fn read_count(readers: &[&Runtime]) -> anyhow::Result<u64> {
    let mut sum = 0;
    for rt in readers {
        let (status, body) = rt.get("/counter/").await;
        ensure!(status == 200, "GET /counter/: {status} {body}");
        sum += body
            .trim()
            .parse::<u64>()
            .with_context(|| format!("GET /counter/ answered {body:?}, not a count"))?;
    }
    Ok(sum)
}

/// How (A) was started, for the report.
pub const COMMAND_ALONE: &str = "nacre-runtime --listen unix:… --attestation dev; \
     nacre-host-proxy --inbound tcp://127.0.0.1:0=unix:…; kv-counter and hello \
     deployed through the admin API; wrk through a loopback forwarder to the proxy";

/// How (A3) was started, for the report.
pub const COMMAND_ALONE3: &str = "(A) three times; wrk through a loopback forwarder \
     handing connections to the three proxies in turn";

/// How (B) was started, for the report.
pub const COMMAND_REPLICATED: &str = "nacre-runtime --listen unix:… --attestation dev \
     --fqdn-leader localhost:P --sync-listen unix:… --control unix:… --egress unix:… \
     --raft-heartbeat 100ms --raft-election-timeout 500ms-1s --raft-remove-after 30s \
     three times, each behind its own nacre-host-proxy (--sync-advertise localhost:Q); \
     kv-counter and hello deployed on the leader; wrk through a loopback forwarder \
     handing connections to the three proxies in turn";
