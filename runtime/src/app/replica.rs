//! Where Raft meets the rest of the runtime: the replicated group as sync
//! sees it ([`Replicated`], a [`Replica`]), the state slots the machine
//! applies to ([`SyncedSlots`]), and the sync listener that also answers
//! `/enclave/raft/*` ([`PeerListener`]).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use nacre_sync::auth::DeploymentKey;
use nacre_sync::raft::{MAX_FRAME, RaftCall, RaftKey};
use nacre_transport::tunnel::Target;
use tokio::sync::watch;

use super::StartError;
use crate::fleet::{Replica, ReplicaFuture, ReplicaView};
use crate::guests::GuestName;
use crate::guests::kv::MemoryKv;
use crate::http::{ResponseBody, error, full};
use crate::raft::{JoinError, Member, RaftEndpoints, RaftNode, Slots};
use crate::server::{Handler, RequestBody};
use crate::settings::SyncSettings;
use crate::sync::{PooledPeerClient, SyncListener, SyncedState};

/// The state slots, as the replicated machine applies to them.
pub(super) struct SyncedSlots(pub Arc<SyncedState>);

impl Slots for SyncedSlots {
    fn store(&self, guest: &GuestName, value: Arc<[u8]>) {
        self.0.store(guest, value);
    }
    fn get(&self, guest: &GuestName) -> Option<Arc<[u8]>> {
        self.0.peek(guest)
    }
    fn export(&self) -> BTreeMap<String, Arc<[u8]>> {
        self.0.export()
    }
    fn import(&self, slots: BTreeMap<String, Vec<u8>>) {
        self.0.import(slots);
    }
}

/// Starts this enclave's Raft node (pristine, a fresh id), reaching peers
/// through the host proxy over one HTTP/2 connection each.
pub(super) async fn start_node(
    sync: &SyncSettings,
    kv: Arc<MemoryKv>,
    slots: Arc<dyn Slots>,
) -> Result<Arc<RaftNode>, StartError> {
    let link = Arc::new(PooledPeerClient::new(sync.egress.clone())?);
    let node = RaftNode::start(&sync.leader.to_string(), sync.raft.clone(), kv, slots, link)
        .await
        .map_err(StartError::Raft)?;
    tracing::info!(node = %format!("{:016x}", node.id()), "raft node started");
    Ok(node)
}

/// The replicated group as sync sees it.
pub(super) struct Replicated {
    node: Arc<RaftNode>,
    deployment: String,
    advertise: watch::Receiver<Option<Target>>,
    /// The key the node seals with now (its SHA-256), to derive once.
    key: Mutex<Option<[u8; 32]>>,
}

impl Replicated {
    pub(super) fn new(
        node: Arc<RaftNode>,
        deployment: String,
        advertise: watch::Receiver<Option<Target>>,
    ) -> Replicated {
        Replicated {
            node,
            deployment,
            advertise,
            key: Mutex::new(None),
        }
    }

    fn me(&self) -> Result<Member, String> {
        self.advertise
            .borrow()
            .as_ref()
            .map(|t| Member {
                advertise: t.to_string(),
            })
            .ok_or_else(|| "the host proxy has not said where peers reach this enclave".into())
    }
}

impl Replica for Replicated {
    fn view(&self) -> ReplicaView {
        let l = self.node.leadership();
        if !l.member || !self.node.in_group() {
            return ReplicaView::Outside;
        }
        ReplicaView::Member {
            leader: l.leader.map(|(id, m)| (id == l.me, m.advertise)),
        }
    }

    fn hold_key(&self, key: &DeploymentKey) {
        let hash: [u8; 32] = <sha2::Sha256 as sha2::Digest>::digest(key.to_bytes()).into();
        let Ok(mut held) = self.key.lock() else {
            return;
        };
        if *held != Some(hash) {
            self.node.set_key(RaftKey::derive(key, &self.deployment));
            *held = Some(hash);
        }
    }

    fn start(&self, genesis: bool) -> ReplicaFuture<'_, String> {
        Box::pin(async move {
            let me = self.me()?;
            self.node
                .initialize(me, genesis)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
    }

    fn join<'a>(&'a self, via: &'a str) -> ReplicaFuture<'a, (bool, String)> {
        Box::pin(async move {
            let me = self.me().map_err(|e| (false, e))?;
            let via = Member {
                advertise: via.to_string(),
            };
            self.node.join(&via, &me).await.map_err(|e| match e {
                JoinError::NoGroup(why) => (false, why),
                JoinError::Group(why) => (true, why),
            })
        })
    }

    fn caught_up(&self) -> ReplicaFuture<'_, String> {
        Box::pin(async move { self.node.read_barrier().await.map_err(|f| format!("{f:?}")) })
    }

    fn describe(&self) -> serde_json::Value {
        self.node.describe()
    }
}

/// Large Raft bodies read at once at most: each may be up to its call's
/// bound before it is opened, so what the host can make the enclave hold
/// is bounded too (a caller beyond waits; Raft retries).
const RAFT_BODIES: usize = 8;
/// Bodies up to this size (votes, read indexes, joins) need no permit.
const SMALL_BODY: usize = 64 << 10;
/// How long a body may take to arrive, whole.
const BODY_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

/// The largest body `call` takes: a frame for appends, a chunk for
/// snapshots, one entry for forwarded writes.
fn body_limit(call: RaftCall) -> usize {
    match call {
        RaftCall::Append => MAX_FRAME,
        // A 1 MiB chunk, its bytes a CBOR array (up to two bytes each).
        RaftCall::Snapshot => (2 << 20) + SMALL_BODY,
        RaftCall::Write => crate::raft::MAX_ENTRY + SMALL_BODY,
        RaftCall::Vote | RaftCall::ReadIndex | RaftCall::Join => SMALL_BODY,
    }
}

/// What `--sync-listen` serves: `/enclave/raft/*` to Raft, the rest to
/// sync.
pub(super) struct PeerListener {
    sync: SyncListener,
    raft: Option<(RaftEndpoints, Arc<tokio::sync::Semaphore>)>,
}

impl PeerListener {
    /// Sync's endpoints, and Raft's when guests' data is replicated.
    pub(super) fn new(sync: SyncListener, raft: Option<RaftEndpoints>) -> PeerListener {
        PeerListener {
            sync,
            raft: raft.map(|r| (r, Arc::new(tokio::sync::Semaphore::new(RAFT_BODIES)))),
        }
    }
}

impl Handler for PeerListener {
    fn handle(
        &self,
        req: Request<RequestBody>,
    ) -> impl Future<Output = Response<ResponseBody>> + Send {
        let raft = self.raft.clone();
        let sync = (!req.uri().path().starts_with("/enclave/raft/") || raft.is_none())
            .then(|| self.sync.clone());
        async move {
            match (sync, raft) {
                (Some(sync), _) => sync.answer(req).await,
                (None, Some((raft, bodies))) => raft_answer(&raft, &bodies, req).await,
                (None, None) => error(StatusCode::NOT_FOUND, "no such endpoint"),
            }
        }
    }
}

async fn raft_answer(
    raft: &RaftEndpoints,
    bodies: &tokio::sync::Semaphore,
    req: Request<RequestBody>,
) -> Response<ResponseBody> {
    if req.method() != Method::POST {
        let mut r = error(StatusCode::METHOD_NOT_ALLOWED, "Raft calls are POSTs");
        r.headers_mut()
            .insert(http::header::ALLOW, http::HeaderValue::from_static("POST"));
        return r;
    }
    let path = req.uri().path().to_string();
    let Some(call) = RaftCall::from_path(&path) else {
        return error(StatusCode::NOT_FOUND, &format!("{path}: no such Raft call"));
    };
    let limit = body_limit(call);
    // Large bodies only while they are read, and within a deadline: a
    // stranger sending slowly holds one permit for that long, and small
    // calls (votes, read indexes, joins) never wait behind it.
    let reading = match limit > SMALL_BODY {
        true => match bodies.acquire().await {
            Ok(permit) => Some(permit),
            Err(_) => return error(StatusCode::SERVICE_UNAVAILABLE, "shutting down"),
        },
        false => None,
    };
    let read = tokio::time::timeout(
        BODY_DEADLINE,
        Limited::new(req.into_body(), limit).collect(),
    );
    let body = match read.await {
        Ok(Ok(b)) => b.to_bytes(),
        Ok(Err(e)) => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("a {path} body over {limit} bytes, or unreadable: {e}"),
            );
        }
        Err(_) => {
            return error(
                StatusCode::REQUEST_TIMEOUT,
                &format!("a {path} body not sent within {BODY_DEADLINE:?}"),
            );
        }
    };
    drop(reading);
    match raft.answer(&path, body).await {
        Ok(answer) => Response::new(full(answer)),
        Err((status, why)) => {
            if status != StatusCode::SERVICE_UNAVAILABLE {
                tracing::warn!(%status, %path, "raft frame refused: {why}");
            }
            error(status, &why)
        }
    }
}
