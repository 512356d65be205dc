//! `/enclave/attestation` against a dev runtime: the document verifies with
//! the dev root and binds this connection's certificate and the manifest.

use base64::Engine as _;
use nacre_attestation::{RuntimeBinding, Verifier};
use nacre_tests::{Runtime, bin, guest};
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
    let cert = r
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|t| t.peer_certificate())
        .unwrap()
        .to_vec();
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
