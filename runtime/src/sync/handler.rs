//! The sync listener (`--sync-listen`): nitriding's enclave-to-enclave
//! endpoints, answered by every enclave of a deployment.
//!
//! - `GET /enclave/leader?nonce=`: 410 from the leader, 200 while
//!   designating, 503 from a worker.
//! - `GET /enclave/sync?nonce=`: a receiver's offer (its document with a
//!   fresh public key); 429 while another exchange is open.
//! - `POST /enclave/sync`: a sender's delivery, checked and applied.
//! - `POST /enclave/heartbeat`: a worker's heartbeat, at the leader.
//!
//! Every refusal is a 4xx with a message naming the check, logged; nothing
//! changes unless every check passes.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use nacre_attestation::{SyncBinding, SyncRole};
use serde::de::DeserializeOwned;

use super::outbound::b64;
use super::seal::{self, Payload, Recipient};
use super::wire::{Delivery, Heartbeat, HeartbeatAnswer, Offer};
use super::{OFFER_TTL, Pending, Role, Seen, Sync, newer, random_nonce};
use crate::http::{ResponseBody, error, json};
use crate::server::{BodyError, Handler, RequestBody};

/// The largest delivery: certificate, state and every guest's component.
const MAX_DELIVERY: usize = 256 << 20;
/// The largest heartbeat.
const MAX_HEARTBEAT: usize = 64 << 10;

/// What `--sync-listen` serves.
pub struct SyncListener(Arc<Sync>);

impl SyncListener {
    /// The endpoints of `sync`.
    pub fn new(sync: Arc<Sync>) -> SyncListener {
        SyncListener(sync)
    }
}

impl Handler for SyncListener {
    fn handle(
        &self,
        req: Request<RequestBody>,
    ) -> impl Future<Output = Response<ResponseBody>> + Send {
        let sync = self.0.clone();
        async move { sync.answer(req).await }
    }
}

/// A refusal: status and message, logged as such.
type Refused = (StatusCode, String);

fn refused(status: StatusCode, message: impl Into<String>) -> Refused {
    (status, message.into())
}

impl Sync {
    async fn answer(self: &Arc<Self>, req: Request<RequestBody>) -> Response<ResponseBody> {
        let outcome = match (req.method().clone(), req.uri().path()) {
            (Method::GET, "/enclave/leader") => nonce(&req).map(|n| self.leader_probe(n)),
            (Method::GET, "/enclave/sync") => match nonce(&req) {
                Ok(n) => self.offer(n).await,
                Err(e) => Err(e),
            },
            (Method::POST, "/enclave/sync") => match read::<Delivery>(req, MAX_DELIVERY).await {
                Ok(d) => self.deliver(d).await,
                Err(e) => Err(e),
            },
            (Method::POST, "/enclave/heartbeat") => {
                match read::<Heartbeat>(req, MAX_HEARTBEAT).await {
                    Ok(h) => self.heartbeat_in(h),
                    Err(e) => Err(e),
                }
            }
            (_, path) => Err(refused(
                StatusCode::NOT_FOUND,
                format!("{path} is not a sync endpoint"),
            )),
        };
        match outcome {
            Ok(r) => r,
            Err((status, message)) => {
                if status != StatusCode::NOT_FOUND && status != StatusCode::TOO_MANY_REQUESTS {
                    tracing::warn!(%status, "sync request refused: {message}");
                }
                let mut r = error(status, &message);
                if status == StatusCode::TOO_MANY_REQUESTS {
                    r.headers_mut()
                        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                }
                r
            }
        }
    }

    /// `GET /enclave/leader`.
    fn leader_probe(&self, nonce: [u8; nacre_api::NONCE_LEN]) -> Response<ResponseBody> {
        let own = self.probe.lock().ok().and_then(|p| *p) == Some(nonce);
        if own {
            self.probe_seen
                .store(true, std::sync::atomic::Ordering::Release);
        }
        let (status, message) = match self.role() {
            Role::Leader => (StatusCode::GONE, "this enclave leads"),
            Role::Designating | Role::Alone => (StatusCode::OK, "no leader designated yet"),
            Role::Worker { .. } => (StatusCode::SERVICE_UNAVAILABLE, "this enclave is a worker"),
        };
        json(status, &serde_json::json!({ "status": message }))
    }

    /// `GET /enclave/sync`: opens an exchange as the receiver.
    async fn offer(
        &self,
        sender_nonce: [u8; nacre_api::NONCE_LEN],
    ) -> Result<Response<ResponseBody>, Refused> {
        let (recipient, public_key) = Recipient::new();
        let nonce = random_nonce();
        {
            let mut pending = self
                .pending
                .lock()
                .map_err(|_| refused(StatusCode::INTERNAL_SERVER_ERROR, "sync state lost"))?;
            if pending.as_ref().is_some_and(|p| p.until > Instant::now()) {
                return Err(refused(
                    StatusCode::TOO_MANY_REQUESTS,
                    "a sync is in progress; retry shortly",
                ));
            }
            *pending = Some(Pending {
                recipient,
                nonce,
                until: Instant::now() + OFFER_TTL,
            });
        }
        let binding = SyncBinding {
            role: SyncRole::Receiver,
            payload_sha256: None,
        };
        let document = self
            .peers
            .document(&sender_nonce, binding, Some(public_key))
            .await
            .map_err(|e| {
                if let Ok(mut p) = self.pending.lock() {
                    *p = None;
                }
                refused(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
            })?;
        Ok(json(
            StatusCode::OK,
            &Offer {
                document: base64::engine::general_purpose::STANDARD.encode(document),
                nonce: hex::encode(nonce),
            },
        ))
    }

    /// `POST /enclave/sync`: closes the exchange, applying the keys when
    /// every check passes.
    async fn deliver(&self, delivery: Delivery) -> Result<Response<ResponseBody>, Refused> {
        let Ok(_applying) = self.applying.try_lock() else {
            return Err(refused(
                StatusCode::TOO_MANY_REQUESTS,
                "a sync is in progress; retry shortly",
            ));
        };
        // One delivery per offer, successful or not: a document seen once
        // is never accepted again.
        let pending = self.pending.lock().ok().and_then(|mut p| p.take());
        let Some(pending) = pending.filter(|p| p.until > Instant::now()) else {
            return Err(refused(
                StatusCode::CONFLICT,
                "no sync in progress: GET /enclave/sync?nonce= first",
            ));
        };
        let bad = |e: super::SyncError| refused(StatusCode::BAD_REQUEST, e.to_string());
        let document = b64(&delivery.document).map_err(bad)?;
        let sealed = b64(&delivery.encrypted_keys).map_err(bad)?;
        let checked = self
            .peers
            .check(&document, &pending.nonce, SyncRole::Sender)
            .map_err(|e| refused(StatusCode::FORBIDDEN, format!("refused the sender: {e}")))?;
        if checked.binding.payload_sha256 != Some(seal::sha256(&sealed)) {
            return Err(refused(
                StatusCode::FORBIDDEN,
                "refused the sender: its document does not bind these keys",
            ));
        }
        let plain = pending.recipient.open(&sealed).map_err(bad)?;
        let payload = Payload::decode(&plain).map_err(bad)?;
        if self.role() == Role::Leader
            && let Some(held) = self.held()
            && !newer(
                &payload.lineage,
                payload.version,
                &held.lineage,
                held.version,
            )
        {
            return Err(refused(
                StatusCode::CONFLICT,
                "these keys are not newer than the ones this leader holds",
            ));
        }
        let (lineage, version) = (payload.lineage.clone(), payload.version);
        self.material
            .apply(payload)
            .await
            .map_err(|e| refused(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()))?;
        self.note_identity();
        self.hold(lineage.clone(), version, plain);
        self.stats.received.fetch_add(1, Ordering::Relaxed);
        tracing::info!(lineage = %lineage.id, version, "keys received and applied");
        Ok(json(
            StatusCode::OK,
            &serde_json::json!({ "applied": version }),
        ))
    }

    /// `POST /enclave/heartbeat`, at the leader.
    fn heartbeat_in(self: &Arc<Self>, beat: Heartbeat) -> Result<Response<ResponseBody>, Refused> {
        if self.role() != Role::Leader {
            return Err(refused(
                StatusCode::SERVICE_UNAVAILABLE,
                "this enclave does not lead",
            ));
        }
        let worker = nacre_transport::tunnel::Target::parse(&beat.worker_hostname, None)
            .map_err(|e| refused(StatusCode::BAD_REQUEST, format!("worker_hostname {e}")))?
            .to_string();
        self.stats.heartbeats.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut workers) = self.workers.lock() {
            workers.insert(
                worker.clone(),
                Seen {
                    at: Instant::now(),
                    hash: beat.hashed_keys.clone(),
                },
            );
        }
        let send_keys = match (self.held(), &beat.lineage) {
            (None, Some(_)) => true,
            (None, None) => false,
            (Some(held), theirs) => {
                if let Some(theirs) = theirs
                    && newer(theirs, beat.version, &held.lineage, held.version)
                {
                    true
                } else {
                    if beat.hashed_keys.as_deref() != Some(hex::encode(held.hash).as_str()) {
                        self.push_in_background(worker);
                    }
                    false
                }
            }
        };
        Ok(json(StatusCode::OK, &HeartbeatAnswer { send_keys }))
    }
}

/// `?nonce=` as 20 bytes, or 400 saying what is wrong.
fn nonce<B>(req: &Request<B>) -> Result<[u8; nacre_api::NONCE_LEN], Refused> {
    let value = form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
        .find(|(k, _)| k == "nonce")
        .map(|(_, v)| v.into_owned())
        .ok_or_else(|| {
            refused(
                StatusCode::BAD_REQUEST,
                "missing ?nonce=HEX (40 hex digits)",
            )
        })?;
    nacre_api::parse_nonce(&value).map_err(|e| refused(StatusCode::BAD_REQUEST, e.to_string()))
}

/// A JSON body of at most `limit` bytes.
async fn read<T: DeserializeOwned>(req: Request<RequestBody>, limit: usize) -> Result<T, Refused> {
    use http_body::Body as _;
    if req.body().size_hint().lower() > limit as u64 {
        return Err(refused(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is over {limit} bytes"),
        ));
    }
    let body: Bytes = match Limited::new(req.into_body(), limit).collect().await {
        Ok(c) => c.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return Err(refused(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the body is over {limit} bytes"),
            ));
        }
        Err(e) if matches!(e.downcast_ref(), Some(BodyError::Stalled(_))) => {
            return Err(refused(StatusCode::REQUEST_TIMEOUT, e.to_string()));
        }
        Err(e) => return Err(refused(StatusCode::BAD_REQUEST, format!("the body: {e}"))),
    };
    serde_json::from_slice(&body).map_err(|e| {
        refused(
            StatusCode::BAD_REQUEST,
            format!("the body is not the expected JSON: {e}"),
        )
    })
}
