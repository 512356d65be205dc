//! The runtime's own public endpoints under `/enclave` (SPEC §3.1).

use std::sync::atomic::Ordering;

use base64::Engine as _;
use nacre_attestation::{DocumentRequest, RuntimeBinding};

use http::{Method, Request, Response, StatusCode};

use crate::app::App;
use crate::guests::GuestBody;
use crate::http::{error, json, with_type};

/// Answers `/enclave`, `/enclave/config`, `/enclave/debug`,
/// `/enclave/manifest` and `/enclave/attestation`.
pub fn handle<B>(app: &App, req: &Request<B>, path: &str) -> Response<GuestBody> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = error(
            StatusCode::METHOD_NOT_ALLOWED,
            &format!("{path} answers GET only"),
        );
        r.headers_mut().insert(
            http::header::ALLOW,
            http::HeaderValue::from_static("GET, HEAD"),
        );
        return r;
    }
    match path.trim_end_matches('/') {
        "/enclave" => with_type(StatusCode::OK, "text/html; charset=utf-8", index()),
        "/enclave/config" => json(StatusCode::OK, &config(app)),
        "/enclave/manifest" => with_type(
            StatusCode::OK,
            "application/json",
            app.registry.snapshot().manifest().clone(),
        ),
        "/enclave/debug" if app.config.debug => json(StatusCode::OK, &debug(app)),
        _ => error(
            StatusCode::NOT_FOUND,
            &format!("{path} is not an endpoint of this runtime"),
        ),
    }
}

/// `GET /enclave/attestation?nonce=HEX`: a document binding this TLS
/// certificate and the current manifest, Base64 (SPEC §3.1, §5).
pub async fn attestation<B>(app: &App, req: &Request<B>) -> Response<GuestBody> {
    if req.method() != Method::GET {
        let mut r = error(
            StatusCode::METHOD_NOT_ALLOWED,
            "/enclave/attestation answers GET only",
        );
        r.headers_mut()
            .insert(http::header::ALLOW, http::HeaderValue::from_static("GET"));
        return r;
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
    let binding = RuntimeBinding {
        tls_cert_sha256: app.tls.leaf_sha256,
        manifest_sha256: app.registry.snapshot().manifest_sha256(),
    };
    let request = DocumentRequest {
        nonce: Some(nonce.to_vec()),
        user_data: Some(binding.to_bytes()),
        ..DocumentRequest::default()
    };
    let Ok(slot) = app.documents.clone().try_acquire_owned() else {
        let mut r = error(
            StatusCode::SERVICE_UNAVAILABLE,
            "attestation documents are being made for other clients; retry shortly",
        );
        r.headers_mut().insert(
            http::header::RETRY_AFTER,
            http::HeaderValue::from_static("1"),
        );
        return r;
    };
    let attester = app.attester.clone();
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
</ul></body></html>"
    )
}

fn config(app: &App) -> serde_json::Value {
    let mut v = serde_json::to_value(&app.config).unwrap_or_default();
    if let Some(obj) = v.as_object_mut() {
        obj.insert("version".into(), env!("CARGO_PKG_VERSION").into());
        obj.insert("tls_certificate".into(), app.tls.source.into());
        obj.insert(
            "tls_certificate_sha256".into(),
            hex::encode(app.tls.leaf_sha256).into(),
        );
        obj.insert(
            "guests".into(),
            app.registry
                .snapshot()
                .guests()
                .map(|g| g.config.name.to_string())
                .collect(),
        );
    }
    v
}

fn debug(app: &App) -> serde_json::Value {
    let snap = app.registry.snapshot();
    let guests: serde_json::Map<String, serde_json::Value> = snap
        .guests()
        .map(|g| {
            (
                g.config.name.to_string(),
                serde_json::to_value(&g.stats).unwrap_or_default(),
            )
        })
        .collect();
    serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": app.started.elapsed().as_secs_f64(),
        "requests": app.requests.load(Ordering::Relaxed),
        "connections": app.conns,
        "resident_memory_bytes": resident_memory(),
        "compiled_components_cached": app.registry.cached_components(),
        "guests": guests,
    })
}

/// This process's resident set size, from /proc (Linux only).
fn resident_memory() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}
