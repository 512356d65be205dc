//! instant-acme's HTTP client, as the runtime's own outbound HTTPS: every
//! ACME request leaves as a `CONNECT` through the host proxy with TLS
//! inside the enclave, checked against the Mozilla roots plus
//! `--extra-ca`, so the host sees only ciphertext.

use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Uri};
use http_body_util::{BodyExt, Full};
use instant_acme::{BodyWrapper, BytesResponse, HttpClient};
use nacre_transport::tunnel::Target;

use crate::egress::{OnceError, Outbound};

/// One ACME request, connection included.
const TIMEOUT: Duration = Duration::from_secs(30);
/// The largest answer taken: directory, orders and certificate chains are
/// a few KiB.
const MAX_ANSWER: usize = 1 << 20;

/// Why a request to the CA failed below ACME. instant-acme hands it back
/// inside [`instant_acme::Error::Other`], where [`unanswered`] finds it.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TransportError {
    /// The CA never answered: the host proxy, the `CONNECT` (DNS, a
    /// refused connection) or the connection failed, or the time ran out.
    /// Nothing reached the CA, so none of its limits was spent.
    #[error(transparent)]
    Unanswered(OnceError),
    /// Anything else: the request could not be made, or the answer was
    /// unusable (a certificate refused, an answer too large).
    #[error("{0}")]
    Failed(String),
}

/// Whether `e` says the CA never answered (see
/// [`TransportError::Unanswered`]), as opposed to a problem document, a
/// failed validation or an answer that could not be used.
pub(crate) fn unanswered(e: &instant_acme::Error) -> bool {
    match e {
        instant_acme::Error::Other(inner) => matches!(
            inner.downcast_ref::<TransportError>(),
            Some(TransportError::Unanswered(_))
        ),
        _ => false,
    }
}

/// The ACME client's transport.
#[derive(Clone)]
pub(crate) struct Through(pub Outbound);

impl Through {
    async fn send(
        &self,
        request: Request<BodyWrapper<Bytes>>,
    ) -> Result<BytesResponse, TransportError> {
        let failed = TransportError::Failed;
        let (mut parts, body) = request.into_parts();
        let uri = parts.uri.clone();
        if uri.scheme() != Some(&http::uri::Scheme::HTTPS) {
            return Err(failed(format!(
                "{uri}: the ACME server must be reached over https"
            )));
        }
        let host = uri
            .host()
            .ok_or_else(|| failed(format!("{uri}: no host")))?;
        let target = Target {
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
            port: uri.port_u16().unwrap_or(443),
        };
        parts.uri = match uri.path_and_query() {
            Some(pq) => Uri::from(pq.clone()),
            None => Uri::from_static("/"),
        };
        let body = body
            .collect()
            .await
            .map_err(|e| failed(format!("{uri}: {e}")))?
            .to_bytes();
        let response = self
            .0
            .request(
                &target,
                Request::from_parts(parts, Full::new(body)),
                MAX_ANSWER,
                TIMEOUT,
            )
            .await
            .map_err(|e| {
                if e.unanswered {
                    TransportError::Unanswered(e)
                } else {
                    failed(e.to_string())
                }
            })?;
        let (parts, body) = response.into_parts();
        Ok(BytesResponse {
            parts,
            body: Box::new(body),
        })
    }
}

impl HttpClient for Through {
    fn request(
        &self,
        request: Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let this = self.clone();
        Box::pin(async move {
            this.send(request)
                .await
                .map_err(|e| instant_acme::Error::Other(Box::new(e)))
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// What instant-acme gets for a directory request through a host
    /// proxy at `proxy`, trusting only the Mozilla roots.
    async fn ask(proxy: &str) -> instant_acme::Error {
        let tls = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            })
            .with_no_client_auth();
        let through = Through(Outbound::new(proxy.parse().unwrap(), tls));
        let request = Request::get("https://ca.test/dir")
            .body(BodyWrapper::default())
            .unwrap();
        match through.request(request).await {
            Ok(_) => panic!("an answer from nowhere"),
            Err(e) => e,
        }
    }

    /// A host proxy on loopback that answers every CONNECT with `status`
    /// and then, on 200, serves TLS with a certificate nobody trusts.
    async fn proxy(status: &'static str) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && conn.read(&mut byte).await.unwrap_or(0) == 1 {
                    head.push(byte[0]);
                }
                let answer = format!("HTTP/1.1 {status}\r\n\r\n");
                if conn.write_all(answer.as_bytes()).await.is_err() || !status.starts_with("200") {
                    continue;
                }
                let (chain, key) = crate::tls::self_signed_pair("ca.test").unwrap();
                let config = rustls::ServerConfig::builder_with_provider(crate::tls::provider())
                    .with_safe_default_protocol_versions()
                    .unwrap()
                    .with_no_client_auth()
                    .with_single_cert(chain, key)
                    .unwrap();
                let _ = tokio_rustls::TlsAcceptor::from(Arc::new(config))
                    .accept(conn)
                    .await;
            }
        });
        format!("tcp://{addr}")
    }

    #[tokio::test]
    async fn a_ca_that_never_answered_is_told_from_one_that_did() {
        // No host proxy listening.
        let dir = std::env::temp_dir().join(format!("nacre-acme-client-{}", std::process::id()));
        let nowhere = format!("unix:{}", dir.join("absent.sock").display());
        assert!(unanswered(&ask(&nowhere).await));
        // The host proxy could not reach the CA (connection refused,
        // DNS): 502; or took too long: 504.
        assert!(unanswered(&ask(&proxy("502 Bad Gateway").await).await));
        assert!(unanswered(&ask(&proxy("504 Gateway Timeout").await).await));
        // Something answered, with a certificate that is not the CA's:
        // retrying soon would not help.
        let refused = ask(&proxy("200 Connection established").await).await;
        assert!(!unanswered(&refused), "{refused}");
        assert!(refused.to_string().contains("TLS"), "{refused}");
        // The CA's own problem document.
        let problem: instant_acme::Problem = serde_json::from_value(serde_json::json!({
            "type": "urn:ietf:params:acme:error:rejectedIdentifier",
            "detail": "no",
            "status": 400,
        }))
        .unwrap();
        assert!(!unanswered(&instant_acme::Error::Api(problem)));
    }
}
