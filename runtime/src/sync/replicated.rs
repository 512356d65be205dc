//! Roles when guests' data is replicated ([`crate::fleet::Replica`],
//! Raft): once this enclave is a member of the group, the group's leader is
//! the deployment's leader. Designation at the name is then only how a
//! newcomer finds the deployment, and how the first enclave of a new (or
//! wholly restarted) deployment is chosen.
//!
//! - A member that leads is [`Role::Leader`]: it pushes key material to
//!   the members that heartbeat it, runs ACME and writes sealed snapshots.
//! - A member that follows is [`Role::Worker`] of the leader's address,
//!   and heartbeats it there (not at the name).
//! - During an election a member is [`Role::Designating`]: guests' writes
//!   fail fast meanwhile, saying nothing was written.
//! - An enclave that holds the deployment's keys but is outside the group
//!   asks to join: at the name, then at the members that heartbeat it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use nacre_transport::tunnel::Target;
use tokio::sync::watch;

use super::designation::{PROBE_EVERY, Reach, TICK};
use super::{Node, Role};
use crate::fleet::ReplicaView;
use crate::guests::Snapshot;

/// How often an enclave outside the group asks to join.
const JOIN_EVERY: Duration = Duration::from_secs(1);
/// Addresses asked at most per round.
const JOIN_AT_MOST: usize = 16;

impl Node {
    /// One turn of the run loop while this enclave is a member of the
    /// replicated group; `false` when it is not (designation as usual).
    pub(super) async fn replicated_turn(
        self: &Arc<Self>,
        changes: &mut watch::Receiver<Arc<Snapshot>>,
        identity: &mut watch::Receiver<u64>,
    ) -> bool {
        let Some(replica) = self.replica() else {
            return false;
        };
        let leader = match replica.view() {
            ReplicaView::Outside => {
                self.join_when_due().await;
                return false;
            }
            ReplicaView::Member { leader } => leader,
        };
        self.look_at_the_name().await;
        match leader {
            None => {
                self.set_role(Role::Designating);
                tokio::time::sleep(TICK / 4).await;
            }
            Some((true, _)) => {
                if self.role() != Role::Leader {
                    self.set_role(Role::Leader);
                    changes.borrow_and_update();
                    identity.borrow_and_update();
                    // What changed while another led goes out now.
                    self.identity_changed();
                    self.push_all();
                }
                self.forget_stale_workers();
                tokio::select! {
                    _ = changes.changed() => self.changed(),
                    Ok(()) = identity.changed() => self.identity_changed(),
                    () = tokio::time::sleep(TICK / 4) => {}
                }
            }
            Some((false, advertise)) => {
                self.set_role(Role::Worker {
                    leader: advertise.clone(),
                });
                self.beat_leader(&advertise).await;
                tokio::time::sleep(TICK).await;
            }
        }
        true
    }

    /// Every [`PROBE_EVERY`], a member heartbeats whoever answers at the
    /// name (unless it is this enclave): an enclave there outside the
    /// group (a fresh one the host put there, or one restarted from a
    /// sealed snapshot) so sees the deployment, gets its keys by the
    /// attested exchange and learns where to join, rather than start a
    /// group of its own.
    async fn look_at_the_name(self: &Arc<Self>) {
        if !self.designation.name_due(PROBE_EVERY) {
            return;
        }
        if matches!(self.reach_self().await, Reach::Myself | Reach::Unreachable) {
            return;
        }
        let name = self.config.leader.clone();
        if let Err(e) = self.heartbeat(&name).await {
            tracing::debug!("heartbeat to whoever is at the name: {e}");
        }
    }

    async fn beat_leader(self: &Arc<Self>, advertise: &str) {
        match Target::parse(advertise, None) {
            Ok(target) => {
                if let Err(e) = self.heartbeat(&target).await {
                    tracing::debug!(leader = %advertise, "heartbeat to the group's leader failed: {e}");
                }
            }
            Err(e) => tracing::warn!(leader = %advertise, "the group's leader's address: {e}"),
        }
    }

    /// Outside the group with the deployment's keys: asks to join, at the
    /// name and then at each member heard from, at most every
    /// [`JOIN_EVERY`].
    async fn join_when_due(self: &Arc<Self>) {
        let (Some(replica), Some(_)) = (self.replica(), self.held()) else {
            return;
        };
        if !self.designation.join_due(JOIN_EVERY) {
            return;
        }
        let mut via = vec![self.config.leader.to_string()];
        via.extend(self.designation.keyholders());
        via.extend(self.workers.heard_from());
        via.sort();
        via.dedup();
        via.truncate(JOIN_AT_MOST);
        // All at once, the first that lets this enclave in ends the rest:
        // addresses a stranger put in the list cost one round, not one
        // timeout each.
        let mut tries: futures::stream::FuturesUnordered<_> = via
            .iter()
            .map(|at| async move { (at, replica.join(at).await) })
            .collect();
        while let Some((at, outcome)) = futures::StreamExt::next(&mut tries).await {
            match outcome {
                Ok(()) => {
                    tracing::info!(via = %at, "joined the deployment's replicated data");
                    self.designation.saw_group();
                    return;
                }
                Err((group, e)) => {
                    if group {
                        self.designation.saw_group();
                    }
                    tracing::debug!(via = %at, "joining: {e}");
                }
            }
        }
    }

    /// Starts the replicated group here (this enclave just started the
    /// deployment, or leads at the name after a whole restart).
    pub(super) async fn start_replica(&self, genesis: bool) {
        let Some(replica) = self.replica() else {
            return;
        };
        match replica.start(genesis).await {
            Ok(()) => tracing::warn!(
                "started the deployment's replicated data here, from what this enclave holds"
            ),
            Err(e) => tracing::error!("starting the replicated data: {e}"),
        }
    }

    /// Whether this enclave, leading at the name with the deployment's
    /// keys (restored from a sealed snapshot, or taken from enclaves all
    /// outside any group) but outside any group itself, heard from no
    /// live group for `--sync-genesis-after`: then it starts one, its data
    /// the first snapshot. A member of a live group that answers a join
    /// (even "no leader now", during an election) holds this off.
    pub(super) fn may_restart_replica(&self, led_since: Instant) -> bool {
        self.replica().is_some()
            && self.held().is_some()
            && self.replica_view() == ReplicaView::Outside
            && self
                .designation
                .no_group_since(led_since, self.config.genesis_after)
    }
}
