//! Several enclaves, one service (SPEC §7): leader designation, attested
//! key synchronization, heartbeats and failover.
//!
//! - Designation (nitriding's): every enclave asks `--fqdn-leader` for
//!   `/enclave/leader` with a fresh nonce; the one that receives its own
//!   nonce is the leader, the others hear 410 and are workers. A leader
//!   keeps asking, and steps down when the name leads elsewhere; a worker
//!   whose leader stops answering designates again, keeping the keys it
//!   holds, so an enclave that holds them and finds itself at the name
//!   leads with them.
//! - Key material ([`seal::Payload`]: certificate and key, state slots,
//!   guest table) moves sender to receiver in one exchange: the receiver's
//!   document carries the sender's nonce and a fresh public key; the
//!   sender's carries the receiver's nonce and the SHA-256 of the sealed
//!   keys ([`peer`] checks both sides).
//! - Workers heartbeat the leader with the hash of what they hold; the
//!   leader sends to any whose hash differs, and at once to all of them at
//!   every change it makes. A leader holding nothing (or an earlier version
//!   of the same key set than a worker's) asks that worker for its keys
//!   instead, so a fresh enclave at the name never splits a deployment
//!   with keys of its own, and a leader that missed the last pushes before
//!   a failover catches up.

mod client;
mod handler;
mod material;
mod outbound;
mod peer;
mod seal;
mod state;
mod wire;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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
use self::material::Material;
use self::outbound::{Beat, Reach};
use self::peer::Peers;
use self::seal::Recipient;
use self::wire::Lineage;
use crate::attest::Attester;
use crate::guests::Registry;
use crate::tls::Identity;

/// How often workers heartbeat, and everyone retries.
const TICK: Duration = Duration::from_secs(1);
/// How often a leader checks it is still the one at the name.
const PROBE_EVERY: Duration = Duration::from_secs(2);
/// Heartbeats that may fail before a worker designates again.
const MISSED_HEARTBEATS: u32 = 3;
/// How long a new leader that holds no keys waits for a worker that does
/// before it makes the deployment's keys itself.
const GRACE: Duration = Duration::from_secs(3);
/// A worker not heard from for this long is forgotten.
const FORGET: Duration = Duration::from_secs(10);
/// How long a receiver's offer stays open.
const OFFER_TTL: Duration = Duration::from_secs(30);

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

/// `--fqdn-leader` and the rest of the sync flags.
#[derive(Debug, Clone)]
pub struct SyncConfig {
    /// Where the leader is reached (through the host).
    pub leader: Target,
    /// Where the leader reaches this enclave's sync listener.
    pub advertise: Target,
    /// PCR0 values of other images this enclave syncs with (rolling
    /// upgrades).
    pub accept_pcr0: Vec<Vec<u8>>,
    /// The host proxy's CONNECT endpoint.
    pub egress: Address,
}

/// The key material this enclave holds.
#[derive(Clone)]
struct Held {
    lineage: Lineage,
    version: u64,
    /// SHA-256 of `payload`: what heartbeats compare.
    hash: [u8; 32],
    /// The encoded payload, as sent.
    payload: Arc<Vec<u8>>,
}

/// How long a leader waits for its workers to hold a change it spreads.
const SPREAD: Duration = Duration::from_secs(10);

/// A receiver's open offer.
struct Pending {
    recipient: Recipient,
    nonce: [u8; NONCE_LEN],
    until: Instant,
}

/// A worker as the leader last heard of it.
struct Seen {
    at: Instant,
    hash: Option<String>,
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

/// The deployment as this enclave takes part in it.
pub struct Sync {
    stats: SyncStats,
    /// The identity's change count included in what this enclave holds.
    identity_held: AtomicU64,
    config: SyncConfig,
    role: watch::Sender<Role>,
    material: Material,
    peers: Peers,
    client: PeerClient,
    held: Mutex<Option<Held>>,
    probe: Mutex<Option<[u8; NONCE_LEN]>>,
    probe_seen: AtomicBool,
    pending: Mutex<Option<Pending>>,
    applying: tokio::sync::Mutex<()>,
    workers: Mutex<HashMap<String, Seen>>,
    pushing: Mutex<std::collections::HashSet<String>>,
}

fn random_nonce() -> [u8; NONCE_LEN] {
    let mut n = [0u8; NONCE_LEN];
    rand::thread_rng().fill_bytes(&mut n);
    n
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Whether key set `a` at version `av` should replace `b` at `bv` on a
/// leader: only a later version of the same set. A leader never trades its
/// key set for another one a worker shows (the host could keep a stale
/// enclave of an earlier deployment around to roll the guests back); it
/// sends its own instead.
fn newer(a: &Lineage, av: u64, b: &Lineage, bv: u64) -> bool {
    a.id == b.id && av > bv
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
        let client = PeerClient::new(config.egress.clone())?;
        role.send_replace(Role::Designating);
        Ok(Arc::new(Sync {
            stats: SyncStats::default(),
            identity_held: AtomicU64::new(0),
            config,
            role,
            material: Material {
                identity,
                state,
                registry,
            },
            peers,
            client,
            held: Mutex::new(None),
            probe: Mutex::new(None),
            probe_seen: AtomicBool::new(false),
            pending: Mutex::new(None),
            applying: tokio::sync::Mutex::new(()),
            workers: Mutex::new(HashMap::new()),
            pushing: Mutex::new(std::collections::HashSet::new()),
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

    fn held(&self) -> Option<Held> {
        self.held.lock().ok()?.clone()
    }

    fn hold(&self, lineage: Lineage, version: u64, payload: Vec<u8>) {
        let hash = seal::sha256(&payload);
        if let Ok(mut held) = self.held.lock() {
            *held = Some(Held {
                lineage,
                version,
                hash,
                payload: Arc::new(payload),
            });
        }
        self.material
            .state
            .held
            .store(true, std::sync::atomic::Ordering::Release);
    }

    /// Runs designation, heartbeats and pushes until the process ends.
    pub async fn run(self: Arc<Self>) {
        let mut changes = self.material.registry.subscribe();
        let mut identity = self.material.identity.subscribe();
        let state_changed = self.material.state.changed.clone();
        let mut missed = 0;
        let mut led_since = None;
        let mut probed = Instant::now();
        loop {
            match self.role() {
                Role::Alone => return,
                Role::Designating => match self.reach_self().await {
                    Reach::Myself => {
                        self.set_role(Role::Leader);
                        led_since = Some(Instant::now());
                        probed = Instant::now();
                        changes.borrow_and_update();
                        identity.borrow_and_update();
                    }
                    Reach::Other => {
                        missed = 0;
                        self.set_role(Role::Worker {
                            leader: self.config.leader.to_string(),
                        });
                    }
                    Reach::NotYet | Reach::Unreachable => tokio::time::sleep(TICK).await,
                },
                Role::Worker { .. } => {
                    match self.heartbeat().await {
                        Ok(answer) => {
                            missed = 0;
                            self.stats.heartbeats.fetch_add(1, Ordering::Relaxed);
                            if answer.send_keys {
                                let leader = self.config.leader.clone();
                                if let Err(e) = self.push(&leader).await.map(drop) {
                                    tracing::warn!("sending keys to the leader failed: {e}");
                                }
                            }
                        }
                        Err(e) => {
                            missed += 1;
                            tracing::debug!("heartbeat failed ({missed}): {e}");
                            if missed >= MISSED_HEARTBEATS || matches!(e, Beat::NotLeader) {
                                tracing::warn!(
                                    "the leader is gone; designating again, serving with the keys held"
                                );
                                self.set_role(Role::Designating);
                                continue;
                            }
                        }
                    }
                    tokio::time::sleep(TICK).await;
                }
                Role::Leader => {
                    if probed.elapsed() >= PROBE_EVERY {
                        probed = Instant::now();
                        if let Reach::Other = self.reach_self().await {
                            tracing::warn!("another enclave leads at the name now; stepping down");
                            self.set_role(Role::Designating);
                            continue;
                        }
                    }
                    self.forget_stale_workers();
                    let since = led_since.get_or_insert_with(Instant::now);
                    if self.held().is_none() && since.elapsed() >= GRACE {
                        self.make_keys();
                    }
                    tokio::select! {
                        _ = changes.changed() => self.changed(),
                        Ok(()) = identity.changed() => self.identity_changed(),
                        () = state_changed.notified() => self.changed(),
                        () = tokio::time::sleep(TICK) => {}
                    }
                }
            }
        }
    }

    /// A new leader that found no worker holding keys makes the
    /// deployment's, from what it holds now.
    fn make_keys(self: &Arc<Self>) {
        let mut id = [0u8; 16];
        rand::thread_rng().fill_bytes(&mut id);
        let lineage = Lineage {
            id: hex::encode(id),
            created_ms: now_ms(),
        };
        let payload = self.gather(lineage.clone(), 1);
        tracing::info!(lineage = %lineage.id, "no enclave of this deployment holds keys: these are its keys now");
        self.hold(lineage, 1, payload);
        self.push_all();
    }

    /// A change on the leader: the next version, sent to every worker.
    fn changed(self: &Arc<Self>) {
        let Some(held) = self.held() else {
            return;
        };
        let version = held.version + 1;
        let payload = self.gather(held.lineage.clone(), version);
        self.hold(held.lineage, version, payload);
        self.push_all();
    }

    /// What this enclave holds now, encoded, noting which change of the
    /// identity it includes.
    fn gather(&self, lineage: Lineage, version: u64) -> Vec<u8> {
        self.note_identity();
        self.material.gather(lineage, version).encode()
    }

    /// The identity as it is now is in what this enclave holds (gathered,
    /// or received and applied).
    fn note_identity(&self) {
        self.identity_held
            .store(self.material.identity.version(), Ordering::Relaxed);
    }

    /// An identity change on the leader, unless it is already held: one
    /// [`Sync::spread`] gathered, or keys this enclave applied.
    fn identity_changed(self: &Arc<Self>) {
        if self.material.identity.version() != self.identity_held.load(Ordering::Relaxed) {
            self.changed();
        }
    }

    /// Sends the keys to every worker that does not hold this version.
    fn push_all(self: &Arc<Self>) {
        let current = self.held().map(|h| hex::encode(h.hash));
        let targets: Vec<String> = self
            .workers
            .lock()
            .map(|w| {
                w.iter()
                    .filter(|(_, seen)| seen.hash != current)
                    .map(|(t, _)| t.clone())
                    .collect()
            })
            .unwrap_or_default();
        for t in targets {
            self.push_in_background(t);
        }
    }

    fn push_in_background(self: &Arc<Self>, worker: String) {
        let Ok(target) = Target::parse(&worker, None) else {
            return;
        };
        if let Ok(mut pushing) = self.pushing.lock()
            && !pushing.insert(worker.clone())
        {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            match this.push(&target).await {
                Ok(hash) => {
                    tracing::info!(%worker, "keys sent");
                    if let Ok(mut workers) = this.workers.lock()
                        && let Some(seen) = workers.get_mut(&worker)
                    {
                        seen.hash = Some(hex::encode(hash));
                    }
                }
                Err(e) => tracing::warn!(%worker, "sending keys failed: {e}"),
            }
            if let Ok(mut pushing) = this.pushing.lock() {
                pushing.remove(&worker);
            }
        });
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

    /// On the leader: gathers what changed now and waits (at most ten
    /// seconds) until every worker heard from holds it. The ACME client
    /// calls it before the CA validates a challenge any enclave may be
    /// asked to answer.
    pub async fn spread(self: &Arc<Self>) {
        if self.role() != Role::Leader {
            return;
        }
        self.changed();
        let Some(held) = self.held() else {
            return;
        };
        let want = Some(hex::encode(held.hash));
        let all_hold = || {
            self.workers
                .lock()
                .map(|w| w.values().all(|seen| seen.hash == want))
                .unwrap_or(true)
        };
        let deadline = Instant::now() + SPREAD;
        while !all_hold() {
            if Instant::now() >= deadline {
                tracing::warn!("not every worker holds the change after {SPREAD:?}; going on");
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn forget_stale_workers(&self) {
        if let Ok(mut workers) = self.workers.lock() {
            workers.retain(|w, seen| {
                let keep = seen.at.elapsed() < FORGET;
                if !keep {
                    tracing::info!(worker = %w, "forgetting a worker not heard from");
                }
                keep
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(id: &str, created_ms: u64) -> Lineage {
        Lineage {
            id: id.into(),
            created_ms,
        }
    }

    #[test]
    fn a_leader_takes_only_later_versions_of_its_own_key_set() {
        let (ours, other) = (set("aa", 10), set("bb", 5));
        assert!(newer(&ours, 3, &ours, 2));
        assert!(!newer(&ours, 2, &ours, 2));
        assert!(!newer(&ours, 1, &ours, 2));
        // Another set, older or not, never replaces the leader's.
        assert!(!newer(&other, 9, &ours, 2));
        assert!(!newer(&set("cc", 20), 9, &ours, 2));
    }
}
