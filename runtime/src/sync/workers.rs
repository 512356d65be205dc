//! Heartbeats, both ends: a worker's to the leader, tagged with the
//! deployment key, and the leader's list of workers, to which it sends each
//! new version (one exchange in flight per worker; changes made meanwhile
//! go in the next one, so a burst of writes costs a few exchanges, not one
//! each).
//!
//! The leader believes only what the deployment key tags: a heartbeat from
//! a worker holding its key set is refused untagged, or replayed (its
//! session's count must go up). A worker that holds nothing yet cannot tag;
//! at most [`MAX_STRANGERS`] such are kept, never waited for, and what they
//! get is only an attested exchange, which gives keys to nothing but an
//! enclave of this image.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{Method, StatusCode};
use nacre_transport::tunnel::Target;
use rand::RngCore;

use super::{Node, Refused, Role};
use nacre_sync::order::later;
use nacre_sync::wire::{Heartbeat, HeartbeatAnswer};

/// A worker not heard from for this long is forgotten.
const FORGET: Duration = Duration::from_secs(10);
/// How long a leader waits for its workers to hold a change it spreads.
const SPREAD: Duration = Duration::from_secs(10);
/// Workers of the deployment a leader keeps at most.
const MAX_MEMBERS: usize = 64;
/// Workers holding nothing yet (untagged) a leader keeps at most.
pub(super) const MAX_STRANGERS: usize = 8;
/// Heartbeat sessions remembered, against replays.
const MAX_SESSIONS: usize = 256;

/// A worker as the leader last heard of it.
struct Seen {
    at: Instant,
    hash: Option<String>,
    /// Its heartbeat was tagged with the deployment key.
    member: bool,
}

/// The leader's view of its workers.
#[derive(Default)]
struct Known {
    seen: HashMap<String, Seen>,
    /// The last count seen of each heartbeat session.
    sessions: HashMap<String, (u64, Instant)>,
    /// Pushes in flight, and whether another change came meanwhile.
    pushing: HashMap<String, bool>,
}

/// Both ends of heartbeats: the workers a leader heard from and the pushes
/// to them, and this process's own heartbeat session as a worker.
pub(super) struct Workers {
    known: Mutex<Known>,
    /// This process's heartbeat session: 16 random bytes, hex.
    session: String,
    /// Its count: a leader refuses one that does not go up.
    seq: AtomicU64,
}

/// Why a heartbeat failed.
#[derive(Debug)]
pub(super) enum Beat {
    /// Whoever is at the name does not lead.
    NotLeader,
    /// Nobody answered, or garbage, or an answer not of this deployment.
    Failed(String),
}

impl std::fmt::Display for Beat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Beat::NotLeader => f.write_str("whoever is at the name does not lead"),
            Beat::Failed(why) => f.write_str(why),
        }
    }
}

impl Workers {
    pub(super) fn new() -> Workers {
        let mut session = [0u8; 16];
        rand::thread_rng().fill_bytes(&mut session);
        Workers {
            known: Mutex::new(Known::default()),
            session: hex::encode(session),
            seq: AtomicU64::new(0),
        }
    }

    /// The session and next count of a heartbeat of this process.
    fn next_beat(&self) -> (String, u64) {
        (
            self.session.clone(),
            self.seq.fetch_add(1, Ordering::Relaxed) + 1,
        )
    }

    /// Records a heartbeat: refuses a replayed one, and strangers past the
    /// bound.
    fn note(&self, worker: &str, beat: &Heartbeat, member: bool) -> Result<(), Refused> {
        let mut w = self.known.lock().map_err(|_| {
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "sync state lost".to_string(),
            )
        })?;
        if member {
            w.session_goes_up(beat)?;
        }
        let known = w.seen.get(worker).is_some_and(|s| s.member || !member);
        let (members, strangers) =
            w.seen.values().fold(
                (0, 0),
                |(m, s), seen| {
                    if seen.member { (m + 1, s) } else { (m, s + 1) }
                },
            );
        let full = if member {
            members >= MAX_MEMBERS
        } else {
            strangers >= MAX_STRANGERS
        };
        if !known && full {
            return Err((StatusCode::TOO_MANY_REQUESTS, "too many workers".into()));
        }
        w.seen.insert(
            worker.to_string(),
            Seen {
                at: Instant::now(),
                hash: beat.hashed_keys.clone(),
                member,
            },
        );
        Ok(())
    }

    /// Where the enclaves heard from are reached (a join there needs the
    /// deployment key on both sides, so strangers are as safe to ask).
    pub(super) fn heard_from(&self) -> Vec<String> {
        self.known
            .lock()
            .map(|w| w.seen.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Workers that do not hold `current`.
    fn behind(&self, current: Option<&str>) -> Vec<String> {
        self.known
            .lock()
            .map(|w| {
                w.seen
                    .iter()
                    .filter(|(_, seen)| seen.hash.as_deref() != current)
                    .map(|(t, _)| t.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Whether a push to `worker` should start now; if one is in flight,
    /// it is told to run again instead.
    fn start_push(&self, worker: &str) -> bool {
        let Ok(mut w) = self.known.lock() else {
            return true;
        };
        if let Some(again) = w.pushing.get_mut(worker) {
            *again = true;
            return false;
        }
        w.pushing.insert(worker.to_string(), false);
        true
    }

    /// `worker` was sent `hash`: it holds the deployment's keys now (the
    /// exchange was attested), a member waited for by spreads.
    fn pushed(&self, worker: &str, hash: [u8; 32]) {
        if let Ok(mut w) = self.known.lock()
            && let Some(seen) = w.seen.get_mut(worker)
        {
            seen.hash = Some(hex::encode(hash));
            seen.member = true;
        }
    }

    /// A push to `worker` ended: whether another is due (a change came
    /// meanwhile); if not, none is in flight any more.
    fn push_again(&self, worker: &str) -> bool {
        let Ok(mut w) = self.known.lock() else {
            return false;
        };
        match w.pushing.get_mut(worker) {
            Some(again) if *again => {
                *again = false;
                true
            }
            _ => {
                w.pushing.remove(worker);
                false
            }
        }
    }

    /// Whether every member, and every worker being sent keys right now,
    /// holds `want`; never strangers nobody could reach (a forged
    /// heartbeat's address).
    fn all_hold(&self, want: Option<&str>) -> bool {
        self.known
            .lock()
            .map(|w| {
                w.seen
                    .iter()
                    .filter(|(addr, s)| s.member || w.pushing.contains_key(*addr))
                    .all(|(_, s)| s.hash.as_deref() == want)
            })
            .unwrap_or(true)
    }

    fn forget_stale(&self) {
        if let Ok(mut w) = self.known.lock() {
            w.seen.retain(|worker, seen| {
                let keep = seen.at.elapsed() < FORGET;
                if !keep {
                    tracing::info!(%worker, "forgetting a worker not heard from");
                }
                keep
            });
        }
    }
}

impl Known {
    /// A member's heartbeat must count up within its session: a replayed
    /// one is refused. Few sessions are remembered, the oldest forgotten.
    fn session_goes_up(&mut self, beat: &Heartbeat) -> Result<(), Refused> {
        if let Some((last, _)) = self.sessions.get(&beat.session)
            && beat.seq <= *last
        {
            return Err((StatusCode::CONFLICT, "a replayed heartbeat".into()));
        }
        if self.sessions.len() >= MAX_SESSIONS
            && let Some(oldest) = self
                .sessions
                .iter()
                .min_by_key(|(_, (_, at))| *at)
                .map(|(s, _)| s.clone())
        {
            self.sessions.remove(&oldest);
        }
        self.sessions
            .insert(beat.session.clone(), (beat.seq, Instant::now()));
        Ok(())
    }
}

impl Node {
    /// A worker's heartbeat to the leader at `leader` (the name, or the
    /// replicated group's leader); sends its keys when asked.
    pub(super) async fn heartbeat(self: &Arc<Self>, leader: &Target) -> Result<(), Beat> {
        let Some(advertise) = self.advertise() else {
            return Err(Beat::Failed(
                "the host proxy has not said yet where peers reach this enclave (nacre-host-proxy --sync-advertise)".into(),
            ));
        };
        let held = self.held();
        let (session, seq) = self.workers.next_beat();
        let mut beat = Heartbeat {
            hashed_keys: held.as_ref().map(|h| hex::encode(h.hash)),
            worker_hostname: advertise.to_string(),
            lineage: held.as_ref().map(|h| h.payload.lineage.clone()),
            version: held.as_ref().map_or(0, |h| h.payload.version),
            session,
            seq,
            tag: None,
        };
        if let Some(h) = &held {
            beat.sign(&h.key);
        }
        let body = serde_json::to_vec(&beat).map_err(|e| Beat::Failed(e.to_string()))?;
        let (status, answer) = self
            .call(leader, Method::POST, "/enclave/heartbeat", Some(body))
            .await
            .map_err(|e| Beat::Failed(e.to_string()))?;
        let answer: HeartbeatAnswer = match status {
            StatusCode::OK => serde_json::from_slice(&answer)
                .map_err(|e| Beat::Failed(format!("the leader's answer: {e}")))?,
            StatusCode::SERVICE_UNAVAILABLE => return Err(Beat::NotLeader),
            other => return Err(Beat::Failed(format!("the leader answered {other}"))),
        };
        if let Some(h) = &held {
            // A leader holding nothing yet asks for keys untagged; any
            // other answer must come from a member.
            let fresh_leader = answer.send_keys && answer.tag.is_none();
            if !fresh_leader && !answer.verify(&beat, &h.key) {
                return Err(Beat::Failed(
                    "the leader's answer is not tagged with this deployment's key".into(),
                ));
            }
        }
        self.stats.heartbeats.fetch_add(1, Ordering::Relaxed);
        if answer.send_keys {
            // In the background: heartbeats go on while a large delivery
            // does (a leader that hangs meanwhile is still noticed).
            self.push_in_background(leader.to_string());
        }
        Ok(())
    }

    /// `POST /enclave/heartbeat`, at the leader.
    pub(super) fn heartbeat_in(
        self: &Arc<Self>,
        beat: Heartbeat,
    ) -> Result<HeartbeatAnswer, Refused> {
        // In a replicated group any member holding keys answers: a
        // newcomer the host sends to a follower gets its keys there.
        let member = matches!(
            self.replica_view(),
            crate::fleet::ReplicaView::Member { .. }
        ) && self.held().is_some();
        if self.role() != Role::Leader && !member {
            return Err((
                StatusCode::SERVICE_UNAVAILABLE,
                "this enclave does not lead".into(),
            ));
        }
        beat.check()
            .map_err(|e| (StatusCode::BAD_REQUEST, format!("heartbeat: {e}")))?;
        let worker = Target::parse(&beat.worker_hostname, None)
            .map_err(|e| (StatusCode::BAD_REQUEST, format!("worker_hostname {e}")))?
            .to_string();
        if beat.lineage.is_some() {
            self.designation.saw_deployment();
            self.designation.saw_keyholder(&worker);
        }
        let Some(held) = self.held() else {
            // Nothing to check it against: a worker that holds keys is
            // asked for them; one that holds none is kept (as a stranger)
            // to be sent the first key set once it is made.
            if beat.lineage.is_none() {
                self.workers.note(&worker, &beat, false)?;
            }
            return Ok(HeartbeatAnswer::new(beat.lineage.is_some(), &beat, None));
        };
        let member = match &beat.lineage {
            Some(l) if l.id == held.payload.lineage.id => {
                if !beat.verify(&held.key) {
                    return Err((
                        StatusCode::FORBIDDEN,
                        "the heartbeat is not tagged with this deployment's key".into(),
                    ));
                }
                true
            }
            Some(l) => {
                return Err((
                    StatusCode::CONFLICT,
                    format!(
                        "the worker holds key set {}, this leader {}: neither takes the other's; the deployment is split",
                        l.id, held.payload.lineage.id
                    ),
                ));
            }
            None => false,
        };
        self.workers.note(&worker, &beat, member)?;
        self.stats.heartbeats.fetch_add(1, Ordering::Relaxed);
        let theirs_later = beat
            .lineage
            .as_ref()
            .is_some_and(|l| later(held.holding(), l, beat.version));
        if !theirs_later && beat.hashed_keys.as_deref() != Some(hex::encode(held.hash).as_str()) {
            self.push_in_background(worker);
        }
        Ok(HeartbeatAnswer::new(theirs_later, &beat, Some(&held.key)))
    }

    /// Sends the keys to every worker that does not hold this version.
    pub(super) fn push_all(self: &Arc<Self>) {
        let current = self.held().map(|h| hex::encode(h.hash));
        for t in self.workers.behind(current.as_deref()) {
            self.push_in_background(t);
        }
    }

    /// One exchange with `worker` in flight at a time; a change made while
    /// it runs is sent by the next one, which starts when it ends.
    pub(super) fn push_in_background(self: &Arc<Self>, worker: String) {
        let Ok(target) = Target::parse(&worker, None) else {
            return;
        };
        if !self.workers.start_push(&worker) {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                match this.push(&target).await {
                    Ok(hash) => {
                        tracing::info!(%worker, "keys sent");
                        this.workers.pushed(&worker, hash);
                    }
                    Err(e) => tracing::warn!(%worker, "sending keys failed: {e}"),
                }
                if !this.workers.push_again(&worker) {
                    return;
                }
            }
        });
    }

    /// On the leader: gathers what changed now and waits (at most ten
    /// seconds) until every worker of the deployment heard from holds it.
    /// The ACME client calls it before the CA validates a challenge any
    /// enclave may be asked to answer.
    pub async fn spread_change(self: &Arc<Self>) {
        if self.role() != Role::Leader {
            return;
        }
        self.changed();
        let Some(held) = self.held() else {
            return;
        };
        let want = hex::encode(held.hash);
        let deadline = Instant::now() + SPREAD;
        while !self.workers.all_hold(Some(&want)) {
            if Instant::now() >= deadline {
                tracing::warn!("not every worker holds the change after {SPREAD:?}; going on");
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Forgets workers not heard from for a while.
    pub(super) fn forget_stale_workers(&self) {
        self.workers.forget_stale();
    }
}
