//! The sync listener (`--sync-listen`): nitriding's enclave-to-enclave
//! endpoints, answered by every enclave of a deployment.
//!
//! - `GET /enclave/leader?nonce=`: 410 from the leader (tagged with the
//!   deployment key when it holds keys), 200 while designating, 503 from a
//!   worker.
//! - `GET /enclave/sync?nonce=[&tag=]`: a receiver's offer (its document
//!   with a fresh public key, the blobs it holds); 429 while its few offer
//!   slots are taken.
//! - `POST /enclave/sync?offer=[&tag=]`: a sender's delivery for that
//!   offer, checked and taken. Refused before its body is read unless the
//!   offer is open (and, to an enclave holding keys, the tag holds).
//! - `POST /enclave/heartbeat`: a worker's heartbeat, at the leader.
//!
//! Every refusal is a 4xx with a message naming the check, logged;
//! nothing changes unless every check passes.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use serde::de::DeserializeOwned;

use super::{Node, Refused, refused};
use crate::http::{ResponseBody, error, json};
use crate::server::{BodyError, Handler, RequestBody};
use nacre_sync::auth::Label;
use nacre_sync::wire::{Delivery, Heartbeat, MAX_HEARTBEAT};

/// The largest delivery: the key material, and every guest's component
/// for an enclave that holds none of them (Base64 in JSON).
const MAX_DELIVERY: usize = 256 << 20;

/// What `--sync-listen` serves.
#[derive(Clone)]
pub struct SyncListener(Arc<Node>);

impl SyncListener {
    /// The endpoints of `sync`.
    pub fn new(sync: Arc<Node>) -> SyncListener {
        SyncListener(sync)
    }

    /// Answers one request with a body of any kind: what the server's
    /// connections call through [`Handler`], and what an in-memory
    /// [`super::PeerLink`] calls directly in tests.
    pub async fn answer<B>(&self, req: Request<B>) -> Response<ResponseBody>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        self.0.answer(req).await
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

impl Node {
    async fn answer<B>(self: &Arc<Self>, req: Request<B>) -> Response<ResponseBody>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let outcome = match (req.method().clone(), req.uri().path()) {
            (Method::GET, "/enclave/leader") => nonce(&req, "nonce").map(|n| {
                let (status, answer) = self.leader_probe(n);
                json(status, &answer)
            }),
            (Method::GET, "/enclave/sync") => match nonce(&req, "nonce") {
                Ok(n) => self
                    .offer(n, query(&req, "tag").as_deref())
                    .await
                    .map(|o| json(StatusCode::OK, &o)),
                Err(e) => Err(e),
            },
            (Method::POST, "/enclave/sync") => self.delivery(req).await,
            (Method::POST, "/enclave/heartbeat") => {
                match read::<Heartbeat, _>(req, MAX_HEARTBEAT).await {
                    Ok(h) => self.heartbeat_in(h).map(|a| json(StatusCode::OK, &a)),
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
                    // A refusal may quote what a stranger sent: bounded.
                    let message = nacre_control::bounded::cut(&message, 512);
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

    /// `POST /enclave/sync?offer=`: one delivery applied at a time, its
    /// body read only once its offer is taken.
    pub(super) async fn delivery<B>(
        self: &Arc<Self>,
        req: Request<B>,
    ) -> Result<Response<ResponseBody>, Refused>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let offer = nonce(&req, "offer")?;
        let tag = query(&req, "tag");
        // The tag before the lock: a request without this deployment's key
        // never holds up, nor is held up by, a delivery that has it.
        self.check_tag(Label::Deliver, &offer, tag.as_deref())?;
        let _applying = self.offers.apply_now()?;
        let taken = self.take_offer(offer, tag.as_deref())?;
        let delivery = read::<Delivery, _>(req, MAX_DELIVERY).await?;
        let version = self.deliver(taken, delivery).await?;
        Ok(json(
            StatusCode::OK,
            &serde_json::json!({ "applied": version }),
        ))
    }
}

/// The query parameter `name`, if given.
fn query<B>(req: &Request<B>, name: &str) -> Option<String> {
    form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// `?NAME=` as a 20-byte nonce, or 400 saying what is wrong.
fn nonce<B>(req: &Request<B>, name: &str) -> Result<[u8; nacre_api::NONCE_LEN], Refused> {
    let value = query(req, name).ok_or_else(|| {
        refused(
            StatusCode::BAD_REQUEST,
            format!("missing ?{name}=HEX (40 hex digits)"),
        )
    })?;
    nacre_api::parse_nonce(&value)
        .map_err(|e| refused(StatusCode::BAD_REQUEST, format!("{name}: {e}")))
}

/// A JSON body of at most `limit` bytes.
async fn read<T, B>(req: Request<B>, limit: usize) -> Result<T, Refused>
where
    T: DeserializeOwned,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
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
