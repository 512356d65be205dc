//! This enclave as a client of its peers: asking the name who leads,
//! heartbeating the leader, and sending keys to a receiver.

use base64::Engine as _;
use http::{Method, StatusCode};
use nacre_attestation::{SyncBinding, SyncRole};
use nacre_transport::tunnel::Target;
use std::sync::atomic::Ordering;

use super::wire::{Delivery, Heartbeat, HeartbeatAnswer, Offer};
use super::{Held, Sync, SyncError, random_nonce, seal};

impl Sync {
    /// Whether the name `--fqdn-leader` leads to this very enclave.
    pub(super) async fn reach_self(&self) -> Reach {
        let nonce = random_nonce();
        if let Ok(mut probe) = self.probe.lock() {
            *probe = Some(nonce);
        }
        self.probe_seen.store(false, Ordering::Release);
        let path = format!("/enclave/leader?nonce={}", hex::encode(nonce));
        let answer = self
            .client
            .request(&self.config.leader, Method::GET, &path, None)
            .await;
        if self.probe_seen.swap(false, Ordering::AcqRel) {
            return Reach::Myself;
        }
        match answer {
            Ok((StatusCode::GONE, _)) => Reach::Other,
            Ok(_) => Reach::NotYet,
            Err(e) => {
                tracing::debug!("designation: {e}");
                Reach::Unreachable
            }
        }
    }

    pub(super) async fn heartbeat(&self) -> Result<HeartbeatAnswer, Beat> {
        let held = self.held();
        let beat = Heartbeat {
            hashed_keys: held.as_ref().map(|h| hex::encode(h.hash)),
            worker_hostname: self.config.advertise.to_string(),
            lineage: held.as_ref().map(|h| h.lineage.clone()),
            version: held.as_ref().map_or(0, |h| h.version),
        };
        let body = serde_json::to_vec(&beat).map_err(|e| Beat::Failed(e.to_string()))?;
        let (status, answer) = self
            .client
            .request(
                &self.config.leader,
                Method::POST,
                "/enclave/heartbeat",
                Some(body),
            )
            .await
            .map_err(|e| Beat::Failed(e.to_string()))?;
        match status {
            StatusCode::OK => {
                serde_json::from_slice(&answer).map_err(|e| Beat::Failed(e.to_string()))
            }
            StatusCode::SERVICE_UNAVAILABLE => Err(Beat::NotLeader),
            other => Err(Beat::Failed(format!("the leader answered {other}"))),
        }
    }

    /// Sends what this enclave holds to the receiver at `target`; the
    /// hash of what was sent.
    pub(super) async fn push(&self, target: &Target) -> Result<[u8; 32], SyncError> {
        let Some(Held { payload, hash, .. }) = self.held() else {
            return Err(SyncError::Malformed("no keys to send".into()));
        };
        let nonce = random_nonce();
        let path = format!("/enclave/sync?nonce={}", hex::encode(nonce));
        let (status, body) = self
            .client
            .request(target, Method::GET, &path, None)
            .await?;
        if status != StatusCode::OK {
            return Err(SyncError::Peer(format!(
                "{target} answered {status} to the offer"
            )));
        }
        let offer: Offer = serde_json::from_slice(&body)
            .map_err(|e| SyncError::Malformed(format!("the offer: {e}")))?;
        let document = b64(&offer.document)?;
        let their_nonce = nacre_api::parse_nonce(&offer.nonce)
            .map_err(|e| SyncError::Malformed(format!("the offer: {e}")))?;
        let checked = self
            .peers
            .check(&document, &nonce, SyncRole::Receiver)
            .inspect_err(|e| {
                tracing::warn!(%target, "refused to send keys: {e}");
            })?;
        let public_key = checked.public_key.unwrap_or_default();
        let sealed = seal::seal(&public_key, &payload)?;
        let mine = self
            .peers
            .document(
                &their_nonce,
                SyncBinding {
                    role: SyncRole::Sender,
                    payload_sha256: Some(seal::sha256(&sealed)),
                },
                None,
            )
            .await?;
        let delivery = Delivery {
            document: base64::engine::general_purpose::STANDARD.encode(mine),
            encrypted_keys: base64::engine::general_purpose::STANDARD.encode(sealed),
        };
        let body =
            serde_json::to_vec(&delivery).map_err(|e| SyncError::Malformed(e.to_string()))?;
        let (status, answer) = self
            .client
            .request(target, Method::POST, "/enclave/sync", Some(body))
            .await?;
        if status != StatusCode::OK {
            return Err(SyncError::Peer(format!(
                "{target} answered {status}: {}",
                nacre_api::ErrorBody::message(&answer).unwrap_or_default()
            )));
        }
        self.stats
            .sent
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(hash)
    }
}

/// What asking the name for `/enclave/leader` showed.
pub(super) enum Reach {
    /// The request came back to this enclave.
    Myself,
    /// Another enclave leads there (410).
    Other,
    /// Someone is there but not designated yet.
    NotYet,
    /// Nobody answered.
    Unreachable,
}

/// Why a heartbeat failed.
#[derive(Debug)]
pub(super) enum Beat {
    /// Whoever is at the name does not lead.
    NotLeader,
    /// Nobody answered, or garbage.
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

/// Base64 from a peer, as bytes.
pub(super) fn b64(s: &str) -> Result<Vec<u8>, SyncError> {
    base64::engine::general_purpose::STANDARD
        .decode(s.trim())
        .map_err(|_| SyncError::Malformed("not Base64".into()))
}
