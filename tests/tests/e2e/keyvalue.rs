//! `wasi:keyvalue` through the SDK: atomic counters, private namespaces,
//! quotas, and the attested signer keeping its key there.

use std::collections::BTreeSet;

use nacre_tests::{Runtime, guest, nacre, sha256_hex, temp_dir};

#[tokio::test(flavor = "multi_thread")]
async fn counters_are_atomic_private_and_survive_redeploys() {
    let rt = Runtime::start(&[]);
    let wasm = guest("kv-counter");
    rt.deploy_ok("counter", &wasm, "").await;
    assert_eq!(rt.get("/counter/").await, (200, "0\n".into()));

    let client = rt.client();
    let url = format!("{}/counter/incr", rt.url());
    let posts = (0..100).map(|_| {
        let (client, url) = (client.clone(), url.clone());
        tokio::spawn(async move {
            let r = client.post(url).send().await.unwrap();
            assert_eq!(r.status(), 200);
            r.text().await.unwrap().trim().parse::<u64>().unwrap()
        })
    });
    let mut seen = BTreeSet::new();
    for p in posts.collect::<Vec<_>>() {
        seen.insert(p.await.unwrap());
    }
    // Every increment saw a distinct value: none was lost or repeated.
    assert_eq!(seen, (1..=100).collect::<BTreeSet<u64>>());
    assert_eq!(rt.get("/counter/").await, (200, "100\n".into()));

    // The same component under another name has its own namespace.
    rt.deploy_ok("other", &wasm, "").await;
    assert_eq!(rt.get("/other/").await, (200, "0\n".into()));
    assert_eq!(rt.post("/other/incr", "").await, (200, "1\n".into()));
    assert_eq!(rt.get("/counter/").await, (200, "100\n".into()));

    // Redeploying under the same name keeps the data; a GET is not a POST.
    rt.deploy_ok("counter", &guest("kv-counter"), "").await;
    assert_eq!(rt.get("/counter/").await, (200, "100\n".into()));
    assert_eq!(rt.get("/counter/incr").await.0, 405);
}

#[tokio::test(flavor = "multi_thread")]
async fn namespaces_and_quotas_hold_and_serving_continues() {
    let rt = Runtime::start(&["--kv-max-keys", "20", "--kv-max-bytes", "64KiB"]);
    let probe = guest("kv-probe");
    rt.deploy_ok("a", &probe, "").await;
    rt.deploy_ok("b", &probe, "").await;
    rt.deploy_ok("hello", &guest("hello"), "").await;
    let client = rt.client();
    let put = |path: &str, body: &'static str| {
        client.put(format!("{}{path}", rt.url())).body(body).send()
    };
    assert_eq!(
        put("/a/k/shared/secret", "a-secret")
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(rt.get("/a/k/shared/secret").await, (200, "a-secret".into()));
    // b names the same bucket and key, or a bucket called `a`: both inside
    // b's own namespace, both empty.
    for path in ["/b/k/shared/secret", "/b/k/a/secret"] {
        assert_eq!(rt.get(path).await.0, 404, "{path}");
    }
    // Anything that tries to name another namespace is an error.
    for path in [
        "/b/k/..%2Fa/secret",
        "/b/k/a:shared/secret",
        "/b/k/.a/secret",
    ] {
        let (status, body) = rt.get(path).await;
        assert_eq!(status, 507, "{path}: {body}");
        assert!(body.contains("no other is reachable"), "{body}");
    }

    // a runs into its key quota: an error inside the guest, nothing stored
    // past it, and everyone else is served.
    let (status, body) = rt.post("/a/fill/50", "").await;
    assert_eq!(status, 507, "{body}");
    assert!(
        body.starts_with("stored 19;") && body.contains("--kv-max-keys"),
        "{body}"
    );
    let (status, body) = rt.get("/a/big-key").await;
    assert_eq!(status, 507);
    assert!(body.contains("limit is 1024"), "{body}");
    assert_eq!(rt.get("/a/k/shared/secret").await, (200, "a-secret".into()));
    assert_eq!(put("/b/k/x/y", "b's").await.unwrap().status(), 200);
    assert_eq!(rt.get("/hello/").await.0, 200);

    // The byte quota, on a runtime with a small one.
    let small = Runtime::start(&["--kv-max-bytes", "1KiB"]);
    small.deploy_ok("a", &probe, "").await;
    let (status, body) = small.post("/a/fill/50", "").await;
    assert_eq!(status, 507, "{body}");
    assert!(
        body.starts_with("stored 9;") && body.contains("--kv-max-bytes"),
        "{body}"
    );
    assert!(!rt.log().contains("panicked") && !small.log().contains("panicked"));
}

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

/// `nacre:enclave/state`: one slot per guest name, like key-value; no
/// guest reads or replaces another's.
#[tokio::test(flavor = "multi_thread")]
async fn state_is_one_slot_per_guest_name() {
    let rt = Runtime::start(&[]);
    let wasm = guest("kv-probe");
    rt.deploy_ok("a", &wasm, "").await;
    rt.deploy_ok("b", &wasm, "").await;
    let put = |path: &str, body: &'static str| {
        rt.client()
            .put(format!("{}{path}", rt.url()))
            .body(body)
            .send()
    };
    assert_eq!(rt.get("/a/state").await.0, 404);
    assert_eq!(put("/a/state", "alpha").await.unwrap().status(), 200);
    assert_eq!(rt.get("/b/state").await.0, 404, "b sees a's state");
    assert_eq!(put("/b/state", "beta").await.unwrap().status(), 200);
    assert_eq!(rt.get("/a/state").await, (200, "alpha".into()));
    assert_eq!(rt.get("/b/state").await, (200, "beta".into()));
    // The slot belongs to the name: a redeploy keeps it.
    rt.deploy_ok("a", &guest("kv-probe"), "").await;
    assert_eq!(rt.get("/a/state").await, (200, "alpha".into()));
}
