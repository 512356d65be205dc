//! One exchange of key material, both sides.
//!
//! The sender asks for an offer (`GET /enclave/sync?nonce=N`): the
//! receiver reserves one of a few short-lived slots under a nonce of its
//! own and answers with its document (the sender's nonce, a fresh public
//! key) and the hashes of the blobs it holds. The sender checks that
//! document, seals the payload and the missing blobs to the key, and
//! delivers (`POST /enclave/sync?offer=M`) with its own document (the
//! receiver's nonce, the hash of the ciphertext). The receiver reads a
//! body only for an open offer, once; checks the document and the binding;
//! opens, decodes, and takes the material only as [`nacre_sync::order`] allows.
//!
//! To an enclave that holds keys, both requests must carry the deployment
//! key's tag over the nonce they answer: no stranger can hold its offer
//! slots or make it read a body.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use http::{Method, StatusCode};
use nacre_api::NONCE_LEN;
use nacre_attestation::{SyncBinding, SyncRole};
use nacre_transport::tunnel::Target;
use serde_bytes::ByteBuf;

use super::held::Held;
use super::material::Material;
use super::{Node, Refused, SyncError, random_nonce, refused};
use nacre_sync::auth::{DeploymentKey, Label};
use nacre_sync::order::admit;
use nacre_sync::seal::{self, Bundle, Payload, Recipient};
use nacre_sync::wire::{Delivery, MAX_HAVE, Offer};

/// Offers open at once, at most.
const MAX_OFFERS: usize = 4;
/// How long a receiver's offer stays open: long enough for a sender to
/// seal and send a large delivery on a busy machine.
const OFFER_TTL: Duration = Duration::from_secs(30);

/// A receiver's open offer.
pub(super) struct Pending {
    recipient: Recipient,
    until: Instant,
}

/// The receiver's side of exchanges: its open offers, and the one
/// delivery being applied.
pub(super) struct Offers {
    pending: Mutex<HashMap<[u8; NONCE_LEN], Pending>>,
    /// Held while a delivery is read and applied: one at a time, and a
    /// leader holding nothing does not start a key set meanwhile.
    applying: tokio::sync::Mutex<()>,
}

impl Offers {
    pub(super) fn new() -> Offers {
        Offers {
            pending: Mutex::new(HashMap::new()),
            applying: tokio::sync::Mutex::new(()),
        }
    }

    /// Opens an offer for `recipient` under a fresh nonce, if one of the
    /// few slots is free.
    fn open(&self, recipient: Recipient) -> Result<[u8; NONCE_LEN], Refused> {
        let nonce = random_nonce();
        let mut offers = self
            .pending
            .lock()
            .map_err(|_| refused(StatusCode::INTERNAL_SERVER_ERROR, "sync state lost"))?;
        offers.retain(|_, p| p.until > Instant::now());
        if offers.len() >= MAX_OFFERS {
            return Err(refused(
                StatusCode::TOO_MANY_REQUESTS,
                "offers are all taken; retry shortly",
            ));
        }
        offers.insert(
            nonce,
            Pending {
                recipient,
                until: Instant::now() + OFFER_TTL,
            },
        );
        Ok(nonce)
    }

    /// Closes the offer `nonce` unused.
    fn withdraw(&self, nonce: &[u8; NONCE_LEN]) {
        if let Ok(mut offers) = self.pending.lock() {
            offers.remove(nonce);
        }
    }

    /// Takes the offer `nonce` if it is open: once, whatever follows.
    fn take(&self, nonce: &[u8; NONCE_LEN]) -> Option<Pending> {
        let pending = self.pending.lock().ok().and_then(|mut o| o.remove(nonce));
        pending.filter(|p| p.until > Instant::now())
    }

    /// The right to apply a delivery now, or 429 while another is.
    pub(super) fn apply_now(&self) -> Result<tokio::sync::MutexGuard<'_, ()>, Refused> {
        self.applying.try_lock().map_err(|_| {
            refused(
                StatusCode::TOO_MANY_REQUESTS,
                "a sync is in progress; retry shortly",
            )
        })
    }

    /// Whether a delivery is being applied now.
    pub(super) fn applying(&self) -> bool {
        self.applying.try_lock().is_err()
    }
}

impl Node {
    /// Checks the deployment key's tag over `nonce` as `label`, when this
    /// enclave holds keys (one that holds none cannot, and has nothing a
    /// stranger could take).
    pub(super) fn check_tag(
        &self,
        label: Label,
        nonce: &[u8],
        tag: Option<&str>,
    ) -> Result<(), Refused> {
        let Some(held) = self.held() else {
            return Ok(());
        };
        if tag.is_some_and(|t| held.key.verify(label, &[nonce], t)) {
            return Ok(());
        }
        Err(refused(
            StatusCode::FORBIDDEN,
            "this enclave holds keys: the request must carry its deployment key's tag",
        ))
    }

    /// `GET /enclave/sync`: opens an exchange as the receiver.
    pub(super) async fn offer(
        &self,
        sender_nonce: [u8; NONCE_LEN],
        tag: Option<&str>,
    ) -> Result<Offer, Refused> {
        self.check_tag(Label::Offer, &sender_nonce, tag)?;
        let (recipient, public_key) = Recipient::new();
        let nonce = self.offers.open(recipient)?;
        self.designation.saw_deployment();
        let binding = SyncBinding {
            role: SyncRole::Receiver,
            payload_sha256: None,
        };
        let document = self
            .peers
            .document(&sender_nonce, binding, Some(public_key))
            .await
            .map_err(|e| {
                self.offers.withdraw(&nonce);
                refused(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
            })?;
        let have = self
            .material
            .holdings()
            .keys()
            .take(MAX_HAVE)
            .map(hex::encode)
            .collect();
        Ok(Offer {
            document: base64::engine::general_purpose::STANDARD.encode(document),
            nonce: hex::encode(nonce),
            have,
        })
    }

    /// Before a delivery's body is read: the offer it names must be open
    /// (it is taken now, whatever follows) and, to an enclave that holds
    /// keys, the request tagged.
    pub(super) fn take_offer(
        &self,
        offer: [u8; NONCE_LEN],
        tag: Option<&str>,
    ) -> Result<(Pending, [u8; NONCE_LEN]), Refused> {
        self.check_tag(Label::Deliver, &offer, tag)?;
        match self.offers.take(&offer) {
            Some(p) => Ok((p, offer)),
            None => Err(refused(
                StatusCode::CONFLICT,
                "no open offer by that nonce: GET /enclave/sync?nonce= first",
            )),
        }
    }

    /// `POST /enclave/sync`: closes the exchange, taking the keys when
    /// every check passes.
    pub(super) async fn deliver(
        &self,
        (pending, nonce): (Pending, [u8; NONCE_LEN]),
        delivery: Delivery,
    ) -> Result<u64, Refused> {
        fn bad(e: impl std::fmt::Display) -> Refused {
            refused(StatusCode::BAD_REQUEST, e.to_string())
        }
        let document = b64(&delivery.document).map_err(bad)?;
        let sealed = b64(&delivery.encrypted_keys).map_err(bad)?;
        let checked = self
            .peers
            .check(&document, &nonce, SyncRole::Sender)
            .map_err(|e| refused(StatusCode::FORBIDDEN, format!("refused the sender: {e}")))?;
        if checked.binding.payload_sha256 != Some(seal::sha256(&sealed)) {
            return Err(refused(
                StatusCode::FORBIDDEN,
                "refused the sender: its document does not bind these keys",
            ));
        }
        let bundle = Bundle::decode(&pending.recipient.open(&sealed).map_err(bad)?).map_err(bad)?;
        let payload = Payload::decode(&bundle.payload).map_err(bad)?;
        let held = self.held();
        admit(
            &self.config.deployment,
            held.as_ref().map(|h| h.holding()),
            &payload.deployment,
            &payload.lineage,
            payload.version,
        )
        .map_err(|e| {
            refused(
                StatusCode::CONFLICT,
                format!("these keys are not taken: {e}"),
            )
        })?;
        // Checked before anything is applied: material this enclave could
        // not hold is not half taken.
        let key = DeploymentKey::from_bytes(&payload.deployment_key)
            .ok_or_else(|| bad("the key material carries no 32-byte deployment key"))?;
        self.designation.saw_deployment();
        let mut blobs = self.material.holdings();
        if let Some(h) = &held {
            blobs.extend(h.blobs.iter().map(|(k, v)| (*k, v.clone())));
        }
        for b in bundle.blobs {
            let b = Bytes::from(b.into_vec());
            blobs.insert(seal::sha256(&b), b);
        }
        let unprocessable = |e: SyncError| refused(StatusCode::UNPROCESSABLE_ENTITY, e.to_string());
        let named = Material::named(&payload, &blobs).map_err(unprocessable)?;
        let (lineage, version) = (payload.lineage.id.clone(), payload.version);
        self.material
            .apply(payload.clone(), &named, "synchronized")
            .await
            .map_err(unprocessable)?;
        self.note_identity();
        self.hold(payload, bundle.payload.into_vec(), key, named);
        self.stats
            .received
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::info!(%lineage, version, "keys received and applied");
        Ok(version)
    }

    /// Sends what this enclave holds to the receiver at `target`: only the
    /// blobs it lacks. The hash of what was sent.
    pub(super) async fn push(&self, target: &Target) -> Result<[u8; 32], SyncError> {
        let Some(held) = self.held() else {
            return Err(SyncError::Malformed("no keys to send".into()));
        };
        let (offer, public_key) = self.ask_offer(target, &held).await?;
        let their_nonce = nacre_api::parse_nonce(&offer.nonce)
            .map_err(|e| SyncError::Malformed(format!("the offer: {e}")))?;
        let have = offer.held();
        let bundle = Bundle {
            payload: ByteBuf::from(held.encoded.to_vec()),
            blobs: held
                .blobs
                .iter()
                .filter(|(sha, _)| !have.contains(*sha))
                .map(|(_, b)| ByteBuf::from(b.to_vec()))
                .collect(),
        };
        let sealed = seal::seal(&public_key, &bundle.encode())?;
        drop(bundle);
        let binding = SyncBinding {
            role: SyncRole::Sender,
            payload_sha256: Some(seal::sha256(&sealed)),
        };
        let mine = self.peers.document(&their_nonce, binding, None).await?;
        let delivery = Delivery {
            document: base64::engine::general_purpose::STANDARD.encode(mine),
            encrypted_keys: base64::engine::general_purpose::STANDARD.encode(&sealed),
        };
        let body =
            serde_json::to_vec(&delivery).map_err(|e| SyncError::Malformed(e.to_string()))?;
        let path = format!(
            "/enclave/sync?offer={}&tag={}",
            hex::encode(their_nonce),
            held.key.tag(Label::Deliver, &[&their_nonce])
        );
        self.ask(target, Method::POST, &path, Some(body)).await?;
        self.stats
            .sent
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(held.hash)
    }

    /// The receiver's offer, its document checked (this enclave's fresh
    /// nonce, same image, the receiver's layout); with the public key to
    /// seal to.
    async fn ask_offer(&self, target: &Target, held: &Held) -> Result<(Offer, Vec<u8>), SyncError> {
        let nonce = random_nonce();
        let path = format!(
            "/enclave/sync?nonce={}&tag={}",
            hex::encode(nonce),
            held.key.tag(Label::Offer, &[&nonce])
        );
        let body = self.ask(target, Method::GET, &path, None).await?;
        let offer: Offer = serde_json::from_slice(&body)
            .map_err(|e| SyncError::Malformed(format!("the offer: {e}")))?;
        let checked = self
            .peers
            .check(&b64(&offer.document)?, &nonce, SyncRole::Receiver)
            .inspect_err(|e| tracing::warn!(%target, "refused to send keys: {e}"))?;
        Ok((offer, checked.public_key.unwrap_or_default()))
    }

    /// One request to a peer; its body if it answered 200, else what it
    /// said (bounded before it reaches a log line).
    async fn ask(
        &self,
        target: &Target,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Bytes, SyncError> {
        let (status, answer) = self.call(target, method, path, body).await?;
        if status != StatusCode::OK {
            return Err(SyncError::Peer(format!(
                "{target} answered {status}: {}",
                nacre_control::bounded::cut(
                    &nacre_api::ErrorBody::message(&answer).unwrap_or_default(),
                    512
                )
            )));
        }
        Ok(answer)
    }
}

/// Base64 from a peer, as bytes.
pub(super) fn b64(s: &str) -> Result<Vec<u8>, SyncError> {
    base64::engine::general_purpose::STANDARD
        .decode(s.trim())
        .map_err(|_| SyncError::Malformed("not Base64".into()))
}
