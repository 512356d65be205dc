//! The router as clients reach it, over real TLS to the library's runtime
//! in this process: every `/enclave` route and guest routing, against a
//! real guest table, attester and certificate.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use nacre_api::{ErrorBody, GuestInfo, Manifest};
use nacre_tests::fleet::within;
use nacre_tests::{Runtime, TOKEN, TestPki, guest, peer_certificate, sha256_hex};
use nacre_transport::tunnel::{self, Status};
use sha2::{Digest, Sha256};

/// A runtime with its own (self-signed) certificate and, with `admin`,
/// the test admin token.
fn runtime(admin: bool) -> Runtime {
    let mut args: Vec<String> = Vec::new();
    if admin {
        args.extend(["--admin-token-sha256".into(), sha256_hex(TOKEN.as_bytes())]);
    }
    Runtime::in_process_raw(&args)
}

/// The runtime binding of a Base64 document from `/enclave/attestation`,
/// once it verifies against the dev root `root_pem` with `nonce`.
fn binding(root_pem: &[u8], nonce: &[u8], base64: &[u8]) -> nacre_attestation::RuntimeBinding {
    use base64::Engine as _;
    let doc = base64::engine::general_purpose::STANDARD
        .decode(base64.trim_ascii())
        .expect("base64");
    let verified = nacre_attestation::Verifier::with_root_pem(root_pem)
        .expect("root")
        .nonce(nonce.to_vec())
        .verify(&doc)
        .expect("verifies");
    nacre_attestation::RuntimeBinding::from_bytes(
        verified.document.user_data.as_deref().expect("user data"),
    )
    .expect("runtime layout")
}

/// `method path` with the admin token `token`, if any: the answer and its
/// whole body.
async fn call(
    rt: &Runtime,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Bytes,
) -> (reqwest::Response, Bytes) {
    call_with(rt, method, path, token, body, &[]).await
}

/// Like [`call`], with more request headers.
async fn call_with(
    rt: &Runtime,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Bytes,
    headers: &[(&str, &str)],
) -> (reqwest::Response, Bytes) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut r = rt
        .client()
        .request(method, format!("{}{path}", rt.url()))
        .body(body);
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    for (name, value) in headers {
        r = r.header(*name, *value);
    }
    let mut response = r.send().await.expect("an answer");
    // The body is read, the head kept for the test to look at.
    let mut bytes = Vec::new();
    while let Some(chunk) = response.chunk().await.expect("the body") {
        bytes.extend_from_slice(&chunk);
    }
    (response, Bytes::from(bytes))
}

async fn get(rt: &Runtime, path: &str) -> (u16, Bytes) {
    let (r, b) = call(rt, "GET", path, None, Bytes::new()).await;
    (r.status().as_u16(), b)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_runtime_endpoints_answer_in_process() {
    let rt = runtime(true);
    let (status, body) = get(&rt, "/enclave").await;
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&body).contains("runs in an enclave"));

    let (status, body) = get(&rt, "/enclave/manifest").await;
    assert_eq!(status, 200);
    assert_eq!(body.as_ref(), br#"{"version":1,"guests":[]}"#);

    let (r, body) = call(&rt, "GET", "/enclave/config", None, Bytes::new()).await;
    assert_eq!(r.status(), 200);
    // The certificate this very connection was served.
    let leaf_sha256: [u8; 32] = Sha256::digest(peer_certificate(&r)).into();
    let config: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(config["fqdn"], "localhost");
    assert_eq!(config["tls_certificate"], "self-signed");
    assert_eq!(config["tls_certificate_sha256"], hex::encode(leaf_sha256));

    let (r, body) = call(&rt, "POST", "/enclave/config", None, Bytes::new()).await;
    assert_eq!(r.status(), reqwest::StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.headers()["allow"], "GET, HEAD");
    assert!(ErrorBody::message(&body).is_some());

    // --debug is off.
    assert_eq!(get(&rt, "/enclave/debug").await.0, 404);
    assert_eq!(get(&rt, "/enclave/nothing").await.0, 404);

    let (status, body) = get(&rt, "/enclave/attestation?nonce=abc").await;
    assert_eq!(status, 400);
    assert!(
        ErrorBody::message(&body)
            .unwrap_or_default()
            .contains("40 hex digits")
    );

    let nonce = [7u8; 20];
    let path = format!("/enclave/attestation?nonce={}", hex::encode(nonce));
    let (status, body) = get(&rt, &path).await;
    assert_eq!(status, 200);
    let root_pem = std::fs::read(rt.dev_root.join("root.pem")).expect("dev root");
    let binding = binding(&root_pem, &nonce, &body);
    assert_eq!(binding.tls_cert_sha256, leaf_sha256);
    // The manifest's SHA-256 is that of the exact bytes served.
    let (_, manifest) = get(&rt, "/enclave/manifest").await;
    assert_eq!(
        binding.manifest_sha256,
        <[u8; 32]>::from(Sha256::digest(&manifest))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_admin_api_and_guest_routing_answer_in_process() {
    let hello = Bytes::from(std::fs::read(guest("hello")).expect("component"));
    let rt = runtime(true);
    let guests = "/enclave/guests";
    let (r, _) = call(&rt, "GET", guests, None, Bytes::new()).await;
    assert_eq!(r.status(), 401);
    assert!(r.headers().contains_key("www-authenticate"));
    let (r, body) = call(&rt, "GET", guests, Some(TOKEN), Bytes::new()).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        serde_json::from_slice::<Vec<GuestInfo>>(&body).expect("list"),
        vec![]
    );

    let (r, body) = call(
        &rt,
        "PUT",
        "/enclave/guests/hello",
        Some(TOKEN),
        hello.clone(),
    )
    .await;
    assert_eq!(r.status(), 201);
    let info: GuestInfo = serde_json::from_slice(&body).expect("guest info");
    assert_eq!(info.sha256, hex::encode(Sha256::digest(&hello)));
    assert_eq!((info.route.as_str(), info.size), ("/hello", hello.len()));

    let (status, body) = get(&rt, "/hello/world").await;
    assert_eq!(status, 200);
    assert_eq!(body.as_ref(), b"Hello, world, from a Nacre enclave!\n");
    let (status, body) = get(&rt, "/nothing/here").await;
    assert_eq!(status, 404);
    assert_eq!(
        ErrorBody::message(&body).as_deref(),
        Some("no guest serves /nothing/here")
    );
    let (_, manifest) = get(&rt, "/enclave/manifest").await;
    let manifest = Manifest::from_slice(&manifest).expect("manifest");
    assert_eq!(
        manifest.guest("hello").map(|g| g.sha256.clone()),
        Some(info.sha256)
    );

    // The per-guest figures are the operator's: the admin token, as for
    // the admin API (401 without it or with another), then Prometheus text.
    let metrics = "/enclave/metrics";
    for token in [None, Some("not-the-token")] {
        let (r, _) = call(&rt, "GET", metrics, token, Bytes::new()).await;
        assert_eq!(r.status(), 401, "{token:?}");
        assert!(r.headers().contains_key("www-authenticate"));
    }
    let (r, body) = call(&rt, "GET", metrics, Some(TOKEN), Bytes::new()).await;
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
    let openmetrics = [("accept", "application/openmetrics-text; version=1.0.0")];
    let (r, body) = call_with(&rt, "GET", metrics, Some(TOKEN), Bytes::new(), &openmetrics).await;
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap_or("")
            .starts_with("application/openmetrics-text")
    );
    assert!(body.ends_with(b"# EOF\n"));
    let (r, _) = call(&rt, "POST", metrics, Some(TOKEN), Bytes::new()).await;
    assert_eq!(r.status(), 405);

    // A request that names no host is refused as such, not failed.
    let (status, body) = without_host(&rt, "/hello/world").await;
    assert_eq!(status, 400);
    assert!(
        ErrorBody::message(&body)
            .unwrap_or_default()
            .contains("Host header")
    );

    // A worker of a deployment takes no writes: they happen on the leader.
    let leader = LeaderStandIn::start().await;
    let w = leader.worker();
    within(Duration::from_secs(30), "the worker role", || async {
        let (_, body) = get(&w, "/enclave/config").await;
        serde_json::from_slice::<serde_json::Value>(&body)
            .is_ok_and(|c| c["sync"]["role"] == "worker")
    })
    .await;
    let (r, body) = call(
        &w,
        "PUT",
        "/enclave/guests/hello",
        Some(TOKEN),
        hello.clone(),
    )
    .await;
    assert_eq!(r.status(), 409);
    assert!(
        ErrorBody::message(&body)
            .unwrap_or_default()
            .contains("leader.internal:444")
    );
    let (_, body) = get(&w, "/enclave/config").await;
    let config: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(config["sync"]["role"], "worker");
    assert_eq!(config["sync"]["leader"], "leader.internal:444");

    // Without --admin-token-sha256 the admin API is closed.
    let closed = runtime(false);
    let (r, body) = call(&closed, "GET", guests, Some(TOKEN), Bytes::new()).await;
    assert_eq!(r.status(), 403);
    assert!(
        ErrorBody::message(&body)
            .unwrap_or_default()
            .contains("--admin-token-sha256")
    );
    let (r, _) = call(
        &closed,
        "GET",
        "/enclave/metrics",
        Some(TOKEN),
        Bytes::new(),
    )
    .await;
    assert_eq!(r.status(), 403);
}

/// `GET path` over HTTP/1.1 with no Host header at all (every client
/// library adds one): status and body.
async fn without_host(rt: &Runtime, path: &str) -> (u16, Bytes) {
    let tls = rt.tls(&["http/1.1"]).await;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .expect("HTTP/1.1 handshake");
    tokio::spawn(conn);
    let request = http::Request::get(path)
        .body(Empty::<Bytes>::new())
        .expect("request");
    assert!(request.headers().get("host").is_none());
    let r = sender.send_request(request).await.expect("an answer");
    let status = r.status().as_u16();
    let body = r.into_body().collect().await.expect("body").to_bytes();
    (status, body)
}

/// What a worker sees of its deployment, standing in for the host proxy
/// and the leader: a CONNECT endpoint (`--egress`) where every tunnel
/// leads to an enclave that says it leads (410 to `/enclave/leader`) and
/// takes heartbeats, and a control link whose Hello says where peers reach
/// the worker. Its listeners are bound before the runtime starts.
struct LeaderStandIn {
    egress: u16,
    control: u16,
    tasks: [tokio::task::JoinHandle<()>; 2],
}

impl LeaderStandIn {
    async fn start() -> LeaderStandIn {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let egress = listener.local_addr().expect("address").port();
        let control_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let control = control_listener.local_addr().expect("address").port();
        let hello = nacre_control::encode_frame(&nacre_control::Frame {
            body: Some(nacre_control::Body::Hello(nacre_control::Hello {
                min_version: 1,
                max_version: 1,
                software: "leader stand-in".into(),
                sync_advertise: "localhost:1".into(),
                ..Default::default()
            })),
        })
        .expect("a Hello");
        let control_task = tokio::spawn(async move {
            loop {
                let Ok((mut link, _)) = control_listener.accept().await else {
                    continue;
                };
                let hello = hello.clone();
                tokio::spawn(async move {
                    use tokio::io::AsyncWriteExt;
                    if link.write_all(&hello).await.is_ok() {
                        // The runtime's Hello and log records, unread.
                        let _ = tokio::io::copy(&mut link, &mut tokio::io::sink()).await;
                    }
                });
            }
        });
        let tls = tokio_rustls::TlsAcceptor::from(Arc::new(
            TestPki::generate().server_config(&["http/1.1"]),
        ));
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut tcp, _)) = listener.accept().await else {
                    continue;
                };
                let tls = tls.clone();
                tokio::spawn(async move {
                    if tunnel::accept(&mut tcp).await.is_err()
                        || tunnel::respond(&mut tcp, Status::Established)
                            .await
                            .is_err()
                    {
                        return;
                    }
                    let Ok(stream) = tls.accept(tcp).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(|req: hyper::Request<_>| async move {
                        let (status, body) = match req.uri().path() {
                            "/enclave/leader" => (410, r#"{"status":"this enclave leads"}"#),
                            "/enclave/heartbeat" => (200, r#"{"send_keys":false}"#),
                            _ => (404, "{}"),
                        };
                        let mut answer = hyper::Response::new(Full::new(Bytes::from(body)));
                        *answer.status_mut() = http::StatusCode::from_u16(status).expect("status");
                        Ok::<_, std::convert::Infallible>(answer)
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        LeaderStandIn {
            egress,
            control,
            tasks: [task, control_task],
        }
    }

    /// A runtime of the deployment at `leader.internal:444`, which finds
    /// this stand-in leading there.
    fn worker(&self) -> Runtime {
        let args = [
            "--admin-token-sha256".to_string(),
            sha256_hex(TOKEN.as_bytes()),
            "--fqdn-leader".into(),
            "leader.internal:444".into(),
            "--sync-listen".into(),
            "tcp://127.0.0.1:0".into(),
            "--egress".into(),
            format!("tcp://127.0.0.1:{}", self.egress),
            "--control".into(),
            format!("tcp://127.0.0.1:{}", self.control),
        ];
        Runtime::in_process_raw(&args)
    }
}

impl Drop for LeaderStandIn {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}
