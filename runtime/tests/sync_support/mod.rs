//! Several sync nodes in one process: an in-memory [`PeerLink`] that
//! routes a request for a target to that node's [`SyncListener`] directly,
//! and a hostile host on it that can drop, delay or redirect what one
//! node sends to a target, and replay what it recorded.

#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use nacre_runtime::attest::Dev;
use nacre_runtime::fleet::Role;
use nacre_runtime::sync::{
    LinkFuture, Node, PeerLink, SyncConfig, SyncError, SyncListener, SyncedState,
};
use nacre_runtime::tls::Identity;
use nacre_transport::tunnel::Target;
use tokio::sync::watch;

/// The name every test deployment's leader is reached at.
pub const LEADER: &str = "leader.test:444";

/// What the host does to requests from one node to one target.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Never delivered: the sender sees no answer.
    Drop,
    /// Delivered this much later.
    Delay(Duration),
    /// Delivered to the node at this address instead.
    Redirect(String),
}

/// One request as the host saw it go by, and the answer, if any.
#[derive(Debug, Clone)]
pub struct Record {
    /// The sending node's address.
    pub from: String,
    /// The target it asked for.
    pub to: String,
    /// The node that answered, if one did.
    pub reached: Option<String>,
    /// The method.
    pub method: http::Method,
    /// Path and query.
    pub path: String,
    /// The request body.
    pub body: Bytes,
    /// The answer's status, if one came.
    pub status: Option<StatusCode>,
    /// The answer's body.
    pub answer: Bytes,
}

impl Record {
    /// The answer's body as text.
    pub fn answer_text(&self) -> String {
        String::from_utf8_lossy(&self.answer).into_owned()
    }
}

struct Rule {
    from: Option<String>,
    to: String,
    fault: Fault,
}

/// The host between the nodes: where each address leads, its faults, and
/// what it recorded.
#[derive(Default)]
pub struct Net {
    listeners: Mutex<HashMap<String, Arc<SyncListener>>>,
    /// Names that lead to a node's address (the leader's name).
    names: Mutex<HashMap<String, String>>,
    rules: Mutex<Vec<Rule>>,
    log: Mutex<Vec<Record>>,
}

impl Net {
    /// A host with no nodes.
    pub fn new() -> Arc<Net> {
        Arc::new(Net::default())
    }

    /// The name `name` leads to the node at `address`, for every sender.
    pub fn name(&self, name: &str, address: &str) {
        self.names
            .lock()
            .expect("names")
            .insert(name.into(), address.into());
    }

    /// From now on, what `from` (any node if `None`) sends to `to` (any
    /// target if `*`) suffers `fault`; it replaces an earlier fault of the
    /// same pair, and goes before every other.
    pub fn fault(&self, from: Option<&str>, to: &str, fault: Fault) {
        let mut rules = self.rules.lock().expect("rules");
        rules.retain(|r| !(r.from.as_deref() == from && r.to == to));
        rules.push(Rule {
            from: from.map(str::to_string),
            to: to.into(),
            fault,
        });
    }

    /// Removes the fault of `from` to `to`.
    pub fn heal(&self, from: Option<&str>, to: &str) {
        self.rules
            .lock()
            .expect("rules")
            .retain(|r| !(r.from.as_deref() == from && r.to == to));
    }

    /// What was recorded so far that `keep` selects.
    pub fn records(&self, keep: impl Fn(&Record) -> bool) -> Vec<Record> {
        self.log
            .lock()
            .expect("log")
            .iter()
            .filter(|r| keep(r))
            .cloned()
            .collect()
    }

    /// Sends `record`'s request again, as recorded, to the node at `to`.
    pub async fn replay(&self, record: &Record, to: &str) -> (StatusCode, Bytes) {
        let listener = self.listener(to).expect("a node at that address");
        let req = Request::builder()
            .method(record.method.clone())
            .uri(&record.path)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(record.body.clone())
            .expect("request");
        let answer = call(&listener, req).await;
        (answer.status(), answer.into_body())
    }

    /// Sends a request straight to the node at `to`, as anyone on the
    /// host could.
    pub async fn send(
        &self,
        to: &str,
        method: &str,
        path: &str,
        body: Bytes,
    ) -> (StatusCode, Bytes) {
        let listener = self.listener(to).expect("a node at that address");
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(body)
            .expect("request");
        let answer = call(&listener, req).await;
        (answer.status(), answer.into_body())
    }

    fn listener(&self, address: &str) -> Option<Arc<SyncListener>> {
        let address = self
            .names
            .lock()
            .expect("names")
            .get(address)
            .cloned()
            .unwrap_or_else(|| address.to_string());
        self.listeners
            .lock()
            .expect("listeners")
            .get(&address)
            .cloned()
    }

    /// The fault `from` suffers sending to `to`, if any: the latest rule
    /// that matches (a rule's `to` of `*` matches every target).
    fn fault_of(&self, from: &str, to: &str) -> Option<Fault> {
        self.rules
            .lock()
            .expect("rules")
            .iter()
            .rev()
            .find(|r| (r.to == to || r.to == "*") && r.from.as_deref().is_none_or(|f| f == from))
            .map(|r| r.fault.clone())
    }

    async fn route(
        &self,
        from: &str,
        to: &str,
        req: Request<Bytes>,
    ) -> Result<Response<Bytes>, SyncError> {
        let mut record = Record {
            from: from.into(),
            to: to.into(),
            reached: None,
            method: req.method().clone(),
            path: req.uri().to_string(),
            body: req.body().clone(),
            status: None,
            answer: Bytes::new(),
        };
        let mut dest = to.to_string();
        match self.fault_of(from, to) {
            Some(Fault::Drop) => {
                self.log.lock().expect("log").push(record);
                return Err(SyncError::Peer(format!("{to}: dropped by the host")));
            }
            Some(Fault::Delay(d)) => tokio::time::sleep(d).await,
            Some(Fault::Redirect(other)) => dest = other,
            None => {}
        }
        let Some(listener) = self.listener(&dest) else {
            self.log.lock().expect("log").push(record);
            return Err(SyncError::Peer(format!("{to}: nobody there")));
        };
        let answer = call(&listener, req).await;
        record.reached = self
            .names
            .lock()
            .expect("names")
            .get(&dest)
            .cloned()
            .or(Some(dest));
        record.status = Some(answer.status());
        record.answer = answer.body().clone();
        self.log.lock().expect("log").push(record);
        Ok(answer)
    }
}

/// `req` answered by `listener`, its body collected.
async fn call(listener: &SyncListener, req: Request<Bytes>) -> Response<Bytes> {
    let (parts, body) = listener.answer(req.map(Full::new)).await.into_parts();
    let body = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    Response::from_parts(parts, body)
}

/// One node's way onto the [`Net`].
pub struct Link {
    net: Arc<Net>,
    from: String,
}

impl PeerLink for Link {
    fn request<'a>(
        &'a self,
        to: &'a Target,
        req: Request<Bytes>,
        timeout: Duration,
    ) -> LinkFuture<'a> {
        Box::pin(async move {
            let to = to.to_string();
            tokio::time::timeout(timeout, self.net.route(&self.from, &to, req))
                .await
                .map_err(|_| SyncError::Peer(format!("{to}: no answer within {timeout:?}")))?
        })
    }
}

/// The dev attester of a fresh dev root: every node given it is of one
/// image (PCR0 is this test's executable) under one root.
pub fn attester() -> Arc<Dev> {
    crate::common::attester().0
}

/// One enclave of a test deployment, running.
pub struct Enclave {
    /// Where peers reach it.
    pub address: String,
    /// The node.
    pub node: Arc<Node>,
    /// Its certificate.
    pub identity: Arc<Identity>,
    /// Its state slots.
    pub state: Arc<SyncedState>,
    /// Its role.
    pub role: watch::Receiver<Role>,
    /// The attester it was started with (same image, same root).
    pub attester: Arc<Dev>,
    /// The SHA-256 of the certificate it started with, its own.
    pub own_cert: [u8; 32],
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Enclave {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Enclave {
    /// Starts a node at `address` on `net`, of the deployment named
    /// `leader`, attested by `attester`.
    pub fn start(
        net: &Arc<Net>,
        attester: Arc<Dev>,
        address: &str,
        leader: &str,
        genesis_after: Duration,
    ) -> Enclave {
        let (role_tx, role) = watch::channel(Role::Alone);
        let state = Arc::new(SyncedState::new(role.clone()));
        let identity = Identity::self_signed("localhost").expect("identity");
        let target = Target::parse(address, None).expect("address");
        let config = SyncConfig {
            leader: Target::parse(leader, None).expect("leader"),
            advertise: watch::channel(Some(target)).1,
            accept_pcr0: Vec::new(),
            // Never used: requests go over the in-memory link.
            egress: "tcp://127.0.0.1:9".parse().expect("address"),
            genesis_after,
        };
        let link = Arc::new(Link {
            net: net.clone(),
            from: address.to_string(),
        });
        let node = Node::with_link(
            config,
            identity.clone(),
            crate::common::registry(attester.clone()),
            state.clone(),
            attester.clone(),
            role_tx,
            link,
        )
        .expect("node");
        net.listeners.lock().expect("listeners").insert(
            address.to_string(),
            Arc::new(SyncListener::new(node.clone())),
        );
        let task = tokio::spawn(node.clone().run());
        Enclave {
            address: address.to_string(),
            node,
            own_cert: identity.leaf_sha256(),
            identity,
            state,
            role,
            attester,
            task,
        }
    }

    /// Its role now.
    pub fn role(&self) -> Role {
        self.role.borrow().clone()
    }
}

/// Waits until `cond` holds, polling; panics naming `what` after `limit`.
pub async fn until(limit: Duration, what: &str, cond: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
