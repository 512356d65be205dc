//! One KMS call without the I/O: [`request`] builds the signed HTTP
//! request, the caller sends it however it sends things (vsock proxy,
//! hyper, a test), and [`response`] reads the answer.

use std::time::SystemTime;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HOST};
use http::{Method, StatusCode, Uri};
use serde::Serialize;
use serde::de::DeserializeOwned;
use thiserror::Error;

use crate::sigv4::{self, Credentials, SigV4Error, X_AMZ_TARGET};
use crate::wire::{ErrorBody, ErrorCode, JSON_CONTENT_TYPE, Operation};

/// How much of a non-KMS error body goes into [`CallError::Http`].
const EXCERPT_LEN: usize = 200;
const HTTPS_PORT: u16 = 443;

/// Where KMS is: an https host and port, and the region to sign for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    host: String,
    port: u16,
    region: String,
}

impl Endpoint {
    /// KMS's public endpoint for `region`: `https://kms.REGION.amazonaws.com`.
    pub fn aws(region: &str) -> Endpoint {
        Endpoint {
            host: format!("kms.{region}.amazonaws.com"),
            port: HTTPS_PORT,
            region: region.to_owned(),
        }
    }

    /// Another endpoint (a VPC endpoint, FIPS endpoint or a stand-in):
    /// `https://host[:port][/]`. Plain http is refused: requests carry
    /// signed credentials and answers may carry plaintext keys.
    pub fn custom(url: &str, region: &str) -> Result<Endpoint, CallError> {
        let invalid = |reason: &str| CallError::InvalidEndpoint {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let uri: Uri = url
            .parse()
            .map_err(|e: http::uri::InvalidUri| invalid(&e.to_string()))?;
        match uri.scheme_str() {
            Some("https") => {}
            Some("http") => {
                return Err(CallError::InsecureEndpoint {
                    url: url.to_owned(),
                });
            }
            Some(other) => return Err(invalid(&format!("scheme {other} is not https"))),
            None => return Err(invalid("not an absolute URL; expected https://host[:port]")),
        }
        let authority = uri.authority().ok_or_else(|| invalid("no host"))?;
        if authority.as_str().contains('@') {
            return Err(invalid("user information in the URL is not supported"));
        }
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(invalid("KMS is served at \"/\"; remove the path and query"));
        }
        if region.is_empty()
            || !region
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(invalid(&format!(
                "region {region:?} is not like \"us-east-1\""
            )));
        }
        Ok(Endpoint {
            host: authority.host().to_owned(),
            port: authority.port_u16().unwrap_or(HTTPS_PORT),
            region: region.to_owned(),
        })
    }

    /// The host name (or IP literal; IPv6 in brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The TCP port (443 unless the URL said otherwise).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The region requests are signed for.
    pub fn region(&self) -> &str {
        &self.region
    }

    /// The `host` header value: the host, plus `:port` when not 443.
    pub fn authority(&self) -> String {
        if self.port == HTTPS_PORT {
            self.host.clone()
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// `https://AUTHORITY/`, for logs and for clients that want a URL.
    pub fn url(&self) -> String {
        format!("https://{}/", self.authority())
    }
}

/// Why a call could not be made or its answer used.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum CallError {
    /// An `http://` endpoint.
    #[error(
        "KMS endpoint {url} uses plain http, which would expose signed requests and returned keys; use an https:// URL (a local stand-in must serve TLS)"
    )]
    InsecureEndpoint {
        /// The URL given.
        url: String,
    },
    /// An endpoint URL that is not `https://host[:port]`.
    #[error("invalid KMS endpoint {url}: {reason}")]
    InvalidEndpoint {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The request body could not be serialized.
    #[error("could not encode the KMS {operation} request: {detail}")]
    Encode {
        /// The operation.
        operation: &'static str,
        /// serde_json's explanation.
        detail: String,
    },
    /// The HTTP request could not be built (an invalid host, say).
    #[error("could not build the KMS {operation} request: {detail}")]
    Build {
        /// The operation.
        operation: &'static str,
        /// http's explanation.
        detail: String,
    },
    /// Signing failed.
    #[error("could not sign the KMS request: {0}")]
    Sign(#[from] SigV4Error),
    /// KMS answered with an error.
    #[error("KMS refused: {}", kms_text(code, message))]
    Kms {
        /// The error's name.
        code: ErrorCode,
        /// KMS's message.
        message: String,
    },
    /// A success answer that does not parse.
    #[error("malformed KMS {response}: {detail}")]
    Malformed {
        /// The response type expected ("DecryptResponse").
        response: &'static str,
        /// serde_json's explanation (names the field, never its value).
        detail: String,
    },
    /// A failure status whose body is not a KMS error (a proxy's page).
    #[error("KMS endpoint answered HTTP {status} with a body that is not a KMS error: {body}")]
    Http {
        /// The status.
        status: StatusCode,
        /// The start of the body, control characters escaped.
        body: String,
    },
}

fn kms_text(code: &ErrorCode, message: &str) -> String {
    if message.is_empty() {
        code.to_string()
    } else {
        format!("{code}: {message}")
    }
}

/// Builds the signed `POST /` for `op` with `body` as JSON: headers
/// `host`, `content-type`, `x-amz-target`, then the SigV4 ones.
pub fn request<T: Serialize>(
    endpoint: &Endpoint,
    op: Operation,
    body: &T,
    credentials: &Credentials,
    at: SystemTime,
) -> Result<http::Request<Bytes>, CallError> {
    let json = serde_json::to_vec(body).map_err(|e| CallError::Encode {
        operation: op.name(),
        detail: e.to_string(),
    })?;
    let mut request = http::Request::builder()
        .method(Method::POST)
        .uri("/")
        .header(HOST, endpoint.authority())
        .header(CONTENT_TYPE, JSON_CONTENT_TYPE)
        .header(X_AMZ_TARGET, op.target())
        .body(Bytes::from(json))
        .map_err(|e| CallError::Build {
            operation: op.name(),
            detail: e.to_string(),
        })?;
    sigv4::sign(&mut request, credentials, endpoint.region(), at)?;
    Ok(request)
}

/// Reads KMS's answer: a 2xx body as `T`, anything else as an error.
pub fn response<T: DeserializeOwned>(status: StatusCode, body: &[u8]) -> Result<T, CallError> {
    if status.is_success() {
        return serde_json::from_slice(body).map_err(|e| CallError::Malformed {
            response: short_type_name::<T>(),
            detail: e.to_string(),
        });
    }
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(error) => Err(CallError::Kms {
            code: error.code(),
            message: error.message,
        }),
        Err(_) => Err(CallError::Http {
            status,
            body: excerpt(body),
        }),
    }
}

/// "nacre_kms::wire::DecryptResponse" → "DecryptResponse".
fn short_type_name<T>() -> &'static str {
    let full = std::any::type_name::<T>();
    let base = full.split('<').next().unwrap_or(full);
    base.rsplit("::").next().unwrap_or(base)
}

/// The first [`EXCERPT_LEN`] bytes as text fit for one log line.
fn excerpt(body: &[u8]) -> String {
    let cut = &body[..body.len().min(EXCERPT_LEN)];
    let mut text: String = String::from_utf8_lossy(cut)
        .chars()
        .flat_map(|c| {
            let escaped: Vec<char> = if c.is_control() {
                c.escape_default().collect()
            } else {
                vec![c]
            };
            escaped
        })
        .collect();
    if body.len() > EXCERPT_LEN {
        text.push('…');
    }
    if text.is_empty() {
        text.push_str("(empty)");
    }
    text
}
