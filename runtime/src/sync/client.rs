//! Requests to other enclaves' sync listeners. They leave the enclave like
//! guest egress, as a `CONNECT host:port` through the host proxy at
//! `--egress`, with TLS inside the enclave.
//!
//! That TLS only keeps the bytes from the host's view of the link; it is
//! not what is trusted (any certificate is taken, from a server that holds
//! its key). What is trusted are the attestation documents inside, and the
//! key material itself is sealed to the receiver.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use nacre_transport::Address;
use nacre_transport::presented::PresentedKey;
use nacre_transport::tunnel::Target;

use super::SyncError;
use crate::egress::Outbound;

/// A request with a small body (designation, heartbeat, offer),
/// connection included: a peer that does not answer in this time is as
/// good as gone, and a worker must notice a hung leader quickly.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
/// A delivery (a body over [`SMALL`]) has longer: the receiver checks,
/// opens and applies it (compiling any new component) before it answers.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);
/// Bodies up to this size are small requests.
const SMALL: usize = 64 << 10;
/// A delivery's deadline grows by a second per this many bytes.
const BYTES_PER_SECOND: usize = 1 << 20;
/// The largest answer a peer may give (its offer, or a small JSON).
const MAX_ANSWER: usize = 1 << 20;

/// A client for peers' sync listeners.
pub(crate) struct PeerClient {
    outbound: Outbound,
}

impl PeerClient {
    /// Requests go through the host proxy at `proxy` (`--egress`).
    pub fn new(proxy: Address) -> Result<PeerClient, SyncError> {
        let provider = crate::tls::provider();
        let verifier = Arc::new(PresentedKey::new(&provider));
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| SyncError::Setup(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        Ok(PeerClient {
            outbound: Outbound::new(proxy, tls),
        })
    }

    /// `method path` at the peer `target`; the status and the body.
    pub async fn request(
        &self,
        target: &Target,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, Bytes), SyncError> {
        let timeout = match body.as_ref().map_or(0, Vec::len) {
            len if len > SMALL => {
                DELIVERY_TIMEOUT + Duration::from_secs((len / BYTES_PER_SECOND) as u64)
            }
            _ => REQUEST_TIMEOUT,
        };
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| SyncError::Peer(format!("{target}: {e}")))?;
        let response = self
            .outbound
            .request(target, request, MAX_ANSWER, timeout)
            .await
            .map_err(|e| SyncError::Peer(e.to_string()))?;
        Ok((response.status(), response.into_body()))
    }
}
