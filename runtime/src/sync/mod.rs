//! Several enclaves, one service: leader designation, attested key
//! synchronization, heartbeats and failover.
//!
//! - [`designation`]: who leads (nitriding's `/enclave/leader` at
//!   `--fqdn-leader`) and the loop that runs this enclave's part.
//! - [`exchange`]: one attested exchange of key material
//!   ([`nacre_sync::seal::Payload`]:
//!   certificate and key, ACME account, state slots, guest table, the
//!   deployment key), sealed to a key the receiver made for it; only the
//!   blobs the receiver lacks travel.
//! - [`workers`]: heartbeats, both ends, and the leader's pushes.
//! - [`held`]: what this enclave holds, the next version at each change,
//!   and the one decision that starts a deployment's first key set.
//! - [`link`]: how requests reach other enclaves ([`PeerLink`]); the real
//!   link, through the host proxy, is [`client`]'s.
//!
//! The messages, the sealed material, the deployment key's tags and the one
//! order key material is taken in ([`nacre_sync::order`]: the same key set
//! at a strictly later version, a different one never) are the protocol
//! crate's, `nacre-sync`.
//!
//! Neither the host nor the addresses are trusted: documents, the sealed
//! material and the deployment key's tags are.

mod client;
mod designation;
mod exchange;
mod handler;
mod held;
mod link;
mod material;
mod peer;
mod replicated;
mod state;
#[cfg(test)]
mod tests;
mod workers;

use std::sync::Arc;
use std::time::Duration;

use nacre_api::NONCE_LEN;
use nacre_transport::Address;
use nacre_transport::tunnel::Target;
use rand::RngCore;
use tokio::sync::watch;

pub use crate::fleet::Role;
pub use client::PooledPeerClient;
pub use handler::SyncListener;
pub use held::KeySet;
pub use link::{LinkFuture, PeerLink};
pub use peer::Refusal;
pub use state::SyncedState;

pub(crate) use material::{Blobs, Material, SEALED, states};

use self::client::PeerClient;
use self::designation::Designation;
use self::exchange::Offers;
use self::held::Holdings;
use self::peer::Peers;
use self::workers::Workers;
use crate::attest::Attester;
use crate::fleet::{Deployment, Replica, ReplicaView, SyncStats};
use crate::guests::Registry;
use crate::tls::Identity;

/// Why a sync step failed.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The sync machinery could not be set up.
    #[error("sync setup: {0}")]
    Setup(String),
    /// This enclave's own attestation failed.
    #[error("attestation: {0}")]
    Attestation(String),
    /// A peer could not be reached or answered out of turn.
    #[error("peer {0}")]
    Peer(String),
    /// A peer's document failed a check; nothing moved.
    #[error("refused the peer: {0}")]
    Refused(#[from] Refusal),
    /// Bytes that are not what the protocol says.
    #[error("{0}")]
    Malformed(String),
}

impl From<nacre_sync::ProtoError> for SyncError {
    fn from(e: nacre_sync::ProtoError) -> SyncError {
        SyncError::Malformed(e.0)
    }
}

/// `--fqdn-leader` and the rest of the sync flags.
#[derive(Debug, Clone)]
pub struct SyncConfig {
    /// Where the leader is reached (through the host), and the name of the
    /// deployment: an enclave takes key material of this deployment only.
    pub leader: Target,
    /// Where the leader reaches this enclave's sync listener: said by the
    /// host proxy's Hello on the control link, the one value that differs
    /// between the parents of one image.
    pub advertise: watch::Receiver<Option<Target>>,
    /// PCR0 values of other images this enclave syncs with (rolling
    /// upgrades).
    pub accept_pcr0: Vec<Vec<u8>>,
    /// The host proxy's CONNECT endpoint.
    pub egress: Address,
    /// How long a leader that holds no keys, and sees no sign of its
    /// deployment, waits before starting the deployment's first key set.
    pub genesis_after: Duration,
}

/// Settings that [`SyncConfig`] gives, as the modules use them.
struct Settings {
    leader: Target,
    deployment: String,
    genesis_after: Duration,
}

/// The deployment as this enclave takes part in it.
///
/// Each concern keeps its own state, in its own file: [`Designation`]
/// (who leads), [`Offers`] (the receiver's side of exchanges),
/// [`Workers`] (heartbeats and pushes) and [`Holdings`] (what is held).
/// The node holds only what they share.
pub struct Node {
    stats: SyncStats,
    config: Settings,
    advertise: watch::Receiver<Option<Target>>,
    role: watch::Sender<Role>,
    material: Material,
    peers: Peers,
    /// How requests reach other enclaves: through the host proxy, or in
    /// memory in tests.
    link: Arc<dyn PeerLink>,
    designation: Designation,
    offers: Offers,
    workers: Workers,
    holdings: Holdings,
    /// The replicated data (Raft), when the deployment has it: who leads
    /// comes from there once this enclave is a member.
    replica: std::sync::OnceLock<Arc<dyn Replica>>,
}

fn random_nonce() -> [u8; NONCE_LEN] {
    let mut n = [0u8; NONCE_LEN];
    rand::thread_rng().fill_bytes(&mut n);
    n
}

/// A refusal by a sync endpoint: the status and why.
type Refused = (http::StatusCode, String);

fn refused(status: http::StatusCode, message: impl Into<String>) -> Refused {
    (status, message.into())
}

impl Node {
    /// Sets up sync for this enclave, designating from now on; peers are
    /// reached through the host proxy at `config.egress`.
    pub fn new(
        config: SyncConfig,
        identity: Arc<Identity>,
        registry: Arc<Registry>,
        state: Arc<SyncedState>,
        attester: Arc<dyn Attester>,
        role: watch::Sender<Role>,
    ) -> Result<Arc<Node>, SyncError> {
        let link = Arc::new(PeerClient::new(config.egress.clone())?);
        Node::with_link(config, identity, registry, state, attester, role, link)
    }

    /// As [`Node::new`], with peers reached through `link` instead of the
    /// host proxy (`config.egress` is not used): how tests run several
    /// nodes in one process.
    pub fn with_link(
        config: SyncConfig,
        identity: Arc<Identity>,
        registry: Arc<Registry>,
        state: Arc<SyncedState>,
        attester: Arc<dyn Attester>,
        role: watch::Sender<Role>,
        link: Arc<dyn PeerLink>,
    ) -> Result<Arc<Node>, SyncError> {
        let peers = Peers::new(attester, config.accept_pcr0.clone())?;
        let material = Material {
            identity,
            state,
            registry,
            replicated: Default::default(),
        };
        Ok(Node::assemble(config, material, peers, link, role))
    }

    fn assemble(
        config: SyncConfig,
        material: Material,
        peers: Peers,
        link: Arc<dyn PeerLink>,
        role: watch::Sender<Role>,
    ) -> Arc<Node> {
        role.send_replace(Role::Designating);
        Arc::new(Node {
            stats: SyncStats::default(),
            config: Settings {
                deployment: config.leader.to_string(),
                leader: config.leader,
                genesis_after: config.genesis_after,
            },
            advertise: config.advertise,
            role,
            material,
            peers,
            link,
            designation: Designation::new(),
            offers: Offers::new(),
            workers: Workers::new(),
            holdings: Holdings::new(),
            replica: std::sync::OnceLock::new(),
        })
    }

    /// Replicates guests' data with `replica`: from then on, once this
    /// enclave is a member, the group's leader is the deployment's leader
    /// and state moves through it, not with the key material.
    pub fn set_replica(&self, replica: Arc<dyn Replica>) {
        self.material
            .replicated
            .store(true, std::sync::atomic::Ordering::Release);
        if self.replica.set(replica).is_ok()
            && let (Some(r), Some(held)) = (self.replica(), self.held())
        {
            r.hold_key(&held.key);
        }
    }

    fn replica(&self) -> Option<&Arc<dyn Replica>> {
        self.replica.get()
    }

    /// Where this enclave stands in the replicated group (`Outside` when
    /// there is none).
    fn replica_view(&self) -> ReplicaView {
        self.replica()
            .map(|r| r.view())
            .unwrap_or(ReplicaView::Outside)
    }

    /// Whether this enclave may act for the deployment's data (seal its
    /// snapshots): without replication, as its role says; with it, only
    /// as the replicated group's leader, never as an enclave outside the
    /// group that leads at the name (it may hold older data).
    pub fn leads_data(&self) -> bool {
        match self.replica() {
            None => true,
            Some(r) => matches!(
                r.view(),
                ReplicaView::Member {
                    leader: Some((true, _))
                }
            ),
        }
    }

    /// Whether this enclave applied everything the replicated group
    /// committed before now (at once `true` without replication).
    pub async fn data_caught_up(&self) -> bool {
        match self.replica() {
            Some(r) => r.caught_up().await.is_ok(),
            None => true,
        }
    }

    /// Whether guests' data is replicated (state slots then move by the
    /// log, not with key material).
    pub fn replicates(&self) -> bool {
        self.replica().is_some()
    }

    /// The replicated group, if any (for `/enclave/config`).
    pub fn replica_handle(&self) -> Option<Arc<dyn Replica>> {
        self.replica().cloned()
    }

    /// What `/enclave/config` shows of the replicated group, if any.
    pub fn describe_replica(&self) -> Option<serde_json::Value> {
        self.replica().map(|r| r.describe())
    }

    fn role(&self) -> Role {
        self.role.borrow().clone()
    }

    fn set_role(&self, role: Role) {
        if *self.role.borrow() != role {
            tracing::info!(role = ?role, "sync role");
            self.role.send_replace(role);
        }
    }

    /// Where peers reach this enclave, as the host proxy said.
    fn advertise(&self) -> Option<Target> {
        self.advertise.borrow().clone()
    }
}

impl Deployment for Node {
    fn holds_keys(&self) -> bool {
        self.held().is_some()
    }

    fn spread(self: Arc<Self>) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
        Box::pin(async move { self.spread_change().await })
    }

    fn stats(&self) -> &SyncStats {
        &self.stats
    }
}
