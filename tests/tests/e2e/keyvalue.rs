//! The attested signer keeping its key in `wasi:keyvalue`, checked with
//! `nacre verify` and OpenSSL; a guest's compare-and-swap
//! (`nacre:enclave/kv-atomics`) racing itself in the runtime's process.
//! (Counters, namespaces and quotas, in process: app/keyvalue.rs.)

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

/// Compare-and-swap from a guest: on an absent key, on a present one, on a
/// mismatch (nothing changes), claims racing for one absent key (exactly
/// one wins), and a swap past the key quota (refused like a set).
#[tokio::test(flavor = "multi_thread")]
async fn compare_and_swap_from_a_guest() {
    let rt = Runtime::start(&["--kv-max-keys", "3"]);
    rt.deploy_ok("probe", &guest("kv-probe"), "").await;
    let client = rt.client();
    let cas = |key: &str, old: Option<&str>, new: &'static str| {
        let mut req = client
            .post(format!("{}/probe/cas/b/{key}", rt.url()))
            .body(new);
        if let Some(old) = old {
            req = req.header("x-old", old);
        }
        async move {
            let r = req.send().await.expect("request");
            (r.status().as_u16(), r.text().await.expect("body"))
        }
    };
    let (swapped, unchanged) = (
        (200, "swapped\n".to_string()),
        (409, "unchanged\n".to_string()),
    );
    assert_eq!(cas("k", None, "one").await, swapped);
    assert_eq!(cas("k", None, "two").await, unchanged, "present");
    assert_eq!(cas("k", Some("two"), "three").await, unchanged);
    assert_eq!(rt.get("/probe/k/b/k").await, (200, "one".into()));
    assert_eq!(cas("k", Some("one"), "two").await, swapped);
    assert_eq!(rt.get("/probe/k/b/k").await, (200, "two".into()));

    let claims: Vec<_> = (0..20)
        .map(|_| tokio::spawn(cas("race", None, "mine")))
        .collect();
    let mut answers = Vec::new();
    for c in claims {
        answers.push(c.await.expect("claim"));
    }
    assert_eq!(
        answers.iter().filter(|a| **a == swapped).count(),
        1,
        "{answers:?}"
    );
    assert!(answers.iter().all(|a| *a == swapped || *a == unchanged));

    // Two keys so far; a third fits, a fourth is past --kv-max-keys.
    assert_eq!(cas("q1", None, "x").await, swapped);
    let (status, body) = cas("q2", None, "x").await;
    assert_eq!(status, 507, "{body}");
    assert!(body.contains("--kv-max-keys"), "{body}");
    assert_eq!(rt.get("/probe/k/b/q2").await.0, 404);
    assert!(!rt.log().contains("panicked"));
}
