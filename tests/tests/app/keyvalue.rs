//! `wasi:keyvalue` through the SDK: atomic counters, private namespaces and
//! quotas; `nacre:enclave/state`, one slot per guest name.

use std::collections::BTreeSet;

use nacre_tests::{Runtime, guest};

#[tokio::test(flavor = "multi_thread")]
async fn counters_are_atomic_private_and_survive_redeploys() {
    let rt = Runtime::in_process(&[]);
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
    let rt = Runtime::in_process(&["--kv-max-keys", "20", "--kv-max-bytes", "64KiB"]);
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
    let small = Runtime::in_process(&["--kv-max-bytes", "1KiB"]);
    small.deploy_ok("a", &probe, "").await;
    let (status, body) = small.post("/a/fill/50", "").await;
    assert_eq!(status, 507, "{body}");
    assert!(
        body.starts_with("stored 9;") && body.contains("--kv-max-bytes"),
        "{body}"
    );
    assert!(!rt.log().contains("panicked") && !small.log().contains("panicked"));
}

/// `nacre:enclave/state`: one slot per guest name, like key-value; no
/// guest reads or replaces another's.
#[tokio::test(flavor = "multi_thread")]
async fn state_is_one_slot_per_guest_name() {
    let rt = Runtime::in_process(&[]);
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
