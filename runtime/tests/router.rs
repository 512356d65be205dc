//! The router in process, without a socket, the way axum's tests call
//! `app().oneshot(request)`: every `/enclave` route and guest routing,
//! against a real guest table, attester and certificate.

mod common;

use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use nacre_api::{ErrorBody, GuestInfo, Manifest};
use nacre_runtime::guests::Registry;
use nacre_runtime::http::ResponseBody;
use nacre_runtime::router::{Admin, Endpoints, Guests, Router};
use nacre_runtime::sync::Role;
use nacre_runtime::tls::Identity;
use sha2::{Digest, Sha256};

const TOKEN: &str = "router-test-token";

struct Fixture {
    router: Router,
    registry: Arc<Registry>,
    identity: Arc<Identity>,
    root_pem: Vec<u8>,
}

fn fixture(admin: bool) -> Fixture {
    fixture_as(admin, common::alone())
}

fn fixture_as(admin: bool, role: tokio::sync::watch::Receiver<Role>) -> Fixture {
    let (attester, dev_root) = common::attester();
    let registry = common::registry(attester.clone());
    let identity = Identity::self_signed("localhost").expect("identity");
    let token = admin.then(|| Sha256::digest(TOKEN).into());
    let router = Router::new(
        Endpoints::new(
            identity.clone(),
            registry.clone(),
            attester,
            serde_json::json!({ "fqdn": "localhost" }),
            None,
            role.clone(),
        ),
        Admin::new(token, 1 << 20, registry.clone(), role),
        Guests::new(registry.clone(), std::time::Duration::from_secs(10)),
    );
    Fixture {
        router,
        registry,
        identity,
        root_pem: std::fs::read(dev_root.join("root.pem")).expect("dev root"),
    }
}

fn request(method: &str, path: &str, token: Option<&str>, body: Bytes) -> Request<Full<Bytes>> {
    let mut r = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost");
    if let Some(t) = token {
        r = r.header("authorization", format!("Bearer {t}"));
    }
    r.body(Full::new(body)).expect("request")
}

async fn call(router: &Router, req: Request<Full<Bytes>>) -> (Response<()>, Bytes) {
    let (parts, body) = router.answer(req).await.into_parts();
    let body: ResponseBody = body;
    let bytes = body.collect().await.expect("body").to_bytes();
    (Response::from_parts(parts, ()), bytes)
}

async fn get(router: &Router, path: &str) -> (StatusCode, Bytes) {
    let (r, b) = call(router, request("GET", path, None, Bytes::new())).await;
    (r.status(), b)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_runtime_endpoints_answer_in_process() {
    let f = fixture(true);
    let (status, body) = get(&f.router, "/enclave").await;
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&body).contains("runs in an enclave"));

    let (status, body) = get(&f.router, "/enclave/manifest").await;
    assert_eq!(status, 200);
    assert_eq!(body.as_ref(), br#"{"version":1,"guests":[]}"#);

    let (status, body) = get(&f.router, "/enclave/config").await;
    assert_eq!(status, 200);
    let config: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(config["fqdn"], "localhost");
    assert_eq!(config["tls_certificate"], "self-signed");
    assert_eq!(
        config["tls_certificate_sha256"],
        hex::encode(f.identity.leaf_sha256())
    );

    let (r, body) = call(
        &f.router,
        request("POST", "/enclave/config", None, Bytes::new()),
    )
    .await;
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.headers()["allow"], "GET, HEAD");
    assert!(ErrorBody::message(&body).is_some());

    // --debug is off.
    assert_eq!(get(&f.router, "/enclave/debug").await.0, 404);
    assert_eq!(get(&f.router, "/enclave/nothing").await.0, 404);

    let (status, body) = get(&f.router, "/enclave/attestation?nonce=abc").await;
    assert_eq!(status, 400);
    assert!(
        ErrorBody::message(&body)
            .unwrap_or_default()
            .contains("40 hex digits")
    );

    let nonce = [7u8; 20];
    let path = format!("/enclave/attestation?nonce={}", hex::encode(nonce));
    let (status, body) = get(&f.router, &path).await;
    assert_eq!(status, 200);
    let binding = common::binding(&f.root_pem, &nonce, &body);
    assert_eq!(binding.tls_cert_sha256, f.identity.leaf_sha256());
    assert_eq!(
        binding.manifest_sha256,
        f.registry.snapshot().manifest_sha256()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_admin_api_and_guest_routing_answer_in_process() {
    let (hello, _) = common::components();
    let f = fixture(true);
    let guests = "/enclave/guests";
    let (r, _) = call(&f.router, request("GET", guests, None, Bytes::new())).await;
    assert_eq!(r.status(), 401);
    assert!(r.headers().contains_key("www-authenticate"));
    let (r, body) = call(&f.router, request("GET", guests, Some(TOKEN), Bytes::new())).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        serde_json::from_slice::<Vec<GuestInfo>>(&body).expect("list"),
        vec![]
    );

    let put = request("PUT", "/enclave/guests/hello", Some(TOKEN), hello.clone());
    let (r, body) = call(&f.router, put).await;
    assert_eq!(r.status(), 201);
    let info: GuestInfo = serde_json::from_slice(&body).expect("guest info");
    assert_eq!(info.sha256, hex::encode(Sha256::digest(&hello)));
    assert_eq!((info.route.as_str(), info.size), ("/hello", hello.len()));

    let (status, body) = get(&f.router, "/hello/world").await;
    assert_eq!(status, 200);
    assert_eq!(body.as_ref(), b"Hello, world, from a Nacre enclave!\n");
    let (status, body) = get(&f.router, "/nothing/here").await;
    assert_eq!(status, 404);
    assert_eq!(
        ErrorBody::message(&body).as_deref(),
        Some("no guest serves /nothing/here")
    );
    let (_, manifest) = get(&f.router, "/enclave/manifest").await;
    let manifest = Manifest::from_slice(&manifest).expect("manifest");
    assert_eq!(
        manifest.guest("hello").map(|g| g.sha256.clone()),
        Some(info.sha256)
    );

    // The per-guest figures are the operator's: the admin token, as for
    // the admin API (401 without it or with another), then Prometheus text.
    let metrics = "/enclave/metrics";
    for token in [None, Some("not-the-token")] {
        let (r, _) = call(&f.router, request("GET", metrics, token, Bytes::new())).await;
        assert_eq!(r.status(), 401, "{token:?}");
        assert!(r.headers().contains_key("www-authenticate"));
    }
    let (r, body) = call(
        &f.router,
        request("GET", metrics, Some(TOKEN), Bytes::new()),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap_or("")
            .starts_with("text/plain")
    );
    let text = String::from_utf8_lossy(&body);
    assert!(
        text.contains("nacre_guest_requests_total{guest=\"hello\"} 1"),
        "{text}"
    );
    assert!(text.contains("nacre_guest_responses_total{guest=\"hello\",class=\"2xx\"} 1"));
    let mut om = request("GET", metrics, Some(TOKEN), Bytes::new());
    om.headers_mut().insert(
        "accept",
        http::HeaderValue::from_static("application/openmetrics-text; version=1.0.0"),
    );
    let (r, body) = call(&f.router, om).await;
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap_or("")
            .starts_with("application/openmetrics-text")
    );
    assert!(body.ends_with(b"# EOF\n"));
    let (r, _) = call(
        &f.router,
        request("POST", metrics, Some(TOKEN), Bytes::new()),
    )
    .await;
    assert_eq!(r.status(), 405);

    // A request that names no host is refused as such, not failed.
    let mut bare = request("GET", "/hello/world", None, Bytes::new());
    bare.headers_mut().remove("host");
    let (r, body) = call(&f.router, bare).await;
    assert_eq!(r.status(), 400);
    assert!(
        ErrorBody::message(&body)
            .unwrap_or_default()
            .contains("Host header")
    );

    // A worker of a deployment takes no writes: they happen on the leader.
    let (_role, worker) = tokio::sync::watch::channel(Role::Worker {
        leader: "leader.internal:444".into(),
    });
    let w = fixture_as(true, worker);
    let put = request("PUT", "/enclave/guests/hello", Some(TOKEN), hello.clone());
    let (r, body) = call(&w.router, put).await;
    assert_eq!(r.status(), 409);
    assert!(
        ErrorBody::message(&body)
            .unwrap_or_default()
            .contains("leader.internal:444")
    );
    let (_, body) = get(&w.router, "/enclave/config").await;
    let config: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(config["sync"]["role"], "worker");
    assert_eq!(config["sync"]["leader"], "leader.internal:444");

    // Without --admin-token-sha256 the admin API is closed.
    let closed = fixture(false);
    let (r, body) = call(
        &closed.router,
        request("GET", guests, Some(TOKEN), Bytes::new()),
    )
    .await;
    assert_eq!(r.status(), 403);
    assert!(
        ErrorBody::message(&body)
            .unwrap_or_default()
            .contains("--admin-token-sha256")
    );
    let (r, _) = call(
        &closed.router,
        request("GET", "/enclave/metrics", Some(TOKEN), Bytes::new()),
    )
    .await;
    assert_eq!(r.status(), 403);
}
