//! Raft messages between enclaves: sealed under a key only the attested
//! members hold, each answer bound to its request, over the sync link.
//!
//! The sync link's TLS takes any certificate (the host can terminate it),
//! so it is not what protects Raft: every body is sealed with a key
//! derived from the deployment key ([`nacre_sync::raft`]), which an
//! enclave gets only through the attested exchange. A frame names the
//! group's incarnation (`cluster`), its sender and its receiver; an answer
//! is sealed to the one request it answers, so the host cannot hand a
//! leader an old "stored" for a new append.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use nacre_sync::raft::{OpenedRequest, RaftCall, RaftKey, ReplayWindow, Sealer};
use nacre_transport::tunnel::Target;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::types::{Member, NodeId};
use crate::sync::PeerLink;

/// Senders' sessions the replay window remembers.
const REPLAY_SESSIONS: usize = 256;

/// The group's incarnation: drawn when a group is initialised, learnt by
/// joining. Frames of another incarnation are refused.
pub type Cluster = [u8; 16];

/// Why a message did not get through.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WireError {
    /// No answer came (link down, timeout, no key yet).
    #[error("{0}")]
    Unreachable(String),
    /// The peer answered with a refusal.
    #[error("refused ({0}): {1}")]
    Refused(StatusCode, String),
    /// The answer could not be opened or read.
    #[error("bad answer: {0}")]
    Malformed(String),
}

/// The keys this enclave seals and opens frames with.
pub struct Keys {
    key: RaftKey,
    sealer: Sealer,
}

impl Keys {
    /// Keys from the deployment's key.
    pub fn new(key: RaftKey) -> Keys {
        let sealer = Sealer::new(&key);
        Keys { key, sealer }
    }
}

/// This node's end of every link: keys, incarnation, who answered when.
pub struct Wire {
    me: NodeId,
    keys: ArcSwapOption<Keys>,
    cluster: ArcSwapOption<Cluster>,
    link: Arc<dyn PeerLink>,
    heard: Mutex<HashMap<NodeId, Instant>>,
    /// When each follower last acknowledged an append of this node's
    /// term (sent at that instant): the read lease's evidence.
    acked: Mutex<HashMap<NodeId, Instant>>,
    replays: Mutex<ReplayWindow>,
}

pub(super) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = Vec::new();
    // Writing to a Vec fails only on a serialiser bug.
    if let Err(e) = ciborium::into_writer(value, &mut out) {
        tracing::error!(error = %e, "raft: encoding failed");
    }
    out
}

pub(super) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    ciborium::from_reader(bytes).map_err(|e| e.to_string())
}

impl Wire {
    /// Node `me`'s wire, over `link`; it seals nothing until
    /// [`Wire::set_keys`].
    pub fn new(me: NodeId, link: Arc<dyn PeerLink>) -> Wire {
        Wire {
            me,
            keys: ArcSwapOption::empty(),
            cluster: ArcSwapOption::empty(),
            link,
            heard: Mutex::new(HashMap::new()),
            acked: Mutex::new(HashMap::new()),
            replays: Mutex::new(ReplayWindow::new(REPLAY_SESSIONS)),
        }
    }

    /// This node's id.
    pub fn me(&self) -> NodeId {
        self.me
    }

    /// Takes the deployment's key (at the first key set this enclave holds).
    pub fn set_keys(&self, keys: Keys) {
        self.keys.store(Some(Arc::new(keys)));
    }

    /// Whether this node can seal frames yet.
    pub fn has_keys(&self) -> bool {
        self.keys.load().is_some()
    }

    /// The incarnation this node belongs to, once known.
    pub fn cluster(&self) -> Option<Cluster> {
        self.cluster.load().as_deref().copied()
    }

    /// Joins incarnation `cluster` (initialised here, or learnt by joining).
    pub fn set_cluster(&self, cluster: Cluster) {
        self.cluster.store(Some(Arc::new(cluster)));
    }

    /// When `node` last answered this node, if ever.
    pub fn heard(&self, node: NodeId) -> Option<Instant> {
        self.heard.lock().ok().and_then(|h| h.get(&node).copied())
    }

    /// `node` took an append of this node's term sent at `sent`.
    pub fn mark_acked(&self, node: NodeId, sent: Instant) {
        if let Ok(mut a) = self.acked.lock() {
            let at = a.entry(node).or_insert(sent);
            *at = (*at).max(sent);
        }
    }

    /// When `node` last took an append of this node's term (sent then).
    pub fn acked(&self, node: NodeId) -> Option<Instant> {
        self.acked.lock().ok().and_then(|a| a.get(&node).copied())
    }

    fn mark_heard(&self, node: NodeId) {
        if let Ok(mut h) = self.heard.lock() {
            h.insert(node, Instant::now());
        }
    }

    /// Sends `body` as `call` to node `to` at `member`, within `timeout`;
    /// its answer. `cluster` is the zero incarnation only for a join.
    pub async fn call<Q: Serialize, A: DeserializeOwned>(
        &self,
        call: RaftCall,
        to: NodeId,
        member: &Member,
        body: &Q,
        timeout: Duration,
    ) -> Result<A, WireError> {
        let keys = self
            .keys
            .load_full()
            .ok_or_else(|| WireError::Unreachable("no deployment key yet".into()))?;
        // A join travels outside any incarnation (the zero one).
        let cluster = match call {
            RaftCall::Join => Cluster::default(),
            _ => self
                .cluster()
                .ok_or_else(|| WireError::Unreachable("not in a Raft group yet".into()))?,
        };
        let target = Target::parse(&member.advertise, None)
            .map_err(|e| WireError::Unreachable(format!("{}: {e}", member.advertise)))?;
        let (frame, pending) = keys
            .sealer
            .seal_request(call, &cluster, self.me, to, &encode(body))
            .map_err(|e| WireError::Malformed(e.to_string()))?;
        let request = Request::builder()
            .method(Method::POST)
            .uri(call.path())
            .header(http::header::CONTENT_TYPE, "application/cbor")
            .body(Bytes::from(frame))
            .map_err(|e| WireError::Unreachable(e.to_string()))?;
        let answer = self
            .link
            .request(&target, request, timeout)
            .await
            .map_err(|e| WireError::Unreachable(e.to_string()))?;
        let status = answer.status();
        let body = answer.into_body();
        if status != StatusCode::OK {
            return Err(WireError::Refused(
                status,
                String::from_utf8_lossy(&body).chars().take(300).collect(),
            ));
        }
        let plain = pending
            .open_answer(&keys.key, &body)
            .map_err(|e| WireError::Malformed(e.to_string()))?;
        self.mark_heard(to);
        decode(&plain).map_err(WireError::Malformed)
    }

    /// Opens a request frame for `call`: checked for this node, this
    /// incarnation (a join may come from outside it) and against replays.
    pub fn open<Q: DeserializeOwned>(
        &self,
        call: RaftCall,
        frame: &[u8],
    ) -> Result<(OpenedRequest, Q), (StatusCode, String)> {
        let keys = self.keys.load_full().ok_or((
            StatusCode::SERVICE_UNAVAILABLE,
            "this enclave holds no deployment key yet".to_string(),
        ))?;
        let opened = if call == RaftCall::Join {
            // A joiner may not know this node's id yet: it names 0.
            let zero = Cluster::default();
            keys.key
                .open_request(call, frame, &zero, self.me)
                .or_else(|_| keys.key.open_request(call, frame, &zero, 0))
        } else {
            let cluster = self.cluster().ok_or((
                StatusCode::CONFLICT,
                "this enclave is not in a Raft group yet".to_string(),
            ))?;
            keys.key.open_request(call, frame, &cluster, self.me)
        }
        .map_err(|e| (StatusCode::FORBIDDEN, e.to_string()))?;
        let fresh = self
            .replays
            .lock()
            .map(|mut w| w.accept(opened.from, opened.session, opened.ctr))
            .unwrap_or(false);
        if !fresh {
            return Err((StatusCode::CONFLICT, "a replayed frame".into()));
        }
        let body = decode(&opened.plaintext).map_err(|e| (StatusCode::BAD_REQUEST, e))?;
        self.mark_heard(opened.from);
        Ok((opened, body))
    }

    /// Seals `answer` to the request `opened`.
    pub fn seal_answer<A: Serialize>(
        &self,
        opened: &OpenedRequest,
        answer: &A,
    ) -> Result<Vec<u8>, (StatusCode, String)> {
        let keys = self.keys.load_full().ok_or((
            StatusCode::SERVICE_UNAVAILABLE,
            "this enclave holds no deployment key yet".to_string(),
        ))?;
        keys.sealer
            .seal_answer(opened, &encode(answer))
            .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
    }
}
