//! The served certificate swapped while serving, through the real server
//! on loopback: new connections get the new one, a connection opened
//! before keeps working, and documents bind the new one from then on.

mod common;

use nacre_runtime::tls;
use nacre_runtime::{Runtime, Settings};
use nacre_transport::Address;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

/// A client with a connection pool of its own, taking any certificate
/// (the test compares them itself).
fn client(port: u16) -> reqwest::Client {
    reqwest::Client::builder()
        .use_rustls_tls()
        .danger_accept_invalid_certs(true)
        .tls_info(true)
        .http1_only()
        .resolve("localhost", ([127, 0, 0, 1], port).into())
        .build()
        .expect("client")
}

/// GET `path`; the certificate of the connection that answered, and the
/// body.
async fn get(client: &reqwest::Client, port: u16, path: &str) -> ([u8; 32], String) {
    let r = client
        .get(format!("https://localhost:{port}{path}"))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 200);
    let cert = r
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|t| t.peer_certificate())
        .map(|der| Sha256::digest(der).into())
        .expect("a peer certificate");
    (cert, r.text().await.expect("body"))
}

fn config_hash(body: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(body).expect("json");
    v["tls_certificate_sha256"]
        .as_str()
        .expect("hash")
        .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_certificate_swapped_while_serving() {
    // Assembled as `nacre-runtime` assembles itself, from its flags.
    let dev_root = common::temp_dir("devroot");
    let settings = Settings::from_args([
        "nacre-runtime".to_string(),
        "--listen=tcp://127.0.0.1:0".into(),
        "--fqdn=localhost".into(),
        "--attestation=dev".into(),
        format!("--dev-root={}", dev_root.display()),
        "--guest-memory-total=1GiB".into(),
    ])
    .expect("settings");
    let runtime = Runtime::build(settings, None).await.expect("runtime");
    let port = match &runtime.bound().public {
        Address::Tcp { port, .. } => *port,
        other => panic!("{other}"),
    };
    let identity = runtime.identity().clone();
    let stop = CancellationToken::new();
    let serving = tokio::spawn(runtime.serve(stop.clone()));

    let before = client(port);
    let (old_cert, body) = get(&before, port, "/enclave/config").await;
    assert_eq!(config_hash(&body), hex::encode(old_cert));

    let (chain, key) = tls::self_signed_pair("localhost").expect("pair");
    let new_sha: [u8; 32] = Sha256::digest(&chain[0]).into();
    identity.replace(chain, key, "replaced").expect("replace");

    // The connection opened before keeps its certificate and keeps
    // working; what it is told is the enclave's certificate now.
    let (cert, body) = get(&before, port, "/enclave/config").await;
    assert_eq!(cert, old_cert, "the open connection kept its certificate");
    assert_eq!(config_hash(&body), hex::encode(new_sha));

    // A new connection gets the new one, and a fresh document binds it.
    let after = client(port);
    let nonce = [9u8; 20];
    let path = format!("/enclave/attestation?nonce={}", hex::encode(nonce));
    let (cert, body) = get(&after, port, &path).await;
    assert_eq!(cert, new_sha);
    let root = std::fs::read(dev_root.join("root.pem")).expect("root");
    let binding = common::binding(&root, &nonce, body.as_bytes());
    assert_eq!(binding.tls_cert_sha256, new_sha);

    stop.cancel();
    serving
        .await
        .expect("the serving task")
        .expect("served until stopped");
}
