//! `/enclave/attestation` against a dev runtime: the document verifies with
//! the dev root and binds this connection's certificate and the manifest;
//! guests' documents name the code that asked.

use base64::Engine as _;
use nacre_attestation::{RuntimeBinding, Verifier};
use nacre_tests::{Runtime, guest, peer_certificate};
use sha2::{Digest, Sha256, Sha384};

#[tokio::test(flavor = "multi_thread")]
async fn runtime_document_binds_certificate_and_manifest() {
    let rt = Runtime::in_process(&[]);
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
    let exe = std::fs::read(rt.executable()).unwrap();
    assert_eq!(v.document.pcrs[&0], Sha384::digest(&exe).to_vec());
    assert_eq!(v.document.pcrs[&1], vec![0u8; 48]);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_nonces_get_400_with_a_reason() {
    let rt = Runtime::in_process(&[]);
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
    let err = Runtime::try_in_process(&["--attestation".into(), "nsm".into()])
        .err()
        .expect("must not start");
    assert!(
        err.contains("/dev/nsm") && err.contains("--attestation dev"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn guests_get_documents_stamped_with_their_own_code_hash() {
    use nacre_attestation::GuestBinding;
    let rt = Runtime::in_process(&[]);
    let wasm = guest("attest-guest");
    let sha: [u8; 32] = Sha256::digest(std::fs::read(&wasm).unwrap()).into();
    rt.deploy_ok("ag", &wasm, "").await;
    assert_eq!(rt.get("/ag/hash").await, (200, hex::encode(sha)));

    let nonce = [0xabu8; 20];
    for path in ["/ag/attest", "/ag/spoof"] {
        let (status, body) = rt.get(&format!("{path}?{}", hex::encode(nonce))).await;
        assert_eq!(status, 200, "{path}: {body}");
        let doc = hex::decode(body.trim()).unwrap();
        let binding = rt.guest_binding(&doc, &nonce);
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
