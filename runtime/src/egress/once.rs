//! The runtime's own outbound HTTPS (the ACME client, peers' sync
//! listeners): one HTTP/1.1 request per tunnel through the host proxy, with
//! TLS inside the enclave. These are rare, small exchanges, so no pool.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use nacre_transport::tunnel::{self, Target};
use nacre_transport::{Address, Stream};
use rustls::pki_types::ServerName;
use tokio_rustls::client::TlsStream;

/// Why a request of the runtime's own failed; the message names the
/// target and the step.
#[derive(Debug, thiserror::Error)]
#[error("{target}: {why}")]
pub struct OnceError {
    /// Where the request went.
    pub target: String,
    /// What went wrong.
    pub why: String,
    /// The origin never answered: the egress proxy, the `CONNECT` or the
    /// request failed, or no answer came in time. A caller may retry such
    /// a failure sooner than a refusal, which the origin did send.
    pub unanswered: bool,
}

/// A failed step before any HTTP: why, and whether nothing that spoke TLS
/// or HTTP answered (as in [`OnceError`]).
pub(super) struct ConnectError {
    pub(super) why: String,
    pub(super) unanswered: bool,
}

/// `tls` with its ALPN set to `protocol` alone.
pub(super) fn with_alpn(tls: rustls::ClientConfig, protocol: &[u8]) -> Arc<rustls::ClientConfig> {
    let mut tls = tls;
    tls.alpn_protocols = vec![protocol.to_vec()];
    Arc::new(tls)
}

/// `CONNECT` to `target` through the host proxy at `proxy`, then TLS
/// inside the tunnel, checked with `tls`.
pub(super) async fn tls_tunnel(
    proxy: &Address,
    tls: Arc<rustls::ClientConfig>,
    target: &Target,
) -> Result<TlsStream<Stream>, ConnectError> {
    let unanswered = |why: String| ConnectError {
        why,
        unanswered: true,
    };
    let mut stream = nacre_transport::connect(proxy)
        .await
        .map_err(|e| unanswered(format!("the egress proxy {proxy}: {e}")))?;
    tunnel::open(&mut stream, target)
        .await
        .map_err(|e| unanswered(e.to_string()))?;
    let name = match target.host.parse::<std::net::IpAddr>() {
        Ok(ip) => ServerName::IpAddress(ip.into()),
        Err(_) => ServerName::try_from(target.host.clone()).map_err(|_| ConnectError {
            why: "not a server name".into(),
            unanswered: false,
        })?,
    };
    tokio_rustls::TlsConnector::from(tls)
        .connect(name, stream)
        .await
        .map_err(|e| {
            // A TLS alert or a certificate refused is an answer; a
            // connection closed before any is not.
            let spoke = e
                .get_ref()
                .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some());
            ConnectError {
                why: format!("TLS: {e}"),
                unanswered: !spoke,
            }
        })
}

/// A client for the runtime's own requests.
#[derive(Clone)]
pub struct Outbound {
    proxy: Address,
    tls: Arc<rustls::ClientConfig>,
}

impl Outbound {
    /// Requests go through the host proxy at `proxy` (`--egress`) and
    /// check the origin's certificate with `tls` (ALPN is set to HTTP/1.1).
    pub fn new(proxy: Address, tls: rustls::ClientConfig) -> Outbound {
        Outbound {
            proxy,
            tls: with_alpn(tls, b"http/1.1"),
        }
    }

    /// Sends `request` (origin-form URI) to `target` and reads an answer of
    /// at most `max` bytes, all within `timeout`.
    pub async fn request(
        &self,
        target: &Target,
        request: Request<Full<Bytes>>,
        max: usize,
        timeout: Duration,
    ) -> Result<Response<Bytes>, OnceError> {
        tokio::time::timeout(timeout, self.exchange(target, request, max))
            .await
            .map_err(|_| OnceError {
                target: target.to_string(),
                why: format!("no answer within {timeout:?}"),
                unanswered: true,
            })?
    }

    async fn exchange(
        &self,
        target: &Target,
        mut request: Request<Full<Bytes>>,
        max: usize,
    ) -> Result<Response<Bytes>, OnceError> {
        let err = |why: String| OnceError {
            target: target.to_string(),
            why,
            unanswered: false,
        };
        let unanswered = |why: String| OnceError {
            unanswered: true,
            ..err(why)
        };
        let tls = tls_tunnel(&self.proxy, self.tls.clone(), target)
            .await
            .map_err(|f| OnceError {
                target: target.to_string(),
                why: f.why,
                unanswered: f.unanswered,
            })?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| err(e.to_string()))?;
        tokio::spawn(conn);
        // A request that names its host keeps it: a signed one (KMS's
        // SigV4) covers the header as the caller wrote it.
        if !request.headers().contains_key(http::header::HOST) {
            let host = http::HeaderValue::from_str(&target.to_string())
                .map_err(|_| err("not a host name".into()))?;
            request.headers_mut().insert(http::header::HOST, host);
        }
        // No answer's head: the origin went away or never spoke HTTP.
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| unanswered(e.to_string()))?;
        let (parts, body) = response.into_parts();
        let bytes = Limited::new(body, max)
            .collect()
            .await
            .map_err(|e| err(format!("the answer: {e}")))?
            .to_bytes();
        Ok(Response::from_parts(parts, bytes))
    }
}
