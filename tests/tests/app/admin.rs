//! The admin API: auth, validation, bad uploads, delete.

use nacre_tests::{Runtime, TOKEN, guest};

#[tokio::test(flavor = "multi_thread")]
async fn token_is_required_and_checked() {
    let rt = Runtime::in_process(&[]);
    let c = rt.client();
    let url = format!("{}/enclave/guests", rt.url());
    let r = c.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 401, "missing token");
    assert!(r.headers().contains_key("www-authenticate"));
    let r = c.get(&url).bearer_auth("wrong").send().await.unwrap();
    assert_eq!(r.status(), 401, "wrong token");
    let r = c
        .put(format!("{url}/x"))
        .bearer_auth("wrong")
        .body(std::fs::read(guest("hello")).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "wrong token cannot deploy");
    let r = c.get(&url).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap(),
        serde_json::json!([])
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_api_disabled_without_token_hash() {
    let rt = Runtime::in_process_raw(&[]);
    let r = rt
        .client()
        .get(format!("{}/enclave/guests", rt.url()))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.text().await.unwrap().contains("--admin-token-sha256"));
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_names_routes_and_components_get_400_with_a_reason() {
    let rt = Runtime::in_process(&[]);
    let hello = guest("hello");
    for (name, query, needle) in [
        ("Bad_Name", "", "guest name"),
        ("ok", "route=/enclave/x", "reserved"),
        ("ok", "route=nope", "route"),
        ("ok", "allow=not-a-rule", "allow rule"),
        ("ok", "size=3", "unknown query parameter"),
        // A default route is checked like an explicit one.
        ("enclave", "", "default route /enclave"),
        // Clients remove dot segments before sending: never served.
        ("ok", "route=/a/../b", "'..' segment"),
        ("ok", "route=/..", "'..' segment"),
        ("ok", "route=/a/.", "'..' segment"),
    ] {
        let r = rt.deploy(name, &hello, query).await;
        assert_eq!(r.status(), 400, "{name} {query}");
        let body = r.text().await.unwrap();
        assert!(body.contains(needle), "{name} {query}: {body}");
    }

    let dir = nacre_tests::temp_dir("bad");
    let cases: [(&str, Vec<u8>, &str); 3] = [
        (
            "garbage",
            b"this is not wasm at all".to_vec(),
            "not a valid WebAssembly component",
        ),
        (
            "core",
            b"\0asm\x01\0\0\0".to_vec(),
            "core WebAssembly module",
        ),
        (
            "command",
            std::fs::read(guest("not-http")).unwrap(),
            "incoming-handler",
        ),
    ];
    for (name, bytes, needle) in cases {
        let path = dir.join(format!("{name}.wasm"));
        std::fs::write(&path, bytes).unwrap();
        let r = rt.deploy(name, &path, "").await;
        assert_eq!(r.status(), 400, "{name}");
        let body = r.text().await.unwrap();
        assert!(body.contains(needle), "{name}: {body}");
    }
    // Nothing bad was installed; serving continues.
    let (status, manifest) = rt.get("/enclave/manifest").await;
    assert_eq!(
        (status, manifest.as_str()),
        (200, r#"{"version":1,"guests":[]}"#)
    );
    rt.deploy_ok("hello", &hello, "").await;
    // The same names and routes are refused at start, naming the flag.
    let spec = format!("enclave={}", hello.display());
    let err = Runtime::try_in_process(&["--guest".into(), spec])
        .err()
        .expect("a guest at /enclave must not start");
    assert!(err.contains("default route /enclave"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_upload_is_413() {
    let rt = Runtime::in_process(&["--max-body", "64KiB"]);
    let path = nacre_tests::temp_dir("big").join("big.wasm");
    std::fs::write(&path, vec![0u8; 65 * 1024]).unwrap();
    let r = rt.deploy("big", &path, "").await;
    assert_eq!(r.status(), 413);
    assert!(r.text().await.unwrap().contains("--max-body"));
}

#[tokio::test(flavor = "multi_thread")]
async fn delete_and_list() {
    let rt = Runtime::in_process(&[]);
    rt.deploy_ok("a", &guest("hello"), "").await;
    rt.deploy_ok("b", &guest("echo"), "allow=api.example.com:443")
        .await;
    let c = rt.client();
    let list: serde_json::Value = c
        .get(format!("{}/enclave/guests", rt.url()))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let names: Vec<_> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a", "b"]);
    assert_eq!(list[1]["allow"], serde_json::json!(["api.example.com:443"]));

    let del = |n: &str| {
        c.delete(format!("{}/enclave/guests/{n}", rt.url()))
            .bearer_auth(TOKEN)
            .send()
    };
    assert_eq!(del("a").await.unwrap().status(), 204);
    assert_eq!(del("a").await.unwrap().status(), 404);
    let (status, _) = rt.get("/a").await;
    assert_eq!(status, 404);
    let (_, manifest) = rt.get("/enclave/manifest").await;
    assert!(manifest.contains(r#""name":"b""#) && !manifest.contains(r#""name":"a""#));
}

#[tokio::test(flavor = "multi_thread")]
async fn egress_cap_limits_allow_lists() {
    let rt = Runtime::in_process(&["--egress-allow", "*.example.com:443"]);
    rt.deploy_ok("ok", &guest("hello"), "allow=api.example.com:443")
        .await;
    let r = rt
        .deploy("no", &guest("hello"), "allow=evil.test:443")
        .await;
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("evil.test:443"));
}
