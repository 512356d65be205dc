//! The real [`PeerLink`]: requests to other enclaves' sync listeners leave
//! the enclave like guest egress, as a `CONNECT host:port` through the host
//! proxy at `--egress`, with TLS inside the enclave.
//!
//! [`PeerClient`] opens a tunnel per request (HTTP/1.1);
//! [`PooledPeerClient`] keeps one HTTP/2 connection per peer, for traffic
//! as frequent as Raft's heartbeats.
//!
//! That TLS only keeps the bytes from the host's view of the link; it is
//! not what is trusted (any certificate is taken, from a server that holds
//! its key). What is trusted are the attestation documents inside, and the
//! key material itself is sealed to the receiver.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use nacre_transport::Address;
use nacre_transport::presented::PresentedKey;
use nacre_transport::tunnel::Target;

use super::SyncError;
use super::link::{LinkFuture, PeerLink};
use crate::egress::{Outbound, Pooled};

/// The largest answer a peer may give (its offer, or a small JSON).
const MAX_ANSWER: usize = 1 << 20;

/// A client for peers' sync listeners, through the host proxy.
pub(crate) struct PeerClient {
    outbound: Outbound,
}

/// The TLS both clients use: any certificate, from a server holding its
/// key ([`PresentedKey`]); each client sets its own ALPN.
fn peer_tls() -> Result<rustls::ClientConfig, SyncError> {
    let provider = crate::tls::provider();
    let verifier = Arc::new(PresentedKey::new(&provider));
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| SyncError::Setup(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth())
}

impl PeerClient {
    /// Requests go through the host proxy at `proxy` (`--egress`).
    pub fn new(proxy: Address) -> Result<PeerClient, SyncError> {
        Ok(PeerClient {
            outbound: Outbound::new(proxy, peer_tls()?),
        })
    }
}

impl PeerLink for PeerClient {
    fn request<'a>(
        &'a self,
        to: &'a Target,
        req: Request<Bytes>,
        timeout: Duration,
    ) -> LinkFuture<'a> {
        Box::pin(async move {
            self.outbound
                .request(to, req.map(Full::new), MAX_ANSWER, timeout)
                .await
                .map_err(|e| SyncError::Peer(e.to_string()))
        })
    }
}

/// A client for peers' sync listeners that keeps one HTTP/2 connection
/// (one tunnel through the host proxy) per peer and multiplexes requests
/// over it ([`Pooled`]): no tunnel or handshake per heartbeat, and a peer
/// that is down fails requests at once during its backoff.
pub struct PooledPeerClient {
    pooled: Pooled,
}

impl PooledPeerClient {
    /// Requests go through the host proxy at `proxy` (`--egress`).
    pub fn new(proxy: Address) -> Result<PooledPeerClient, SyncError> {
        Ok(PooledPeerClient {
            pooled: Pooled::new(proxy, peer_tls()?),
        })
    }
}

impl PeerLink for PooledPeerClient {
    fn request<'a>(
        &'a self,
        to: &'a Target,
        req: Request<Bytes>,
        timeout: Duration,
    ) -> LinkFuture<'a> {
        Box::pin(async move {
            self.pooled
                .request(to, req, MAX_ANSWER, timeout)
                .await
                .map_err(|e| SyncError::Peer(e.to_string()))
        })
    }
}
