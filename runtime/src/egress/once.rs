//! The runtime's own outbound HTTPS (the ACME client, peers' sync
//! listeners): one HTTP/1.1 request per tunnel through the host proxy, with
//! TLS inside the enclave. These are rare, small exchanges, so no pool.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use nacre_transport::Address;
use nacre_transport::tunnel::{self, Target};
use rustls::pki_types::ServerName;

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
        let mut tls = tls;
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        Outbound {
            proxy,
            tls: Arc::new(tls),
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
        let mut stream = nacre_transport::connect(&self.proxy)
            .await
            .map_err(|e| unanswered(format!("the egress proxy {}: {e}", self.proxy)))?;
        tunnel::open(&mut stream, target)
            .await
            .map_err(|e| unanswered(e.to_string()))?;
        let name = match target.host.parse::<std::net::IpAddr>() {
            Ok(ip) => ServerName::IpAddress(ip.into()),
            Err(_) => ServerName::try_from(target.host.clone())
                .map_err(|_| err("not a server name".into()))?,
        };
        let tls = tokio_rustls::TlsConnector::from(self.tls.clone())
            .connect(name, stream)
            .await
            .map_err(|e| {
                // A TLS alert or a certificate refused is an answer; a
                // connection closed before any is not.
                let spoke = e
                    .get_ref()
                    .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some());
                let why = format!("TLS: {e}");
                if spoke { err(why) } else { unanswered(why) }
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
