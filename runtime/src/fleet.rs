//! What the runtime's other features need to know of the deployment this
//! enclave belongs to: its [`Role`], and the narrow [`Deployment`] port.
//!
//! ACME, metrics and the router depend on this module, never on the sync
//! machinery behind it ([`crate::sync`]), which implements the port. That
//! keeps the arrows one way: sync uses attestation and the guest table,
//! the features use the port, and the composition root joins the two.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

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

impl Role {
    /// Every role's name, as [`Role::name`] gives them.
    pub const NAMES: [&'static str; 4] = ["alone", "designating", "leader", "worker"];

    /// The role's name in metrics and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Role::Alone => "alone",
            Role::Designating => "designating",
            Role::Leader => "leader",
            Role::Worker { .. } => "worker",
        }
    }
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

/// The deployment as the other features see it: whether this enclave
/// holds its keys, a way to wait until a change has reached the other
/// enclaves, and what sync did.
pub trait Deployment: Send + Sync {
    /// Whether this enclave holds the deployment's keys: taken from a
    /// peer, or made as a leader that found none.
    fn holds_keys(&self) -> bool;

    /// On the leader: waits (boundedly) until every worker heard from
    /// holds what changed now; elsewhere returns at once. ACME calls it
    /// before the CA validates a challenge any enclave may be asked to
    /// answer.
    fn spread(self: Arc<Self>) -> Pin<Box<dyn Future<Output = ()> + Send>>;

    /// What sync did so far.
    fn stats(&self) -> &SyncStats;
}

/// Who leads the deployment's replicated data, as this enclave sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplicaView {
    /// This enclave is not in the group (yet): it has no keys, or has not
    /// joined, or was removed.
    Outside,
    /// A member; the leader, if one is known now (none during an
    /// election).
    Member {
        /// The leader: whether it is this enclave, and where it is
        /// reached.
        leader: Option<(bool, String)>,
    },
}

/// What a [`Replica`] call resolves to: done, or why not (`E`).
pub type ReplicaFuture<'a, E> = Pin<Box<dyn Future<Output = Result<(), E>> + Send + 'a>>;

/// The deployment's replicated data (guests' key-value data and state,
/// under Raft) as sync sees it: it hands over the deployment key, says
/// when this enclave starts the deployment or should join it, and takes
/// its role from who leads.
pub trait Replica: Send + Sync {
    /// Where this enclave stands in the group.
    fn view(&self) -> ReplicaView;
    /// This enclave holds the deployment key `key`.
    fn hold_key(&self, key: &nacre_sync::auth::DeploymentKey);
    /// Starts the group here, with this enclave's data as its first
    /// snapshot (a new deployment, or a whole deployment's cold start).
    /// `genesis`: the deployment's first key set was just made here;
    /// otherwise this enclave restarts the group from restored data,
    /// which only one that restored the sealed snapshot at start may.
    fn start(&self, genesis: bool) -> ReplicaFuture<'_, String>;
    /// Asks the member at `via` (`HOST:PORT`) to let this enclave in;
    /// when it did not, why, and whether a live group answered (evidence
    /// that this enclave must not start one of its own).
    fn join<'a>(&'a self, via: &'a str) -> ReplicaFuture<'a, (bool, String)>;
    /// Waits until this enclave has applied everything the group
    /// committed before the call (a read index): what a leader seals must
    /// hold every acknowledged write, even just after an election.
    fn caught_up(&self) -> ReplicaFuture<'_, String>;
    /// What `/enclave/config` shows of the group.
    fn describe(&self) -> serde_json::Value;
}
