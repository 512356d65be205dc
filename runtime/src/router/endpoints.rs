//! The runtime's own public endpoints under `/enclave`: the index,
//! configuration, manifest, statistics and attestation documents.

use std::sync::Arc;
use std::time::Instant;

use base64::Engine as _;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use nacre_api::paths;
use nacre_attestation::{DocumentRequest, RuntimeBinding};
use tokio::sync::watch;

use crate::attest::Attester;
use crate::fleet::Role;
use crate::guests::Registry;
use crate::http::{ResponseBody, error, json, with_type};
use crate::server::ConnStats;
use crate::tls::Identity;

/// `/enclave/attestation` is open to anyone, and each document costs a
/// blocking thread and an NSM call (or a P-384 signature in dev mode):
/// past this many at once, clients get 503 and `Retry-After`, so a flood
/// never holds back compiles or guests' own documents, which have slots
/// of their own.
const PUBLIC_DOCUMENTS: usize = 2;

/// What the endpoints read: the certificate served, the guest table, the
/// attestation provider, the static configuration and the counters.
pub struct Endpoints {
    identity: Arc<Identity>,
    registry: Arc<Registry>,
    attester: Arc<dyn Attester>,
    documents: Arc<tokio::sync::Semaphore>,
    /// `/enclave/config` without its live fields: the flags never change.
    config: serde_json::Value,
    /// `/enclave/debug`, when `--debug` is on.
    debug: Option<Stats>,
    /// This enclave's part in its deployment.
    role: watch::Receiver<Role>,
    /// The deployment's replicated data, with `--fqdn-leader`.
    replica: Option<Arc<dyn crate::fleet::Replica>>,
}

/// What `/enclave/debug` shows: anyone can read it, the host included,
/// so only process-wide figures, as `--metrics-listen` serves them; no
/// count of requests and nothing per guest (those are the operator's, at
/// `/enclave/metrics`).
pub struct Stats {
    started: Instant,
    conns: Arc<ConnStats>,
    figures: Option<Arc<crate::metrics::Metrics>>,
}

impl Stats {
    /// Counters from now on, with the listener's connection counters and
    /// the figures `--metrics-listen` serves.
    pub fn new(conns: Arc<ConnStats>, figures: Option<Arc<crate::metrics::Metrics>>) -> Stats {
        Stats {
            started: Instant::now(),
            conns,
            figures,
        }
    }
}

impl Endpoints {
    /// The endpoints; `config` is the effective configuration (no secrets),
    /// `debug` turns on `/enclave/debug`.
    pub fn new(
        identity: Arc<Identity>,
        registry: Arc<Registry>,
        attester: Arc<dyn Attester>,
        config: serde_json::Value,
        debug: Option<Stats>,
        role: watch::Receiver<Role>,
    ) -> Endpoints {
        Endpoints {
            identity,
            registry,
            attester,
            documents: Arc::new(tokio::sync::Semaphore::new(PUBLIC_DOCUMENTS)),
            config,
            debug,
            role,
            replica: None,
        }
    }

    /// Shows the replicated group's view (who leads, the members) in
    /// `/enclave/config`.
    pub fn with_replica(mut self, replica: Option<Arc<dyn crate::fleet::Replica>>) -> Endpoints {
        self.replica = replica;
        self
    }

    /// Answers `/enclave`, `/enclave/config`, `/enclave/debug` and
    /// `/enclave/manifest`.
    pub fn handle<B>(&self, req: &Request<B>, path: &str) -> Response<ResponseBody> {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return not_allowed(&format!("{path} answers GET only"), "GET, HEAD");
        }
        match path.trim_end_matches('/') {
            paths::INDEX => with_type(StatusCode::OK, "text/html; charset=utf-8", index()),
            paths::CONFIG => json(StatusCode::OK, &self.config()),
            paths::MANIFEST => with_type(
                StatusCode::OK,
                "application/json",
                self.registry.snapshot().manifest().clone(),
            ),
            paths::DEBUG if self.debug.is_some() => json(StatusCode::OK, &self.debug()),
            _ => error(
                StatusCode::NOT_FOUND,
                &format!("{path} is not an endpoint of this runtime"),
            ),
        }
    }

    /// `GET /enclave/attestation?nonce=HEX`: a document binding the
    /// certificate served now and the current manifest, Base64.
    pub async fn attestation<B>(&self, req: &Request<B>) -> Response<ResponseBody> {
        if req.method() != Method::GET {
            return not_allowed("/enclave/attestation answers GET only", "GET");
        }
        let nonce = form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
            .find(|(k, _)| k == "nonce")
            .map(|(_, v)| v.into_owned());
        let nonce = match nonce.as_deref().map(nacre_api::parse_nonce) {
            Some(Ok(n)) => n,
            Some(Err(why)) => return error(StatusCode::BAD_REQUEST, &why.to_string()),
            None => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "missing ?nonce=HEX: give 40 hex digits (20 random bytes)",
                );
            }
        };
        let Ok(slot) = self.documents.clone().try_acquire_owned() else {
            let mut r = error(
                StatusCode::SERVICE_UNAVAILABLE,
                "attestation documents are being made for other clients; retry shortly",
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            return r;
        };
        let binding = RuntimeBinding {
            tls_cert_sha256: self.identity.leaf_sha256(),
            manifest_sha256: self.registry.snapshot().manifest_sha256(),
        };
        let request = DocumentRequest {
            nonce: Some(nonce.to_vec()),
            user_data: Some(binding.to_bytes()),
            ..DocumentRequest::default()
        };
        let attester = self.attester.clone();
        // The NSM is an ioctl; signing is CPU work: both off the async threads.
        let made = tokio::task::spawn_blocking(move || {
            let _slot = slot;
            attester.attest(request)
        });
        match made.await {
            Ok(Ok(doc)) => with_type(
                StatusCode::OK,
                "text/plain; charset=utf-8",
                base64::engine::general_purpose::STANDARD.encode(doc),
            ),
            Ok(Err(e)) => {
                tracing::error!("attestation failed: {e}");
                error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the attestation provider failed; see the runtime log",
                )
            }
            Err(e) => error(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("attestation task failed: {e}"),
            ),
        }
    }

    fn config(&self) -> serde_json::Value {
        let mut v = self.config.clone();
        if let Some(obj) = v.as_object_mut() {
            obj.insert("version".into(), env!("CARGO_PKG_VERSION").into());
            obj.insert("tls_certificate".into(), self.identity.source().into());
            obj.insert(
                "tls_certificate_sha256".into(),
                hex::encode(self.identity.leaf_sha256()).into(),
            );
            // The ACME account's URI, for a CAA accounturi; never its key.
            obj.insert(
                "acme_account".into(),
                crate::acme::account_uri(&self.identity).into(),
            );
            // The role and the leader's name; never a key.
            let mut sync = serde_json::to_value(&*self.role.borrow()).unwrap_or_default();
            if let (Some(r), Some(sync)) = (&self.replica, sync.as_object_mut()) {
                sync.insert("raft".into(), r.describe());
            }
            obj.insert("sync".into(), sync);
            obj.insert(
                "guests".into(),
                self.registry
                    .snapshot()
                    .guests()
                    .map(|g| g.config.name.to_string())
                    .collect(),
            );
        }
        v
    }

    fn debug(&self) -> serde_json::Value {
        let Some(stats) = &self.debug else {
            return serde_json::Value::Null;
        };
        let mut v = serde_json::json!({
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_seconds": stats.started.elapsed().as_secs_f64(),
            "connections": &*stats.conns,
            "resident_memory_bytes": resident_memory(),
            "compiled_components_cached": self.registry.cached_components(),
            "guest_memory_free_bytes": self.registry.engine().memory_left(),
        });
        // The figures `--metrics-listen` serves, for a person.
        if let (Some(figures), Some(obj)) = (&stats.figures, v.as_object_mut())
            && let serde_json::Value::Object(more) = figures.to_json()
        {
            obj.extend(more);
        }
        v
    }
}

/// 405 with `message` and the methods allowed.
pub(super) fn not_allowed(message: &str, allow: &'static str) -> Response<ResponseBody> {
    let mut r = error(StatusCode::METHOD_NOT_ALLOWED, message);
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    r
}

fn index() -> String {
    let v = env!("CARGO_PKG_VERSION");
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Nacre enclave</title></head><body>\
<h1>This code runs in an enclave</h1>\
<p>nacre-runtime {v}: WebAssembly guests behind TLS that ends inside this enclave.</p>\
<ul>\
<li><a href=\"/enclave/attestation?nonce=0000000000000000000000000000000000000000\">/enclave/attestation?nonce=HEX</a>: attestation document binding this TLS certificate and the guest manifest</li>\
<li><a href=\"/enclave/manifest\">/enclave/manifest</a>: the guests deployed here, with their code hashes</li>\
<li><a href=\"/enclave/config\">/enclave/config</a>: effective configuration</li>\
<li>/enclave/metrics: per-guest metrics, for the operator (admin token)</li>\
</ul></body></html>"
    )
}

/// This process's resident set size, from /proc (Linux only).
fn resident_memory() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}
