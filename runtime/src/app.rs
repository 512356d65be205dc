//! The request dispatcher: `/enclave/...` to the runtime, the rest to the
//! guest with the longest matching route.
//!
//! [`App::handle`] takes any request body, so tests can drive it without a
//! socket, the way the HTTP server does with one.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body::Body;

use crate::attest::Attester;
use crate::config::Config;
use crate::guests::{GuestBody, Outcome, Registry, invoke};
use crate::http::error;
use crate::server::ConnStats;
use crate::tls::TlsIdentity;
use crate::{admin, endpoints};

/// Shared state of a running runtime.
pub struct App {
    pub(crate) config: Config,
    pub(crate) registry: Arc<Registry>,
    pub(crate) tls: TlsIdentity,
    pub(crate) started: Instant,
    pub(crate) conns: ConnStats,
    pub(crate) requests: AtomicU64,
    pub(crate) attester: Arc<dyn Attester>,
    /// Documents `/enclave/attestation` may have in progress at once.
    pub(crate) documents: Arc<tokio::sync::Semaphore>,
}

/// `/enclave/attestation` is open to anyone, and each document costs a
/// blocking thread and an NSM call (or a P-384 signature in dev mode):
/// past this many at once, clients get 503 and `Retry-After`, so a flood
/// never holds back compiles or guests' own documents, which have slots
/// of their own.
const PUBLIC_DOCUMENTS: usize = 2;

impl App {
    /// Builds the app from its parts.
    pub fn new(
        config: Config,
        registry: Arc<Registry>,
        tls: TlsIdentity,
        attester: Arc<dyn Attester>,
    ) -> App {
        App {
            attester,
            config,
            registry,
            tls,
            started: Instant::now(),
            conns: ConnStats::default(),
            requests: AtomicU64::new(0),
            documents: Arc::new(tokio::sync::Semaphore::new(PUBLIC_DOCUMENTS)),
        }
    }

    /// The guest table.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    pub(crate) fn conn_stats(&self) -> &ConnStats {
        &self.conns
    }

    /// `--client-timeout`.
    pub(crate) fn client_timeout(&self) -> std::time::Duration {
        self.config.client_timeout
    }

    /// Answers one request.
    pub async fn handle<B>(&self, req: Request<B>) -> Response<GuestBody>
    where
        B: Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: Into<wasmtime_wasi_http::Error> + Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let path = req.uri().path();
        if path == "/enclave" || path.starts_with("/enclave/") {
            let path = path.to_string();
            return match path.strip_prefix("/enclave/guests") {
                Some(rest) if rest.is_empty() || rest.starts_with('/') => {
                    admin::handle(self, req, rest).await
                }
                _ if path == "/enclave/attestation" => endpoints::attestation(self, &req).await,
                _ => endpoints::handle(self, &req, &path),
            };
        }
        self.to_guest(req).await
    }

    async fn to_guest<B>(&self, req: Request<B>) -> Response<GuestBody>
    where
        B: Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: Into<wasmtime_wasi_http::Error>,
    {
        let snapshot = self.registry.snapshot();
        let path = req.uri().path();
        let Some((guest, rest)) = snapshot.route(path) else {
            if let Some(name) = snapshot.starting(path) {
                let mut r = error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &format!("guest {name} is starting; retry shortly"),
                );
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                return r;
            }
            return error(StatusCode::NOT_FOUND, &format!("no guest serves {path}"));
        };
        let target = match req.uri().query() {
            Some(q) => format!("{rest}?{q}"),
            None => rest.to_string(),
        };
        let guest = guest.clone();
        drop(snapshot);
        let name = guest.config.name.clone();
        match invoke(self.registry.engine(), guest, req, &target).await {
            Outcome::Response(r) => r,
            // Guests' internals stay in the log; clients learn only which
            // guest failed and how.
            Outcome::Failed(_) => error(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("guest {name} failed"),
            ),
            Outcome::TimedOut => error(
                StatusCode::GATEWAY_TIMEOUT,
                &format!(
                    "guest {name} did not answer within {:?}",
                    self.config.request_timeout
                ),
            ),
            Outcome::BodyTooLarge => error(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!(
                    "request body is over the {} byte limit (--max-body)",
                    self.config.max_body
                ),
            ),
            Outcome::BodyStalled => error(
                StatusCode::REQUEST_TIMEOUT,
                &format!(
                    "the request body stopped arriving for {:?} (--client-timeout)",
                    self.config.client_timeout
                ),
            ),
            Outcome::Busy(why) => {
                let mut r = error(StatusCode::SERVICE_UNAVAILABLE, &why);
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                r
            }
        }
    }
}
