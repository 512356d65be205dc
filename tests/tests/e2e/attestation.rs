//! `/enclave/attestation` against a dev runtime: the document verifies with
//! the dev root and binds this connection's certificate and the manifest.

use std::sync::Arc;

use base64::Engine as _;
use nacre_attestation::{RuntimeBinding, Verifier};
use nacre_tests::net::TlsRelay;
use nacre_tests::{Runtime, TOKEN, bin, guest, nacre, peer_certificate};
use sha2::{Digest, Sha256, Sha384};

#[tokio::test(flavor = "multi_thread")]
async fn runtime_document_binds_certificate_and_manifest() {
    let rt = Runtime::start(&[]);
    rt.deploy_ok("hello", &guest("hello"), "").await;
    let nonce = "00112233445566778899aabbccddeeff00112233";
    let r = rt
        .client()
        .get(format!("{}/enclave/attestation?nonce={nonce}", rt.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let cert = peer_certificate(&r);
    let doc = base64::engine::general_purpose::STANDARD
        .decode(r.text().await.unwrap())
        .unwrap();

    let root = std::fs::read(rt.dev_root.join("root.pem")).unwrap();
    assert!(
        Verifier::aws().verify(&doc).is_err(),
        "a dev document never passes as Nitro"
    );
    let v = Verifier::with_root_pem(&root)
        .unwrap()
        .nonce(hex::decode(nonce).unwrap())
        .verify(&doc)
        .unwrap();
    assert!(v.dev);
    let binding = RuntimeBinding::from_bytes(v.document.user_data.as_deref().unwrap()).unwrap();
    assert_eq!(
        binding.tls_cert_sha256,
        <[u8; 32]>::from(Sha256::digest(&cert))
    );
    let (_, manifest) = rt.get("/enclave/manifest").await;
    assert_eq!(
        binding.manifest_sha256,
        <[u8; 32]>::from(Sha256::digest(manifest.as_bytes()))
    );
    // PCR0 measures the runtime executable; the others are zero.
    let exe = std::fs::read(bin("nacre-runtime")).unwrap();
    assert_eq!(v.document.pcrs[&0], Sha384::digest(&exe).to_vec());
    assert_eq!(v.document.pcrs[&1], vec![0u8; 48]);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_nonces_get_400_with_a_reason() {
    let rt = Runtime::start(&[]);
    for (query, needle) in [
        ("", "missing ?nonce"),
        ("?nonce=abc", "40 hex digits"),
        ("?nonce=zz112233445566778899aabbccddeeff00112233", "non-hex"),
        (
            "?nonce=00112233445566778899aabbccddeeff0011223344",
            "40 hex digits",
        ),
    ] {
        let (status, body) = rt.get(&format!("/enclave/attestation{query}")).await;
        assert_eq!(status, 400, "{query}");
        assert!(body.contains(needle), "{query}: {body}");
    }
}

#[test]
fn nsm_mode_outside_an_enclave_fails_at_start_with_the_fix() {
    let err = Runtime::try_start(&["--attestation".into(), "nsm".into()])
        .err()
        .expect("must not start");
    assert!(
        err.contains("/dev/nsm") && err.contains("--attestation dev"),
        "{err}"
    );
}

fn server_config(resolver: Arc<dyn rustls::server::ResolvesServerCert>) -> rustls::ServerConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    // The relay's upstream offers no ALPN, so it speaks HTTP/1.1 there.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config
}

/// Presents one certificate chain with one key, whether or not they match.
#[derive(Debug)]
struct Present(Arc<rustls::sign::CertifiedKey>);

impl rustls::server::ResolvesServerCert for Present {
    fn resolve(
        &self,
        _hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// `chain` served with `key` (PKCS#8 DER), whether or not they match.
fn present(
    chain: Vec<rustls_pki_types::CertificateDer<'static>>,
    key: &rcgen::KeyPair,
) -> Arc<Present> {
    let key = rustls::crypto::ring::default_provider()
        .key_provider
        .load_private_key(rustls_pki_types::PrivateKeyDer::Pkcs8(
            key.serialize_der().into(),
        ))
        .unwrap();
    Arc::new(Present(Arc::new(rustls::sign::CertifiedKey::new(
        chain, key,
    ))))
}

#[tokio::test(flavor = "multi_thread")]
async fn nacre_attest_checks_document_connection_and_guests() {
    let rt = Runtime::start(&[]);
    let wasm = guest("hello");
    rt.deploy_ok("hello", &wasm, "").await;
    let sha = nacre_tests::sha256_hex(&std::fs::read(&wasm).unwrap());
    let root = rt.dev_root.join("root.pem").display().to_string();
    let url = rt.url();
    let pcr0 = hex::encode(Sha384::digest(std::fs::read(bin("nacre-runtime")).unwrap()));

    let guest_ok = format!("hello={sha}");
    let pcr_ok = format!("0={pcr0}");
    let (ok, out, err) = nacre(&[
        "attest", &url, "--root", &root, "--guest", &guest_ok, "--pcr", &pcr_ok,
    ]);
    assert!(ok, "{err}");
    let summary: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(summary["kind"], "dev");
    assert_eq!(summary["manifest"]["guests"][0]["sha256"], sha.as_str());

    let wrong = format!("hello={}", "0".repeat(64));
    let cases: [(Vec<&str>, &str); 4] = [
        (vec!["--root", &root, "--guest", &wrong], "guest mismatch"),
        (
            vec!["--root", &root, "--guest", "absent=aa"],
            "64 hex digits",
        ),
        (vec!["--root", &root, "--pcr", "0=00"], "PCR0 mismatch"),
        (vec![], "chain untrusted"),
    ];
    for (extra, needle) in cases {
        let mut a = vec!["attest", url.as_str()];
        a.extend(extra);
        let (ok, _, err) = nacre(&a);
        assert!(!ok && err.contains(needle), "{a:?}: {err}");
    }

    // Through a relay that terminates TLS with another certificate, the
    // document still verifies but is not about this connection.
    let own = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let presented = present(vec![own.cert.der().clone()], &own.signing_key);
    let relay = TlsRelay::start(rt.addr, rt.roots(), server_config(presented)).await;
    let relay_url = format!("https://localhost:{}", relay.addr.port());
    let (ok, _, err) = nacre(&["attest", &relay_url, "--root", &root]);
    assert!(!ok, "attest passed through a TLS-terminating relay");
    assert!(
        err.contains("binding mismatch") && err.contains("terminates TLS"),
        "{err}"
    );
}

/// A relay that shows the enclave's real certificate but holds another
/// key: the attested hash matches, only the handshake signature gives it
/// away, and every client path checks it.
#[tokio::test(flavor = "multi_thread")]
async fn a_relay_replaying_the_certificate_without_its_key_is_caught_by_the_handshake() {
    let rt = Runtime::start(&[]);
    rt.deploy_ok("hello", &guest("hello"), "").await;
    let root = rt.dev_root.join("root.pem").display().to_string();
    let chain =
        nacre_transport::pem::certificates(&rt.ca_file().unwrap().with_file_name("cert.pem"))
            .unwrap();
    let own_key = rcgen::KeyPair::generate().unwrap();
    let relay = TlsRelay::start(rt.addr, rt.roots(), server_config(present(chain, &own_key))).await;
    let url = format!("https://localhost:{}", relay.addr.port());

    let (ok, out, err) = nacre(&["attest", &url, "--root", &root]);
    assert!(!ok, "attest passed a key-replay relay: {out}");
    assert!(err.contains("handshake"), "{err}");

    let wasm = guest("hello").display().to_string();
    let ca = rt.ca_file().unwrap().display().to_string();
    let pins = rt.attest_args();
    let mut attested = vec!["--root", ca.as_str()];
    attested.extend(pins.iter().map(String::as_str));
    for trust in [attested.clone(), vec!["--insecure"]] {
        let mut args = vec!["guests", url.as_str(), "--token", TOKEN];
        args.extend(&trust);
        let (ok, _, err) = nacre(&args);
        assert!(!ok && err.contains("handshake"), "{args:?}: {err}");
        let mut args = vec!["deploy", url.as_str(), "x", wasm.as_str(), "--token", TOKEN];
        args.extend(&trust);
        let (ok, _, err) = nacre(&args);
        assert!(!ok && err.contains("handshake"), "{args:?}: {err}");
    }
    // The same commands straight to the runtime pass.
    let (ok, _, err) = nacre(&["attest", &rt.url(), "--root", &root]);
    assert!(ok, "{err}");
    let rt_url = rt.url();
    let mut args = vec!["guests", rt_url.as_str(), "--token", TOKEN];
    args.extend(&attested);
    let (ok, _, err) = nacre(&args);
    assert!(ok, "{err}");
}

/// Without --pcr 0=... any image the root signed passes: attest says so
/// and names the value to pin.
#[tokio::test(flavor = "multi_thread")]
async fn attest_without_an_image_pin_warns_with_the_pcr0_to_pin() {
    let rt = Runtime::start(&[]);
    let root = rt.dev_root.join("root.pem").display().to_string();
    let pcr0 = hex::encode(Sha384::digest(std::fs::read(bin("nacre-runtime")).unwrap()));
    let (ok, _, err) = nacre(&["attest", &rt.url(), "--root", &root]);
    assert!(ok, "{err}");
    assert!(err.contains("no enclave image pinned"), "{err}");
    assert!(err.contains(&format!("--pcr 0={pcr0}")), "{err}");
    let pin = format!("0={pcr0}");
    let (ok, _, err) = nacre(&["attest", &rt.url(), "--root", &root, "--pcr", &pin]);
    assert!(ok, "{err}");
    assert!(!err.contains("warning"), "{err}");
}

/// A guest deployed under another's route serves part of its paths: a
/// check of the outer guest alone must not pass.
#[tokio::test(flavor = "multi_thread")]
async fn attest_fails_when_another_guest_serves_paths_under_an_expected_route() {
    let rt = Runtime::start(&[]);
    let (hello, echo) = (guest("hello"), guest("echo"));
    rt.deploy_ok("app", &hello, "route=/app").await;
    rt.deploy_ok("login", &echo, "route=/app/login").await;
    rt.deploy_ok("apple", &echo, "route=/apple").await;
    assert!(rt.get("/app/login/x").await.1.contains("\"path\":\"/x\""));
    let app = format!(
        "app={}",
        nacre_tests::sha256_hex(&std::fs::read(&hello).unwrap())
    );
    let login = format!(
        "login={}",
        nacre_tests::sha256_hex(&std::fs::read(&echo).unwrap())
    );
    let root = rt.dev_root.join("root.pem").display().to_string();
    let url = rt.url();

    let (ok, _, err) = nacre(&["attest", &url, "--root", &root, "--guest", &app]);
    assert!(!ok, "attest passed with /app/login served by other code");
    assert!(
        err.contains("guest mismatch") && err.contains("guest login") && err.contains("/app/login"),
        "{err}"
    );
    // Vouching for the inner guest too is fine; /apple is not under /app.
    let (ok, _, err) = nacre(&[
        "attest", &url, "--root", &root, "--guest", &app, "--guest", &login,
    ]);
    assert!(ok, "{err}");
    let wrong = format!("login={}", "0".repeat(64));
    let (ok, _, err) = nacre(&[
        "attest", &url, "--root", &root, "--guest", &app, "--guest", &wrong,
    ]);
    assert!(!ok && err.contains("guest mismatch"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn guests_get_documents_stamped_with_their_own_code_hash() {
    use nacre_attestation::GuestBinding;
    let rt = Runtime::start(&[]);
    let wasm = guest("attest-guest");
    let sha: [u8; 32] = Sha256::digest(std::fs::read(&wasm).unwrap()).into();
    rt.deploy_ok("ag", &wasm, "").await;
    assert_eq!(rt.get("/ag/hash").await, (200, hex::encode(sha)));

    let root = std::fs::read(rt.dev_root.join("root.pem")).unwrap();
    let nonce = [0xabu8; 20];
    for path in ["/ag/attest", "/ag/spoof"] {
        let (status, body) = rt.get(&format!("{path}?{}", hex::encode(nonce))).await;
        assert_eq!(status, 200, "{path}: {body}");
        let doc = hex::decode(body.trim()).unwrap();
        let v = Verifier::with_root_pem(&root)
            .unwrap()
            .nonce(nonce.to_vec())
            .verify(&doc)
            .unwrap();
        let binding = GuestBinding::from_bytes(v.document.user_data.as_deref().unwrap()).unwrap();
        // Whatever the guest put in its user data, the runtime names the
        // code that asked.
        assert_eq!(binding.guest_sha256, sha, "{path}");
        match path {
            "/ag/attest" => assert_eq!(binding.data.as_deref(), Some(&b"guest-data"[..])),
            _ => {
                let inner = GuestBinding::from_bytes(binding.data.as_deref().unwrap()).unwrap();
                assert_eq!(
                    inner.guest_sha256, [0u8; 32],
                    "the spoof is only opaque data inside"
                );
            }
        }
    }
}
