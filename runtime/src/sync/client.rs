//! Requests to other enclaves' sync listeners. They leave the enclave like
//! guest egress, as a `CONNECT host:port` through the host proxy at
//! `--egress`, with TLS inside the enclave.
//!
//! That TLS only keeps the bytes from the host's view of the link; it is
//! not what is trusted (any certificate is taken). What is trusted are the
//! attestation documents inside, and the key material itself is sealed to
//! the receiver.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use nacre_transport::Address;
use nacre_transport::tunnel::{self, Target};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use super::SyncError;

/// One request, connection included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest answer a peer may give (its offer, or a small JSON).
const MAX_ANSWER: usize = 1 << 20;

/// A client for peers' sync listeners.
pub(crate) struct PeerClient {
    proxy: Address,
    tls: Arc<rustls::ClientConfig>,
}

impl PeerClient {
    /// Requests go through the host proxy at `proxy` (`--egress`).
    pub fn new(proxy: Address) -> Result<PeerClient, SyncError> {
        let provider = crate::tls::provider();
        let schemes = provider
            .signature_verification_algorithms
            .supported_schemes();
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| SyncError::Setup(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(schemes)))
            .with_no_client_auth();
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(PeerClient {
            proxy,
            tls: Arc::new(tls),
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
        tokio::time::timeout(REQUEST_TIMEOUT, self.exchange(target, method, path, body))
            .await
            .map_err(|_| {
                SyncError::Peer(format!("{target}: no answer within {REQUEST_TIMEOUT:?}"))
            })?
    }

    async fn exchange(
        &self,
        target: &Target,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, Bytes), SyncError> {
        let peer = |e: String| SyncError::Peer(format!("{target}: {e}"));
        let mut stream = nacre_transport::connect(&self.proxy)
            .await
            .map_err(|e| peer(format!("the egress proxy: {e}")))?;
        tunnel::open(&mut stream, target)
            .await
            .map_err(|e| peer(e.to_string()))?;
        let name = ServerName::try_from(target.host.clone())
            .map_err(|_| peer("not a server name".into()))?;
        let tls = tokio_rustls::TlsConnector::from(self.tls.clone())
            .connect(name, stream)
            .await
            .map_err(|e| peer(format!("TLS: {e}")))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| peer(e.to_string()))?;
        tokio::spawn(conn);
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, target.to_string())
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| peer(e.to_string()))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| peer(e.to_string()))?;
        let status = response.status();
        let bytes = Limited::new(response.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| peer(format!("the answer: {e}")))?
            .to_bytes();
        Ok((status, bytes))
    }
}

/// The sync link's TLS certificate is not what is trusted (SPEC §7): any is
/// taken, and nothing that arrives over the link is believed without the
/// attestation documents inside it.
#[derive(Debug)]
struct AnyCertificate(Vec<SignatureScheme>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.clone()
    }
}
