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
mod material;
mod peer;
mod state;
mod workers;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nacre_api::NONCE_LEN;
use nacre_transport::Address;
use nacre_transport::tunnel::Target;
use rand::RngCore;
use tokio::sync::watch;

pub use handler::SyncListener;
pub use peer::Refusal;
pub use state::SyncedState;

use self::client::PeerClient;
use self::exchange::Pending;
use self::held::Held;
use self::material::Material;
use self::peer::Peers;
use self::workers::Workers;
use crate::attest::Attester;
use crate::guests::Registry;
use crate::tls::Identity;

/// This enclave's part in its deployment.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase", tag = "role")]
pub enum Role {
    /// No `--fqdn-leader`: state and keys are this enclave's own.
    Alone,
    /// Finding out who leads.
    Designating,
    /// It leads: writes happen here and reach the workers.
    Leader,
    /// It follows the leader at `leader`.
    Worker {
        /// `--fqdn-leader`.
        leader: String,
    },
}

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

/// What sync did, for metrics.
#[derive(Debug, Default)]
pub struct SyncStats {
    /// Heartbeats sent (a worker) or received (the leader).
    pub heartbeats: AtomicU64,
    /// Key material sent to a peer.
    pub sent: AtomicU64,
    /// Key material received and applied.
    pub received: AtomicU64,
}

/// Settings that [`SyncConfig`] gives, as the modules use them.
struct Settings {
    leader: Target,
    deployment: String,
    genesis_after: Duration,
}

/// The deployment as this enclave takes part in it.
pub struct Sync {
    stats: SyncStats,
    config: Settings,
    advertise: watch::Receiver<Option<Target>>,
    role: watch::Sender<Role>,
    material: Material,
    peers: Peers,
    client: PeerClient,
    held: Mutex<Option<Held>>,
    /// The identity's change count included in what this enclave holds.
    identity_held: AtomicU64,
    /// The last sign that the deployment exists elsewhere.
    evidence: Mutex<Instant>,
    probe: Mutex<Option<[u8; NONCE_LEN]>>,
    probe_seen: AtomicBool,
    offers: Mutex<HashMap<[u8; NONCE_LEN], Pending>>,
    applying: tokio::sync::Mutex<()>,
    workers: Mutex<Workers>,
    /// This process's heartbeat session, and its count.
    session: String,
    seq: AtomicU64,
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

impl Sync {
    /// Sets up sync for this enclave, designating from now on.
    pub fn new(
        config: SyncConfig,
        identity: Arc<Identity>,
        registry: Arc<Registry>,
        state: Arc<SyncedState>,
        attester: Arc<dyn Attester>,
        role: watch::Sender<Role>,
    ) -> Result<Arc<Sync>, SyncError> {
        let peers = Peers::new(attester, config.accept_pcr0.clone())?;
        let client = PeerClient::new(config.egress)?;
        role.send_replace(Role::Designating);
        let mut session = [0u8; 16];
        rand::thread_rng().fill_bytes(&mut session);
        Ok(Arc::new(Sync {
            stats: SyncStats::default(),
            config: Settings {
                deployment: config.leader.to_string(),
                leader: config.leader,
                genesis_after: config.genesis_after,
            },
            advertise: config.advertise,
            role,
            material: Material {
                identity,
                state,
                registry,
            },
            peers,
            client,
            held: Mutex::new(None),
            identity_held: AtomicU64::new(0),
            evidence: Mutex::new(Instant::now()),
            probe: Mutex::new(None),
            probe_seen: AtomicBool::new(false),
            offers: Mutex::new(HashMap::new()),
            applying: tokio::sync::Mutex::new(()),
            workers: Mutex::new(Workers::default()),
            session: hex::encode(session),
            seq: AtomicU64::new(0),
        }))
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

    /// What sync did so far.
    pub fn stats(&self) -> &SyncStats {
        &self.stats
    }

    /// Whether this enclave holds the deployment's keys: taken from a
    /// peer, or made as a leader that found none.
    pub fn holds_keys(&self) -> bool {
        self.held().is_some()
    }
}
