//! Upload, manifest, routing, HTTP versions, boot guests, and what the
//! runtime logs of them (a component compiled once for the same bytes,
//! guests' output tagged with their names).

use nacre_tests::{Runtime, guest, sha256_hex};

#[tokio::test(flavor = "multi_thread")]
async fn routes_by_longest_prefix_and_strips_it() {
    let rt = Runtime::in_process(&[]);
    rt.deploy_ok("echo", &guest("echo"), "route=/api").await;
    rt.deploy_ok("hello", &guest("hello"), "route=/api/hello")
        .await;

    let r = rt
        .client()
        .post(format!("{}/api/x/y?q=1&r=two", rt.url()))
        .header("x-forwarded-prefix", "/spoofed")
        .body("payload")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let echo: serde_json::Value = r.json().await.unwrap();
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["path"], "/x/y");
    assert_eq!(echo["query"], "q=1&r=two");
    assert_eq!(echo["body"], "payload");
    assert_eq!(
        echo["headers"]["x-forwarded-prefix"], "/api",
        "runtime sets the prefix, clients cannot"
    );

    let (status, body) = rt.get("/api").await;
    assert_eq!(status, 200);
    assert!(body.contains(r#""path":"/""#), "{body}");

    let (status, body) = rt.get("/api/hello/bob").await;
    assert_eq!(
        (status, body.as_str()),
        (200, "Hello, bob, from a Nacre enclave!\n")
    );
    // Prefixes match whole segments only.
    let (status, _) = rt.get("/apix").await;
    assert_eq!(status, 404);

    // A second guest on a taken route is refused, naming the holder.
    let r = rt.deploy("other", &guest("hello"), "route=/api").await;
    assert_eq!(r.status(), 409);
    assert!(r.text().await.unwrap().contains("echo"));

    // Route / makes a default guest.
    rt.deploy_ok("root", &guest("hello"), "route=/").await;
    let (status, body) = rt.get("/anything").await;
    assert_eq!(
        (status, body.as_str()),
        (200, "Hello, anything, from a Nacre enclave!\n")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_route_is_404_and_enclave_endpoints_answer() {
    let rt = Runtime::in_process(&[]);
    let (status, body) = rt.get("/nothing/here").await;
    assert_eq!(status, 404);
    assert!(body.contains("no guest serves /nothing/here"), "{body}");

    let (status, body) = rt.get("/enclave").await;
    assert_eq!(status, 200);
    assert!(body.contains("runs in an enclave") && body.contains(env!("CARGO_PKG_VERSION")));

    let (status, body) = rt.get("/enclave/config").await;
    assert_eq!(status, 200);
    let cfg: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(cfg["admin_api"], "enabled");
    assert!(
        !body.contains(nacre_tests::TOKEN),
        "the token itself never appears"
    );
    assert!(
        !body.contains(&sha256_hex(nacre_tests::TOKEN.as_bytes())),
        "nor its hash, which a weak token could be guessed from"
    );
    assert_eq!(cfg["fqdn"], "localhost");

    let (status, _) = rt.get("/enclave/debug").await;
    assert_eq!(status, 404, "debug is off without --debug");
    let dbg = Runtime::in_process(&["--debug"]);
    let (status, body) = dbg.get("/enclave/debug").await;
    assert_eq!(status, 200);
    let stats: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(stats["resident_memory_bytes"].as_u64().unwrap() > 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn wasmtime_serve_component_runs_unchanged() {
    let rt = Runtime::in_process(&[]);
    rt.deploy_ok("raw", &guest("raw-hello"), "").await;
    let (status, body) = rt.get("/raw/some/path?k=v").await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        "raw wasip2 component says hello; path=/some/path?k=v\n"
    );
}

/// The benchmark's (a₀) claims `floor` answers exactly what `hello` does,
/// so the two serve the same work; the headers the guest set and the body
/// must match.
#[tokio::test(flavor = "multi_thread")]
async fn the_floor_component_answers_as_hello_does() {
    let rt = Runtime::in_process(&[]);
    rt.deploy_ok("hello", &guest("hello"), "").await;
    rt.deploy_ok("floor", &guest("floor"), "").await;
    let mut answers = Vec::new();
    for path in ["/hello/", "/floor/"] {
        let r = rt.get_response(path).await;
        let status = r.status();
        let mut headers: Vec<(String, String)> = r
            .headers()
            .iter()
            .filter(|(name, _)| *name != "date")
            .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_string()))
            .collect();
        headers.sort();
        answers.push((status, headers, r.bytes().await.unwrap()));
    }
    let (hello, floor) = (&answers[0], &answers[1]);
    assert_eq!(hello.0, 200);
    assert_eq!(floor, hello);
}

#[tokio::test(flavor = "multi_thread")]
async fn boot_guests_with_wait_for_app() {
    let hello = guest("hello");
    let echo = guest("echo");
    let spec1 = format!("hello={};route=/", hello.display());
    let spec2 = format!("echo={}", echo.display());
    let rt = Runtime::in_process(&["--wait-for-app", "--guest", &spec1, "--guest", &spec2]);
    // Listening means ready: no retry needed.
    let (status, body) = rt.get("/").await;
    assert_eq!(
        (status, body.as_str()),
        (200, "Hello from a Nacre enclave!\n")
    );
    let (status, _) = rt.get("/echo/x").await;
    assert_eq!(status, 200);

    // Without --wait-for-app, a boot guest that cannot compile is logged
    // and its route stops answering 503 ("starting").
    let bad = nacre_tests::temp_dir("boot").join("bad.wasm");
    std::fs::write(&bad, b"not a component").unwrap();
    let spec = format!("bad={}", bad.display());
    let rt = Runtime::in_process(&["--guest", &spec]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while rt.get("/bad").await.0 != 404 {
        assert!(
            std::time::Instant::now() < deadline,
            "/bad never left the starting state"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(rt.log().contains("boot guest not deployed"), "{}", rt.log());

    // A missing file fails the start and names the file.
    let err = Runtime::try_in_process(&["--guest".into(), "x=/no/such/file.wasm".into()])
        .err()
        .expect("start must fail");
    assert!(err.contains("/no/such/file.wasm"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn replacing_a_guest_lets_requests_in_flight_finish_on_the_old_one() {
    let rt = Runtime::in_process(&[]);
    rt.deploy_ok("svc", &guest("faulty"), "").await;
    let client = rt.client();
    let url = format!("{}/svc/sleep?1500", rt.url());
    let in_flight = tokio::spawn(async move {
        let r = client.get(url).send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let r = rt.deploy("svc", &guest("hello"), "").await;
    assert_eq!(r.status(), 200, "replaced");
    let (status, body) = rt.get("/svc/new").await;
    assert_eq!(
        (status, body.as_str()),
        (200, "Hello, new, from a Nacre enclave!\n")
    );
    assert_eq!(in_flight.await.unwrap(), (200, "slept 1500 ms".to_string()));
}

#[tokio::test(flavor = "multi_thread")]
async fn empty_runtime_serves_the_empty_manifest() {
    // --wait-for-app with no guests never rebuilds the initial table.
    let rt = Runtime::in_process(&["--wait-for-app"]);
    assert_eq!(
        rt.get("/enclave/manifest").await,
        (200, r#"{"version":1,"guests":[]}"#.to_string())
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn upload_lists_in_manifest_and_serves_over_h1_and_h2() {
    let rt = Runtime::in_process(&[]);
    let wasm = guest("hello");
    let bytes = std::fs::read(&wasm).unwrap();

    let r = rt.deploy("hello", &wasm, "").await;
    assert_eq!(r.status(), 201);
    assert_eq!(r.headers()["location"], "/enclave/guests/hello");
    let info: serde_json::Value = r.json().await.unwrap();
    assert_eq!(info["sha256"], sha256_hex(&bytes));
    assert_eq!(info["name"], "hello");
    assert_eq!(info["route"], "/hello");
    assert_eq!(info["size"], bytes.len());

    // The manifest is exact canonical bytes.
    let (status, manifest) = rt.get("/enclave/manifest").await;
    assert_eq!(status, 200);
    let expected = format!(
        r#"{{"version":1,"guests":[{{"name":"hello","route":"/hello","sha256":"{}","allow":[]}}]}}"#,
        sha256_hex(&bytes)
    );
    assert_eq!(manifest, expected);

    for (client, version) in [
        (
            rt.client_builder().http1_only().build().unwrap(),
            reqwest::Version::HTTP_11,
        ),
        (
            rt.client_builder().http2_prior_knowledge().build().unwrap(),
            reqwest::Version::HTTP_2,
        ),
    ] {
        let r = client
            .get(format!("{}/hello/world", rt.url()))
            .send()
            .await
            .unwrap();
        assert_eq!(r.version(), version);
        assert_eq!(r.status(), 200);
        assert_eq!(
            r.text().await.unwrap(),
            "Hello, world, from a Nacre enclave!\n"
        );
    }

    // The same bytes again replace the guest (200) without recompiling.
    let r = rt.deploy("hello", &wasm, "").await;
    assert_eq!(r.status(), 200);
    assert!(
        rt.log().matches("component compiled").count() == 1,
        "same bytes were compiled twice:\n{}",
        rt.log()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn guest_output_goes_to_the_log_tagged_with_its_name() {
    let rt = Runtime::in_process(&[]);
    rt.deploy_ok("chatty", &guest("faulty"), "").await;
    let (status, _) = rt.get("/chatty/log").await;
    assert_eq!(status, 200);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let log = rt.log();
        let tagged = |text: &str| {
            log.lines()
                .any(|l| l.contains(text) && l.contains("guest=chatty"))
        };
        if tagged("faulty says hello on stdout") && tagged("faulty says hello on stderr") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "guest output not in the log:\n{log}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tcp_port_another_guest_or_the_runtime_holds_is_refused_by_name() {
    let free = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    let (metrics, port) = (free(), free());
    let rt = Runtime::in_process(&["--metrics-listen", &format!("tcp://127.0.0.1:{metrics}")]);
    rt.deploy_ok("echo", &guest("tcp-echo"), &format!("tcp={port}"))
        .await;
    // `other` on `on`: 409, and why.
    let conflict = |on: u16| {
        let rt = &rt;
        async move {
            let r = rt
                .deploy("other", &guest("tcp-probe"), &format!("tcp={on}"))
                .await;
            assert_eq!(r.status(), 409);
            r.text().await.unwrap()
        }
    };
    let why = conflict(port).await;
    assert!(
        why.contains(&format!("port {port} is already served by TCP guest echo")),
        "{why}"
    );
    // The runtime's own listener on the same host: refused before the
    // guest's listener could fail to bind.
    let why = conflict(metrics).await;
    assert!(
        why.contains("the runtime's own --metrics-listen listener"),
        "{why}"
    );
    // Redeploying a guest on its own port is no conflict.
    rt.deploy_ok("echo", &guest("tcp-echo"), &format!("tcp={port}"))
        .await;
}
