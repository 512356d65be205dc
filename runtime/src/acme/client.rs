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

use crate::egress::Outbound;

/// One ACME request, connection included.
const TIMEOUT: Duration = Duration::from_secs(30);
/// The largest answer taken: directory, orders and certificate chains are
/// a few KiB.
const MAX_ANSWER: usize = 1 << 20;

/// The ACME client's transport.
#[derive(Clone)]
pub(crate) struct Through(pub Outbound);

impl Through {
    async fn send(&self, request: Request<BodyWrapper<Bytes>>) -> Result<BytesResponse, String> {
        let (mut parts, body) = request.into_parts();
        let uri = parts.uri.clone();
        if uri.scheme() != Some(&http::uri::Scheme::HTTPS) {
            return Err(format!("{uri}: the ACME server must be reached over https"));
        }
        let host = uri.host().ok_or_else(|| format!("{uri}: no host"))?;
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
            .map_err(|e| format!("{uri}: {e}"))?
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
            .map_err(|e| e.to_string())?;
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
                .map_err(|e| instant_acme::Error::Other(e.into()))
        })
    }
}
