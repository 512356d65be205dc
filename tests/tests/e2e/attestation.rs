//! `nacre attest` against a dev runtime: it checks the document, this
//! connection's certificate, the image and the guests, and a relay in
//! between is caught. (The endpoint itself, in process: app/attestation.rs.)

use std::sync::Arc;

use nacre_tests::net::TlsRelay;
use nacre_tests::{Runtime, TOKEN, bin, guest, nacre};
use sha2::{Digest, Sha384};

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

/// A client pins the image with the file the build printed
/// (`nacre image build` and `nitro-cli describe-eif` write the same JSON):
/// the enclave's own PCR0 passes without a warning; a file naming another
/// PCR0 fails; a file naming no PCR, or one that disagrees with `--pcr`,
/// is refused before anything is fetched, naming the file.
#[tokio::test(flavor = "multi_thread")]
async fn attest_pins_the_image_with_the_builds_pcr_file() {
    let rt = Runtime::start(&[]);
    let root = rt.dev_root.join("root.pem").display().to_string();
    let pcr0 = hex::encode(Sha384::digest(std::fs::read(bin("nacre-runtime")).unwrap()));
    let dir = nacre_tests::temp_dir("attest-pcrs");
    let write = |name: &str, measurements: serde_json::Value| {
        let path = dir.join(name);
        let json = serde_json::json!({"Measurements": measurements});
        std::fs::write(&path, json.to_string()).unwrap();
        path.display().to_string()
    };
    let ours = write(
        "ours.json",
        serde_json::json!({"HashAlgorithm": "Sha384 { ... }", "PCR0": pcr0}),
    );
    let (ok, out, err) = nacre(&["attest", &rt.url(), "--root", &root, "--pcrs", &ours]);
    assert!(ok, "{err}");
    assert!(out.contains("\"verified\": true"), "{out}");
    assert!(!err.contains("warning"), "{err}");

    let other = write("other.json", serde_json::json!({"PCR0": "ab".repeat(48)}));
    let (ok, _, err) = nacre(&["attest", &rt.url(), "--root", &root, "--pcrs", &other]);
    assert!(!ok);
    assert!(err.contains("PCR0 mismatch"), "{err}");

    let none = write(
        "none.json",
        serde_json::json!({"HashAlgorithm": "Sha384 { ... }"}),
    );
    let (ok, _, err) = nacre(&["attest", &rt.url(), "--root", &root, "--pcrs", &none]);
    assert!(!ok);
    assert!(
        err.contains("none.json") && err.contains("no PCRs found"),
        "{err}"
    );

    let both = format!("0={}", "cd".repeat(48));
    let (ok, _, err) = nacre(&[
        "attest",
        &rt.url(),
        "--root",
        &root,
        "--pcrs",
        &ours,
        "--pcr",
        &both,
    ]);
    assert!(!ok);
    assert!(err.contains("disagrees with PCR0"), "{err}");
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
