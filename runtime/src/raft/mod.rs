//! One set of guest data for a deployment of several enclaves: guests'
//! key-value data and state slots replicated by Raft (openraft) among the
//! attested enclaves.
//!
//! - [`types`]: what the log carries.
//! - [`log`] and [`machine`]: the in-memory log and the state machine over
//!   the enclave's key-value data and state slots.
//! - [`wire`] and [`network`]: sealed Raft messages over the sync link.
//! - [`endpoints`]: `/enclave/raft/*`, the receiving side.
//! - [`service`]: what guests call (writes committed by a majority, reads
//!   after a read index), forwarding from followers to the leader.
//! - [`reads`] and [`leases`]: read indexes, and the read leases that
//!   let a follower read without one.
//! - [`members`]: the leader's membership loop (learners promoted, silent
//!   members removed) and joining.
//!
//! Raft never imports the sync machinery: the deployment key reaches it as
//! [`Keys`], and who leads leaves it as [`Leadership`].

mod endpoints;
#[cfg(test)]
mod hostile_tests;
mod leases;
mod log;
mod machine;
mod members;
mod network;
mod reads;
mod service;
#[cfg(test)]
mod tests;
mod types;
mod wire;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use openraft::{Config, SnapshotPolicy};
use tokio::sync::watch;

pub use endpoints::RaftEndpoints;
pub use machine::Slots;
pub use members::JoinError;
pub use service::{MAX_ENTRY, ReplicatedKv, ReplicatedState};
pub use types::{Member, NodeId};
pub use wire::{Cluster, Keys};

use self::leases::Leasing;
use self::log::MemoryLog;
use self::machine::Machine;
use self::network::Network;
use self::reads::Reads;
use self::types::{TypeConfig, WriteId};
use self::wire::Wire;
use crate::guests::kv::MemoryKv;
use crate::sync::PeerLink;

/// The Raft flags (`--raft-*`, `--kv-write-timeout`).
#[derive(Debug, Clone)]
pub struct RaftSettings {
    /// How often the leader heartbeats.
    pub heartbeat: Duration,
    /// A follower that hears no leader for a random time in this range
    /// stands for election.
    pub election: (Duration, Duration),
    /// A member the leader has not heard from for this long is removed.
    pub remove_after: Duration,
    /// How long a guest's write or read may wait for a majority.
    pub write_timeout: Duration,
    /// Tests only: a broken store that acknowledges key-value writes
    /// applied on the receiving enclave alone (`--kv-unsafe-local-ack`).
    pub unsafe_local_ack: bool,
}

impl Default for RaftSettings {
    fn default() -> RaftSettings {
        RaftSettings {
            heartbeat: Duration::from_millis(100),
            election: (Duration::from_millis(500), Duration::from_millis(1000)),
            remove_after: Duration::from_secs(30),
            write_timeout: Duration::from_secs(1),
            unsafe_local_ack: false,
        }
    }
}

/// Who leads the group, as this node sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Leadership {
    /// This node.
    pub me: NodeId,
    /// The leader, and where it is reached.
    pub leader: Option<(NodeId, Member)>,
    /// Whether this node is in the group's membership.
    pub member: bool,
    /// The current term.
    pub term: u64,
}

/// Why the group could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("raft: {0}")]
pub struct RaftError(pub String);

/// One life of this enclave's Raft node: an id, its openraft instance,
/// its state machine. A node removed from the group while cut off starts
/// another life under a new id ([`RaftNode::rejoin`]).
pub(crate) struct Engine {
    raft: openraft::Raft<TypeConfig>,
    wire: Arc<Wire>,
    machine: Machine,
    seq: AtomicU64,
    reads: Reads,
    leasing: Arc<Leasing>,
}

/// What a new life of the node is made from.
struct Parts {
    deployment: String,
    slots: Arc<dyn Slots>,
    link: Arc<dyn PeerLink>,
    /// The deployment's Raft key, to seal with in the next life too.
    key: std::sync::Mutex<Option<nacre_sync::raft::RaftKey>>,
}

/// This enclave's node of the deployment's Raft group.
pub struct RaftNode {
    engine: ArcSwap<Engine>,
    parts: Parts,
    settings: RaftSettings,
    kv: Arc<MemoryKv>,
    /// Whether this node may start a group again from what it holds:
    /// only once it restored the deployment's sealed snapshot at start,
    /// and never after a rejoin (a node cut off from a live group, or
    /// handed keys by one, must never start another).
    may_restart: std::sync::atomic::AtomicBool,
    /// The member that added this node to its group at its last join:
    /// whom to ask whether it was removed while it still knows no other
    /// member (its first entries never came).
    joined_via: std::sync::Mutex<Option<(NodeId, Member)>>,
}

fn config(s: &RaftSettings, deployment: &str) -> Result<Config, RaftError> {
    let ms = |d: Duration| d.as_millis() as u64;
    Config {
        cluster_name: deployment.to_string(),
        heartbeat_interval: ms(s.heartbeat),
        election_timeout_min: ms(s.election.0),
        election_timeout_max: ms(s.election.1),
        // Through the host proxies, and a chunk may be a megabyte.
        install_snapshot_timeout: 5_000,
        snapshot_max_chunk_size: 1 << 20,
        max_payload_entries: 300,
        // The log lives in memory: snapshot and purge every 1,000 entries.
        snapshot_policy: SnapshotPolicy::LogsSinceLast(1000),
        max_in_snapshot_log_to_keep: 1000,
        ..Default::default()
    }
    .validate()
    .map_err(|e| RaftError(e.to_string()))
}

impl Engine {
    /// A pristine life with a fresh random id.
    async fn start(
        parts: &Parts,
        settings: &RaftSettings,
        kv: Arc<MemoryKv>,
    ) -> Result<Engine, RaftError> {
        // Never 0 (openraft's "none"), never reused: 64 random bits.
        let id = rand::random::<u64>() | 1;
        let wire = Arc::new(Wire::new(id, parts.link.clone()));
        let (kick, kicked) = tokio::sync::mpsc::channel(1);
        let leasing = Arc::new(Leasing::new(settings.election.0, kick));
        let machine = Machine::new(kv, parts.slots.clone(), leasing.book.clone());
        let network = Network {
            wire: wire.clone(),
            leasing: leasing.clone(),
        };
        let config = Arc::new(config(settings, &parts.deployment)?);
        let raft = openraft::Raft::new(id, config, network, MemoryLog::default(), machine.clone())
            .await
            .map_err(|e| RaftError(e.to_string()))?;
        let _ = leasing.metrics.set(raft.metrics());
        tokio::spawn(tell_commits(raft.clone(), kicked));
        Ok(Engine {
            raft,
            wire,
            machine,
            seq: AtomicU64::new(0),
            reads: Reads::default(),
            leasing,
        })
    }
}

/// Sends an append at once when a commit index was held back from
/// followers and every lease holder now has it (else followers would
/// learn it only at the next heartbeat). Ends with the life of the node
/// (its [`Leasing`] dropped).
async fn tell_commits(
    raft: openraft::Raft<TypeConfig>,
    mut kicked: tokio::sync::mpsc::Receiver<()>,
) {
    while kicked.recv().await.is_some() {
        if raft.trigger().heartbeat().await.is_err() {
            return;
        }
    }
}

impl RaftNode {
    /// A pristine node with a fresh random id, over the enclave's
    /// key-value data and state slots, reaching peers through `link`.
    /// Must run on the main runtime: openraft spawns its tasks there.
    pub async fn start(
        deployment: &str,
        settings: RaftSettings,
        kv: Arc<MemoryKv>,
        slots: Arc<dyn Slots>,
        link: Arc<dyn PeerLink>,
    ) -> Result<Arc<RaftNode>, RaftError> {
        let parts = Parts {
            deployment: deployment.to_string(),
            slots,
            link,
            key: std::sync::Mutex::new(None),
        };
        let engine = Engine::start(&parts, &settings, kv.clone()).await?;
        Ok(Arc::new(RaftNode {
            engine: ArcSwap::from_pointee(engine),
            parts,
            settings,
            kv,
            may_restart: std::sync::atomic::AtomicBool::new(false),
            joined_via: std::sync::Mutex::new(None),
        }))
    }

    /// The node's current life.
    pub(crate) fn e(&self) -> Arc<Engine> {
        self.engine.load_full()
    }

    /// Starts a new life under a new id, outside any group: this node was
    /// removed (it heard no leader for `--raft-remove-after`: cut off, it
    /// missed its removal, and the group refuses its votes). Its data stay
    /// until it joins again, when the group's snapshot replaces them. A
    /// node that rejoined never starts a group.
    pub async fn rejoin(&self) -> Result<(), RaftError> {
        self.may_restart
            .store(false, std::sync::atomic::Ordering::Release);
        let old = self.e();
        let _ = old.raft.shutdown().await;
        let engine = Engine::start(&self.parts, &self.settings, self.kv.clone()).await?;
        let key = self.parts.key.lock().ok().and_then(|k| k.clone());
        if let Some(key) = key {
            engine.wire.set_keys(Keys::new(key));
        }
        tracing::warn!(
            old = %format!("{:016x}", old.wire.me()),
            new = %format!("{:016x}", engine.wire.me()),
            "raft: no leader heard for --raft-remove-after: rejoining under a new id"
        );
        self.engine.store(Arc::new(engine));
        Ok(())
    }

    /// Whether this node may start a group again from what it holds.
    pub fn may_restart(&self) -> bool {
        self.may_restart.load(std::sync::atomic::Ordering::Acquire)
    }

    /// This enclave restored the deployment's sealed snapshot at start.
    pub fn restored(&self) {
        self.may_restart
            .store(true, std::sync::atomic::Ordering::Release);
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.e().wire.me()
    }

    /// Takes the deployment's Raft key: from now on this node can speak
    /// Raft.
    pub fn set_key(&self, key: nacre_sync::raft::RaftKey) {
        if let Ok(mut held) = self.parts.key.lock() {
            *held = Some(key.clone());
        }
        self.e().wire.set_keys(Keys::new(key));
    }

    /// Whether this node belongs to a group (initialised one, or joined).
    pub fn in_group(&self) -> bool {
        self.e().wire.cluster().is_some()
    }

    /// Whether the node holds the deployment key.
    pub fn has_keys(&self) -> bool {
        self.e().wire.has_keys()
    }

    /// The next id for a write proposed here.
    fn next_write(&self) -> WriteId {
        WriteId {
            origin: self.id(),
            seq: self.e().seq.fetch_add(1, Ordering::Relaxed) + 1,
        }
    }

    /// Starts a new group of this node alone, the data this enclave holds
    /// its first snapshot: a new deployment (`genesis`), or a whole
    /// deployment's cold start from the sealed snapshot it restored.
    pub async fn initialize(&self, me: Member, genesis: bool) -> Result<Cluster, RaftError> {
        if self.in_group() {
            return Err(RaftError("this node is already in a group".into()));
        }
        if !genesis && !self.may_restart() {
            return Err(RaftError(
                "only an enclave that restored the sealed snapshot at start, and never rejoined a group, starts the group again".into(),
            ));
        }
        let cluster: Cluster = rand::random();
        self.e().wire.set_cluster(cluster);
        self.e()
            .raft
            .initialize(BTreeMap::from([(self.id(), me)]))
            .await
            .map_err(|e| RaftError(e.to_string()))?;
        self.e()
            .raft
            .wait(Some(Duration::from_secs(10)))
            .current_leader(self.id(), "initialize")
            .await
            .map_err(|e| RaftError(e.to_string()))?;
        // Later members take this data by snapshot, never by replaying
        // entries onto data they do not have: snapshot, then purge.
        let _ = self.e().raft.trigger().snapshot().await;
        let snapshot = self
            .e()
            .raft
            .wait(Some(Duration::from_secs(10)))
            .metrics(|m| m.snapshot.is_some(), "first snapshot")
            .await
            .map_err(|e| RaftError(e.to_string()))?
            .snapshot;
        if let Some(at) = snapshot {
            let _ = self.e().raft.trigger().purge_log(at.index).await;
        }
        Ok(cluster)
    }

    /// Who leads, as this node sees it now. A leader that has not heard
    /// from a majority for longer than an election timeout counts as no
    /// leader: openraft 0.9 never steps an isolated leader down, and it
    /// must not go on acting for the deployment (ACME, sealed snapshots).
    pub fn leadership(&self) -> Leadership {
        let metrics = self.e().raft.metrics();
        let m = metrics.borrow();
        let membership = m.membership_config.membership();
        let isolated = !self.majority_heard(membership, self.settings.election.1);
        let leader = m
            .current_leader
            .filter(|id| !(*id == self.id() && isolated))
            .and_then(|id| membership.get_node(&id).map(|member| (id, member.clone())));
        Leadership {
            me: self.id(),
            leader,
            member: membership.get_node(&self.id()).is_some(),
            term: m.current_term,
        }
    }

    /// Whether this node heard from a majority of the voters (itself
    /// counted) within `within`: the answers to its own messages and the
    /// frames it took. openraft's own figure is computed when its metrics
    /// are published, which a paused and resumed process does not redo.
    fn majority_heard(
        &self,
        membership: &openraft::Membership<NodeId, Member>,
        within: Duration,
    ) -> bool {
        let voters: Vec<NodeId> = membership.voter_ids().collect();
        let heard = voters
            .iter()
            .filter(|v| {
                **v == self.id()
                    || self
                        .e()
                        .wire
                        .heard(**v)
                        .is_some_and(|at| at.elapsed() <= within)
            })
            .count();
        heard * 2 > voters.len()
    }

    /// Changes of [`RaftNode::leadership`]: woken at every metrics change.
    pub fn changes(&self) -> watch::Receiver<openraft::RaftMetrics<NodeId, Member>> {
        self.e().raft.metrics()
    }

    /// What `/enclave/config` shows of the group.
    pub fn describe(&self) -> serde_json::Value {
        let m = self.e().raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let hex = |id: &NodeId| format!("{id:016x}");
        serde_json::json!({
            "node": hex(&self.id()),
            "leader": m.current_leader.as_ref().map(hex),
            "term": m.current_term,
            "state": format!("{:?}", m.state).to_lowercase(),
            "voters": membership.voter_ids().map(|i| hex(&i)).collect::<Vec<_>>(),
            "learners": membership.learner_ids().map(|i| hex(&i)).collect::<Vec<_>>(),
            "applied": m.last_applied.map(|l| l.index),
            "cluster": self.e().wire.cluster().map(hex_cluster),
            "read_lease_ms": self
                .e()
                .leasing
                .held
                .valid(m.current_leader, m.current_term)
                .map(|(_, until)| until.saturating_duration_since(tokio::time::Instant::now()).as_millis() as u64),
        })
    }

    /// The data sealed snapshots hold: the state machine's last applied
    /// index with the key-value data (the writer reads both).
    pub fn applied(&self) -> Option<u64> {
        self.e().machine.applied().map(|l| l.index)
    }

    /// Stops the node (a clean stop).
    pub async fn shutdown(&self) {
        let _ = self.e().raft.shutdown().await;
    }
}

fn hex_cluster(c: Cluster) -> String {
    c.iter().map(|b| format!("{b:02x}")).collect()
}
