//! The attested signer keeping its key in `wasi:keyvalue`, checked with
//! `nacre verify` and OpenSSL. (Counters, namespaces and quotas, in
//! process: app/keyvalue.rs.)

use nacre_tests::{Runtime, guest, nacre, sha256_hex, temp_dir};

#[tokio::test(flavor = "multi_thread")]
async fn attested_signer_key_is_bound_to_its_code_and_verifies_with_openssl() {
    let rt = Runtime::start(&[]);
    let wasm = guest("attested-signer");
    let sha = sha256_hex(&std::fs::read(&wasm).unwrap());
    rt.deploy_ok("signer", &wasm, "").await;

    let (status, pk) = rt.get("/signer/public-key").await;
    assert_eq!(status, 200);
    assert_eq!(pk.len(), 64, "{pk}");
    // The same key on every request (made once, kept in the store).
    assert_eq!(rt.get("/signer/public-key").await.1, pk);

    let nonce = "0123456789abcdef0123456789abcdef01234567";
    let (status, doc) = rt.get(&format!("/signer/attestation?nonce={nonce}")).await;
    assert_eq!(status, 200, "{doc}");
    let dir = temp_dir("signer");
    let doc_path = dir.join("doc.b64");
    std::fs::write(&doc_path, &doc).unwrap();
    let root = rt.dev_root.join("root.pem");
    let (ok, out, err) = nacre(&[
        "verify",
        doc_path.to_str().unwrap(),
        "--root",
        root.to_str().unwrap(),
        "--nonce",
        nonce,
    ]);
    assert!(ok, "{err}");
    let summary: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(summary["kind"], "dev");
    assert_eq!(summary["public_key"], pk.as_str());
    assert_eq!(summary["user_data"]["layout"], "guest");
    assert_eq!(summary["user_data"]["guest_sha256"], sha.as_str());
    let (ok, _, err) = nacre(&[
        "verify",
        doc_path.to_str().unwrap(),
        "--root",
        root.to_str().unwrap(),
        "--nonce",
        "ffffffffffffffffffffffffffffffffffffffff",
    ]);
    assert!(!ok && err.contains("nonce"), "{err}");

    // A signature made in the enclave verifies with OpenSSL and the
    // attested key; a changed message does not.
    let message = "pay 10 to alice";
    let (_, sig) = rt.post("/signer/sign", message).await;
    let sig = hex::decode(sig).unwrap();
    assert_eq!(sig.len(), 64);
    // SubjectPublicKeyInfo for Ed25519 is a fixed prefix and the raw key.
    let mut spki = hex::decode("302a300506032b6570032100").unwrap();
    spki.extend(hex::decode(&pk).unwrap());
    std::fs::write(dir.join("pub.der"), &spki).unwrap();
    std::fs::write(dir.join("sig"), &sig).unwrap();
    let verify = |msg: &str| {
        std::fs::write(dir.join("msg"), msg).unwrap();
        std::process::Command::new("openssl")
            .current_dir(&dir)
            .args([
                "pkeyutl", "-verify", "-pubin", "-keyform", "DER", "-inkey", "pub.der", "-rawin",
                "-in", "msg", "-sigfile", "sig",
            ])
            .output()
            .expect("openssl")
    };
    let good = verify(message);
    assert!(
        good.status.success(),
        "{}",
        String::from_utf8_lossy(&good.stderr)
    );
    assert!(!verify("pay 1000 to mallory").status.success());
}
