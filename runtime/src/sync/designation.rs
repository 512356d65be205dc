//! Who leads: nitriding's designation at `--fqdn-leader`, and the loop that
//! runs this enclave's part from then on.
//!
//! Every enclave asks the name for `/enclave/leader` with a fresh nonce;
//! the one that receives its own nonce leads, the others hear 410 and
//! work. A leader keeps asking. A leader that holds keys steps down only
//! for a 410 tagged with its deployment key (another member leads at the
//! name now), never for a stranger's; one that holds nothing steps down
//! for any. A worker whose leader stops answering designates again,
//! keeping what it holds.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{Method, StatusCode};

use super::workers::Beat;
use super::{Node, Role, random_nonce};
use crate::fleet::ReplicaView;
use nacre_api::NONCE_LEN;
use nacre_sync::auth::Label;
use nacre_sync::wire::{LeaderAnswer, leads_parts};

/// How often workers heartbeat, and everyone retries.
pub(super) const TICK: Duration = Duration::from_secs(1);
/// How often a leader checks it is still the one at the name.
pub(super) const PROBE_EVERY: Duration = Duration::from_secs(2);
/// Enclaves holding keys remembered, to ask to join at.
const KEYHOLDERS: usize = 8;
/// Heartbeats that may fail before a worker designates again.
const MISSED_HEARTBEATS: u32 = 3;

/// What asking the name for `/enclave/leader` showed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Reach {
    /// The request came back to this enclave.
    Myself,
    /// Another enclave leads there (410); `member`: its answer carries
    /// this enclave's deployment key's tag.
    Other {
        /// Whether the leader proved it is of this deployment.
        member: bool,
    },
    /// Someone is there but not designated yet.
    NotYet,
    /// Nobody answered.
    Unreachable,
}

/// What designation keeps between a probe and its answer, and the last
/// sign that the deployment exists elsewhere.
pub(super) struct Designation {
    /// The nonce of the probe in flight: a probe carrying it came back to
    /// this very enclave.
    probe: Mutex<Option<[u8; NONCE_LEN]>>,
    /// The probe in flight reached this enclave.
    probe_seen: AtomicBool,
    /// The last sign that the deployment exists elsewhere.
    evidence: Mutex<Instant>,
    /// When this enclave last asked to join the replicated group.
    join_tried: Mutex<Option<Instant>>,
    /// When a live group last showed itself.
    group_seen: Mutex<Option<Instant>>,
    /// Where the last few enclaves that said they hold keys are reached:
    /// where an enclave outside the replicated group asks to join.
    keyholders: Mutex<std::collections::VecDeque<String>>,
    /// When a member last looked at who answers at the name.
    name_checked: Mutex<Option<Instant>>,
}

impl Designation {
    pub(super) fn new() -> Designation {
        Designation {
            probe: Mutex::new(None),
            probe_seen: AtomicBool::new(false),
            evidence: Mutex::new(Instant::now()),
            join_tried: Mutex::new(None),
            group_seen: Mutex::new(None),
            keyholders: Mutex::new(std::collections::VecDeque::new()),
            name_checked: Mutex::new(None),
        }
    }

    /// A fresh probe's nonce, remembered until its answer.
    fn begin_probe(&self) -> [u8; NONCE_LEN] {
        let nonce = random_nonce();
        if let Ok(mut probe) = self.probe.lock() {
            *probe = Some(nonce);
        }
        self.probe_seen.store(false, Ordering::Release);
        nonce
    }

    /// Whether the probe begun last came back to this enclave (asked once
    /// per probe).
    fn came_back(&self) -> bool {
        self.probe_seen.swap(false, Ordering::AcqRel)
    }

    /// A probe carrying `nonce` reached this enclave: notes it if it is
    /// this enclave's own.
    fn arrived(&self, nonce: [u8; NONCE_LEN]) {
        if self.probe.lock().ok().and_then(|p| *p) == Some(nonce) {
            self.probe_seen.store(true, Ordering::Release);
        }
    }

    /// Notes a sign that this enclave's deployment exists elsewhere (a
    /// heartbeat from an enclave holding keys, an exchange begun): a
    /// leader holding nothing waits for it instead of starting a new key
    /// set.
    pub(super) fn saw_deployment(&self) {
        if let Ok(mut at) = self.evidence.lock() {
            *at = Instant::now();
        }
    }

    /// Whether a join attempt is due (none for `every`); notes one now.
    pub(super) fn join_due(&self, every: Duration) -> bool {
        due(&self.join_tried, every)
    }

    /// Whether a member's look at the name is due; notes one now.
    pub(super) fn name_due(&self, every: Duration) -> bool {
        due(&self.name_checked, every)
    }

    /// An enclave at `at` said it holds keys (a heartbeat with a lineage).
    pub(super) fn saw_keyholder(&self, at: &str) {
        if let Ok(mut k) = self.keyholders.lock() {
            k.retain(|a| a != at);
            k.push_front(at.to_string());
            k.truncate(KEYHOLDERS);
        }
    }

    /// The enclaves last heard saying they hold keys, newest first.
    pub(super) fn keyholders(&self) -> Vec<String> {
        self.keyholders
            .lock()
            .map(|k| k.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// A live replicated group showed itself (this enclave joined it, or a
    /// member of it answered).
    pub(super) fn saw_group(&self) {
        if let Ok(mut j) = self.group_seen.lock() {
            *j = Some(Instant::now());
        }
    }

    /// Whether this enclave has led since `since` for `quiet_for`, with no
    /// live group seen for `quiet_for`.
    pub(super) fn no_group_since(&self, since: Instant, quiet_for: Duration) -> bool {
        let seen = self.group_seen.lock().map(|j| *j).unwrap_or(None);
        since.elapsed() >= quiet_for && seen.is_none_or(|j| j.elapsed() >= quiet_for)
    }

    /// Whether nothing showed the deployment for `quiet_for`, counting
    /// from `since` at the earliest.
    pub(super) fn quiet(&self, since: Instant, quiet_for: Duration) -> bool {
        self.evidence
            .lock()
            .map(|at| at.max(since).elapsed() >= quiet_for)
            .unwrap_or(false)
    }
}

/// Whether nothing was noted in `last` for `every`; notes now if so.
fn due(last: &Mutex<Option<Instant>>, every: Duration) -> bool {
    let Ok(mut last) = last.lock() else {
        return false;
    };
    if last.is_some_and(|t| t.elapsed() < every) {
        return false;
    }
    *last = Some(Instant::now());
    true
}

impl Node {
    /// Runs designation, heartbeats and pushes until the process ends.
    pub async fn run(self: Arc<Self>) {
        let mut changes = self.material.registry.subscribe();
        let mut identity = self.material.identity.subscribe();
        let state_changed = self.material.state.changed.clone();
        let mut missed = 0;
        let mut led_since = Instant::now();
        let mut probed = Instant::now();
        loop {
            if self.replicated_turn(&mut changes, &mut identity).await {
                continue;
            }
            match self.role() {
                Role::Alone => return,
                Role::Designating => match self.reach_self().await {
                    Reach::Myself => {
                        self.set_role(Role::Leader);
                        led_since = Instant::now();
                        probed = Instant::now();
                        changes.borrow_and_update();
                        identity.borrow_and_update();
                    }
                    Reach::Other { .. } => {
                        missed = 0;
                        self.set_role(Role::Worker {
                            leader: self.config.leader.to_string(),
                        });
                    }
                    Reach::NotYet | Reach::Unreachable => tokio::time::sleep(TICK).await,
                },
                Role::Worker { .. } => {
                    let leader = self.config.leader.clone();
                    match self.heartbeat(&leader).await {
                        Ok(()) => missed = 0,
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
                        if self.should_step_down().await {
                            self.set_role(Role::Designating);
                            continue;
                        }
                    }
                    self.forget_stale_workers();
                    if self.may_start_deployment(led_since) {
                        self.start_deployment();
                        self.push_all();
                        self.start_replica(true).await;
                    } else if self.may_restart_replica(led_since) {
                        self.start_replica(false).await;
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

    /// On the leader: whether the name now leads to another member.
    async fn should_step_down(&self) -> bool {
        match self.reach_self().await {
            Reach::Other { member: true } => {
                tracing::warn!(
                    "another enclave of this deployment leads at the name now; stepping down"
                );
                true
            }
            Reach::Other { member: false } if self.held().is_none() => {
                tracing::warn!("another enclave leads at the name now; stepping down");
                true
            }
            Reach::Other { member: false } => {
                tracing::warn!(
                    "an enclave that cannot show this deployment's key answers as leader at the name; staying leader"
                );
                false
            }
            _ => false,
        }
    }

    /// Whether the name `--fqdn-leader` leads to this very enclave.
    pub(super) async fn reach_self(&self) -> Reach {
        let nonce = self.designation.begin_probe();
        let path = format!("/enclave/leader?nonce={}", hex::encode(nonce));
        let answer = self
            .call(&self.config.leader, Method::GET, &path, None)
            .await;
        if self.designation.came_back() {
            return Reach::Myself;
        }
        match answer {
            Ok((StatusCode::GONE, body)) => {
                let tag = serde_json::from_slice::<LeaderAnswer>(&body)
                    .ok()
                    .and_then(|a| a.tag);
                let member = match (self.held(), tag) {
                    (Some(held), Some(tag)) => {
                        held.key.verify(Label::Leads, &leads_parts(&nonce), &tag)
                    }
                    _ => false,
                };
                Reach::Other { member }
            }
            Ok(_) => Reach::NotYet,
            Err(e) => {
                tracing::debug!("designation: {e}");
                Reach::Unreachable
            }
        }
    }

    /// `GET /enclave/leader`: 410 from the leader (tagged when it holds
    /// keys) and from any member of a replicated group, 200 while
    /// designating, 503 from a worker.
    pub(super) fn leader_probe(&self, nonce: [u8; NONCE_LEN]) -> (StatusCode, LeaderAnswer) {
        self.designation.arrived(nonce);
        // In a replicated group every member answers for the deployment:
        // a newcomer the host sends to any of them is let in there.
        let member = matches!(self.replica_view(), ReplicaView::Member { .. });
        match self.role() {
            Role::Worker { .. } if member => (
                StatusCode::GONE,
                LeaderAnswer {
                    status: "a member of this deployment answers here".into(),
                    tag: self
                        .held()
                        .map(|h| h.key.tag(Label::Leads, &leads_parts(&nonce))),
                },
            ),
            Role::Leader => (
                StatusCode::GONE,
                LeaderAnswer {
                    status: "this enclave leads".into(),
                    tag: self
                        .held()
                        .map(|h| h.key.tag(Label::Leads, &leads_parts(&nonce))),
                },
            ),
            Role::Designating | Role::Alone => (
                StatusCode::OK,
                LeaderAnswer {
                    status: "no leader designated yet".into(),
                    tag: None,
                },
            ),
            Role::Worker { .. } => (
                StatusCode::SERVICE_UNAVAILABLE,
                LeaderAnswer {
                    status: "this enclave is a worker".into(),
                    tag: None,
                },
            ),
        }
    }
}
