//! Three or four Raft nodes in one process, over an in-memory link the
//! test controls like the host would: it cuts a node off, and replays
//! what it saw.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use nacre_sync::auth::DeploymentKey;
use nacre_sync::raft::RaftKey;
use nacre_transport::tunnel::Target;

use super::*;
use crate::guests::GuestName;
use crate::guests::kv::{KeyValue, KvLimits, KvOp, KvReply};
use crate::sync::{LinkFuture, PeerLink, SyncError};

const DEPLOYMENT: &str = "leader.test:7443";

/// State slots for tests.
#[derive(Default)]
struct TestSlots(Mutex<BTreeMap<String, Arc<[u8]>>>);

impl Slots for TestSlots {
    fn store(&self, guest: &GuestName, value: Arc<[u8]>) {
        self.0.lock().unwrap().insert(guest.to_string(), value);
    }
    fn get(&self, guest: &GuestName) -> Option<Arc<[u8]>> {
        self.0.lock().unwrap().get(guest.as_str()).cloned()
    }
    fn export(&self) -> BTreeMap<String, Arc<[u8]>> {
        self.0.lock().unwrap().clone()
    }
    fn import(&self, slots: BTreeMap<String, Vec<u8>>) {
        *self.0.lock().unwrap() = slots.into_iter().map(|(k, v)| (k, v.into())).collect();
    }
}

/// Every node's endpoints by address; a cut address neither sends nor
/// receives. Every request seen is kept, for replays.
#[derive(Default)]
pub(super) struct Mesh {
    nodes: Mutex<HashMap<String, RaftEndpoints>>,
    cut: Mutex<HashSet<String>>,
    pub(super) seen: Mutex<Vec<(String, String, Bytes)>>,
    /// The requests whose first delivery was answered with success: only
    /// these were taken, so only these are replays when sent again (one
    /// that timed out before it was opened, or came before its receiver
    /// joined, is a delay when it comes again, and Raft takes it as such).
    pub(super) taken: Mutex<Vec<(String, String, Bytes)>>,
    /// The host misbehaving on every link: drops, duplicates, replays
    /// and delays (so reorders) frames.
    pub(super) chaos: std::sync::atomic::AtomicBool,
}

pub(super) struct Link {
    mesh: Arc<Mesh>,
    me: String,
}

impl Mesh {
    /// What a hostile host does to one frame besides (maybe) delivering
    /// it: drop it, deliver a copy too, deliver an old frame it saw, and
    /// hold it for a while so later frames overtake it.
    async fn misbehave(
        self: Arc<Self>,
        to: &str,
        path: &str,
        body: &Bytes,
        timeout: Duration,
    ) -> Result<(), SyncError> {
        use rand::Rng;
        let (drop, duplicate, replay, delay) = {
            let mut rng = rand::thread_rng();
            (
                rng.gen_bool(0.1),
                rng.gen_bool(0.1),
                rng.gen_bool(0.2),
                rng.gen_range(0..15u64),
            )
        };
        if duplicate {
            let (mesh, to, path, body) =
                (self.clone(), to.to_string(), path.to_string(), body.clone());
            tokio::spawn(async move { mesh.deliver(&to, &path, body).await });
        }
        if replay {
            let old = {
                let seen = self.seen.lock().unwrap();
                let i = rand::thread_rng().gen_range(0..seen.len());
                seen[i].clone()
            };
            let mesh = self.clone();
            tokio::spawn(async move { mesh.deliver(&old.0, &old.1, old.2).await });
        }
        tokio::time::sleep(Duration::from_millis(delay)).await;
        if drop {
            tokio::time::sleep(timeout.min(Duration::from_millis(20))).await;
            return Err(SyncError::Peer(format!("{to}: dropped")));
        }
        Ok(())
    }

    async fn deliver(&self, to: &str, path: &str, body: Bytes) -> Response<Bytes> {
        let endpoints = self.nodes.lock().unwrap().get(to).cloned();
        let Some(endpoints) = endpoints else {
            return Response::builder().status(404).body(Bytes::new()).unwrap();
        };
        match endpoints.answer(path, body).await {
            Ok(b) => Response::new(Bytes::from(b)),
            Err((status, why)) => Response::builder()
                .status(status)
                .body(Bytes::from(why))
                .unwrap(),
        }
    }
}

impl PeerLink for Link {
    fn request<'a>(
        &'a self,
        to: &'a Target,
        req: Request<Bytes>,
        timeout: Duration,
    ) -> LinkFuture<'a> {
        Box::pin(async move {
            let to = to.to_string();
            let cut = self.mesh.cut.lock().unwrap().clone();
            if cut.contains(&to) || cut.contains(&self.me) {
                tokio::time::sleep(timeout.min(Duration::from_millis(50))).await;
                return Err(SyncError::Peer(format!("{to}: cut")));
            }
            let path = req.uri().path().to_string();
            let body = req.into_body();
            self.mesh
                .seen
                .lock()
                .unwrap()
                .push((to.clone(), path.clone(), body.clone()));
            if self.mesh.chaos.load(std::sync::atomic::Ordering::Relaxed) {
                self.mesh
                    .clone()
                    .misbehave(&to, &path, &body, timeout)
                    .await?;
            }
            let answer = tokio::time::timeout(timeout, self.mesh.deliver(&to, &path, body.clone()))
                .await
                .map_err(|_| SyncError::Peer(format!("{to}: timeout")))?;
            if answer.status() == StatusCode::OK {
                self.mesh.taken.lock().unwrap().push((to, path, body));
            }
            Ok(answer)
        })
    }
}

fn settings() -> RaftSettings {
    RaftSettings {
        heartbeat: Duration::from_millis(50),
        election: (Duration::from_millis(250), Duration::from_millis(500)),
        remove_after: Duration::from_secs(2),
        write_timeout: Duration::from_secs(1),
        unsafe_local_ack: false,
    }
}

pub(super) struct Test {
    pub(super) mesh: Arc<Mesh>,
    key: DeploymentKey,
    pub(super) nodes: Vec<(String, Arc<RaftNode>)>,
    /// Each node's membership loop, to stop one (a leader that must not
    /// change the membership on its own while a test does it by hand).
    tending: Vec<tokio_util::sync::CancellationToken>,
}

impl Test {
    pub(super) async fn new(n: usize) -> Test {
        let mut t = Test {
            mesh: Arc::default(),
            key: DeploymentKey::generate(),
            nodes: Vec::new(),
            tending: Vec::new(),
        };
        for _ in 0..n {
            t.add().await;
        }
        let (addr0, first) = t.nodes[0].clone();
        first
            .initialize(
                Member {
                    advertise: addr0.clone(),
                },
                true,
            )
            .await
            .unwrap();
        for (addr, node) in t.nodes[1..].iter() {
            let via = Member {
                advertise: addr0.clone(),
            };
            node.join(
                &via,
                &Member {
                    advertise: addr.clone(),
                },
            )
            .await
            .unwrap();
        }
        t.until(|t| t.voters(0) == n).await;
        t
    }

    pub(super) async fn add(&mut self) -> Arc<RaftNode> {
        let addr = format!("node{}.test:7444", self.nodes.len());
        let link = Arc::new(Link {
            mesh: self.mesh.clone(),
            me: addr.clone(),
        });
        let kv = Arc::new(MemoryKv::new(KvLimits {
            max_keys: 1000,
            max_bytes: 1 << 20,
        }));
        let node = RaftNode::start(
            DEPLOYMENT,
            settings(),
            kv,
            Arc::new(TestSlots::default()),
            link,
        )
        .await
        .unwrap();
        node.set_key(RaftKey::derive(&self.key, DEPLOYMENT));
        self.mesh
            .nodes
            .lock()
            .unwrap()
            .insert(addr.clone(), RaftEndpoints::new(node.clone()));
        let tending = tokio_util::sync::CancellationToken::new();
        tokio::spawn(node.clone().tend(tending.clone()));
        self.tending.push(tending);
        self.nodes.push((addr, node.clone()));
        node
    }

    pub(super) fn voters(&self, i: usize) -> usize {
        let m = self.nodes[i].1.e().raft.metrics().borrow().clone();
        m.membership_config.membership().voter_ids().count()
    }

    pub(super) fn leader(&self) -> Option<usize> {
        let cut = self.mesh.cut.lock().unwrap().clone();
        self.nodes.iter().position(|(addr, n)| {
            !cut.contains(addr) && n.leadership().leader.is_some_and(|l| l.0 == n.id())
        })
    }

    pub(super) async fn until(&self, f: impl Fn(&Test) -> bool) {
        for _ in 0..200 {
            if f(self) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("condition not reached in 10 s");
    }

    pub(super) fn cut(&self, i: usize, on: bool) {
        let mut cut = self.mesh.cut.lock().unwrap();
        if on {
            cut.insert(self.nodes[i].0.clone());
        } else {
            cut.remove(&self.nodes[i].0);
        }
    }

    /// Stops node `i`'s membership loop: it no longer removes, promotes
    /// or rejoins on its own.
    pub(super) fn stop_tending(&self, i: usize) {
        self.tending[i].cancel();
    }

    pub(super) fn kv(&self, i: usize) -> ReplicatedKv {
        ReplicatedKv::new(self.nodes[i].1.clone())
    }
}

fn guest() -> GuestName {
    "counter".parse().unwrap()
}

pub(super) async fn incr(kv: &ReplicatedKv) -> Result<u64, String> {
    let ns = guest();
    kv.call(&ns, KvOp::Open { bucket: "b".into() })
        .await
        .map_err(|e| format!("{e:?}"))?;
    match kv
        .call(
            &ns,
            KvOp::Increment {
                bucket: "b".into(),
                key: "n".into(),
                delta: 1,
            },
        )
        .await
    {
        Ok(KvReply::Number(n)) => Ok(n),
        other => Err(format!("{other:?}")),
    }
}

pub(super) async fn read(kv: &ReplicatedKv) -> Result<Option<Vec<u8>>, String> {
    match kv
        .call(
            &guest(),
            KvOp::Get {
                bucket: "b".into(),
                key: "n".into(),
            },
        )
        .await
    {
        Ok(KvReply::Value(v)) => Ok(v),
        other => Err(format!("{other:?}")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_member_writes_and_every_member_reads_what_was_committed() {
    let t = Test::new(3).await;
    for (i, want) in [(1usize, 1u64), (2, 2), (0, 3), (1, 4)] {
        assert_eq!(incr(&t.kv(i)).await.unwrap(), want, "written on node {i}");
    }
    for i in 0..3 {
        assert_eq!(
            read(&t.kv(i)).await.unwrap().as_deref(),
            Some(&b"4"[..]),
            "read on {i}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_leader_fails_fast_and_the_majority_goes_on_without_losing_a_write() {
    let t = Test::new(3).await;
    let old = t.leader().unwrap();
    assert_eq!(incr(&t.kv(old)).await.unwrap(), 1);
    t.cut(old, true);
    let started = std::time::Instant::now();
    let refused = incr(&t.kv(old)).await.unwrap_err();
    assert!(refused.contains("no majority"), "{refused}");
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "{:?}",
        started.elapsed()
    );
    assert!(read(&t.kv(old)).await.unwrap_err().contains("no majority"));
    t.until(|t| t.leader().is_some_and(|l| l != old)).await;
    let new = t.leader().unwrap();
    let next = incr(&t.kv(new)).await.unwrap();
    // The isolated leader's write may have been lost or kept: either
    // way the acknowledged 1 is there and nothing counts twice.
    assert!(next == 2 || next == 3, "{next}");
    t.cut(old, false);
    t.until(|t| {
        t.nodes[old].1.applied() >= t.nodes[new].1.applied() && t.nodes[old].1.applied().is_some()
    })
    .await;
    let seen = read(&t.kv(old)).await.unwrap();
    assert_eq!(seen, Some(next.to_string().into_bytes()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_voter_is_removed_and_a_new_node_joins_by_snapshot() {
    let mut t = Test::new(3).await;
    for _ in 0..5 {
        incr(&t.kv(0)).await.unwrap();
    }
    let leader = t.leader().unwrap();
    let victim = (leader + 1) % 3;
    let old_id = t.nodes[victim].1.id();
    t.cut(victim, true);
    // The membership shows the removal when its entry is appended; the
    // machine records the removed id when it applies it, a moment later.
    t.until(|t| {
        t.voters(leader) == 2
            && t.nodes[leader]
                .1
                .e()
                .machine
                .was_removed(t.nodes[victim].1.id())
    })
    .await;
    t.nodes[leader]
        .1
        .e()
        .raft
        .trigger()
        .snapshot()
        .await
        .unwrap();
    let fresh = t.add().await;
    let addr = t.nodes.last().unwrap().0.clone();
    let via = Member {
        advertise: t.nodes[leader].0.clone(),
    };
    fresh.join(&via, &Member { advertise: addr }).await.unwrap();
    t.until(|t| t.voters(leader) == 3).await;
    assert_eq!(
        read(&ReplicatedKv::new(fresh)).await.unwrap().as_deref(),
        Some(&b"5"[..])
    );
    // The cut-off node, removed, starts a new life under a new id and
    // joins again; its old id is never let back in.
    t.cut(victim, false);
    t.until(|t| t.nodes[victim].1.id() != old_id).await;
    let again = Member {
        advertise: t.nodes[victim].0.clone(),
    };
    t.nodes[victim].1.join(&via, &again).await.unwrap();
    // A learner: a fourth voter would tolerate no more failures than three.
    let new_id = t.nodes[victim].1.id();
    t.until(|t| {
        let m = t.nodes[leader].1.e().raft.metrics().borrow().clone();
        m.membership_config
            .membership()
            .learner_ids()
            .any(|l| l == new_id)
    })
    .await;
    assert_eq!(t.voters(leader), 3);
    assert!(t.nodes[leader].1.e().machine.was_removed(old_id));
    assert!(
        !t.nodes[victim].1.may_restart(),
        "a node that rejoined starts no group again"
    );
    let refused = t.nodes[victim].1.initialize(again.clone(), false).await;
    assert!(refused.is_err(), "a rejoined node restarted a group");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_frames_change_nothing_and_foreign_keys_are_refused() {
    let t = Test::new(3).await;
    let follower = (t.leader().unwrap() + 1) % 3;
    assert_eq!(incr(&t.kv(follower)).await.unwrap(), 1);
    let taken = t.mesh.taken.lock().unwrap().clone();
    let writes: Vec<_> = taken
        .iter()
        .filter(|(_, p, _)| p.ends_with("/write"))
        .collect();
    assert!(!writes.is_empty(), "the follower forwarded its write");
    for (to, path, body) in &writes {
        let replay = t.mesh.deliver(to, path, body.clone()).await;
        assert_eq!(replay.status(), StatusCode::CONFLICT, "a replay is refused");
    }
    // The latest appends taken once already.
    for (to, path, body) in taken
        .iter()
        .rev()
        .filter(|(_, p, _)| p.ends_with("/append"))
        .take(20)
    {
        assert_ne!(
            t.mesh.deliver(to, path, body.clone()).await.status(),
            StatusCode::OK
        );
    }
    assert_eq!(read(&t.kv(0)).await.unwrap().as_deref(), Some(&b"1"[..]));

    // A node of another deployment key cannot even be heard.
    let stranger = Sealer::new(&RaftKey::derive(&DeploymentKey::generate(), DEPLOYMENT));
    let me = t.nodes[0].1.id();
    let cluster = t.nodes[0].1.e().wire.cluster().unwrap();
    let (frame, _) = stranger
        .seal_request(nacre_sync::raft::RaftCall::Vote, &cluster, 7, me, b"x")
        .unwrap();
    let answer = t
        .mesh
        .deliver(&t.nodes[0].0, "/enclave/raft/vote", frame.into())
        .await;
    assert_eq!(answer.status(), StatusCode::FORBIDDEN);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_write_takes_effect_once() {
    let t = Test::new(3).await;
    let leader = &t.nodes[t.leader().unwrap()].1;
    incr(&t.kv(0)).await.unwrap();
    let cmd = types::Cmd::Kv {
        id: leader.next_write(),
        ns: "counter".into(),
        op: KvOp::Increment {
            bucket: "b".into(),
            key: "n".into(),
            delta: 1,
        },
        quota: types::Quota {
            max_keys: 10,
            max_bytes: 1000,
        },
    };
    let first = leader.write(cmd.clone()).await.unwrap();
    let second = leader.write(cmd).await.unwrap();
    assert_eq!(first, second);
    assert_eq!(read(&t.kv(1)).await.unwrap().as_deref(), Some(&b"2"[..]));
}

use nacre_sync::raft::Sealer;
