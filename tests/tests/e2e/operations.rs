//! Seeing inside a running enclave: logs and guest output over the control
//! link to the host proxy's stdout, and the runtime's Prometheus metrics
//! through an ordinary `--inbound` rule, checked with Prometheus' own
//! `promtool`.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nacre_control::{Body, Frame, Hello};
use nacre_tests::net::{HostProxy, Relay, contains, unix_in as unix};
use nacre_tests::{Runtime, guest, temp_dir};
use tokio::io::AsyncWriteExt;

/// The runtime, in an empty network namespace, behind a host proxy for
/// clients and a host proxy for its control link, which passes a
/// recording relay.
#[tokio::test(flavor = "multi_thread")]
async fn logs_and_guest_output_reach_the_host_and_nothing_else_does() {
    let dir = temp_dir("ops");
    let mut proxy = HostProxy::start(&[
        "--inbound".into(),
        format!("tcp://127.0.0.1:0={}", unix(&dir, "runtime.sock")),
        "--control-listen".into(),
        unix(&dir, "control.sock"),
    ]);
    let relay = Relay::start(
        unix(&dir, "relay.sock").parse().unwrap(),
        unix(&dir, "control.sock").parse().unwrap(),
    )
    .await;
    assert!(
        nacre_tests::is_root(),
        "this test runs the runtime in `unshare -n`, which needs root: run the suite as root (CI does)"
    );
    let wrapper: &[&str] = &["unshare", "-n", "--"];
    let control = relay.listen.to_string();
    let mut rt = Runtime::start_behind(
        wrapper,
        &unix(&dir, "runtime.sock"),
        &["--control", &control],
    );
    rt.via(proxy.inbound_tcp());

    // The runtime's own startup lines, queued before the link was up.
    let line = proxy.wait_for_line(Duration::from_secs(30), "attestation ready");
    assert!(
        line.contains(" INFO enclave nacre_runtime: attestation ready"),
        "{line}"
    );

    rt.deploy_ok("talker", &guest("faulty"), "").await;
    rt.deploy_ok("quiet", &guest("echo"), "").await;
    assert_eq!(rt.get("/talker/log").await.0, 200);
    let out = proxy.wait_for_line(Duration::from_secs(10), "stdout guest=talker");
    assert!(
        out.ends_with("stdout guest=talker: faulty says hello on stdout"),
        "{out}"
    );
    let err = proxy.wait_for_line(Duration::from_secs(10), "stderr guest=talker");
    assert!(
        err.ends_with("stderr guest=talker: faulty says hello on stderr"),
        "{err}"
    );

    // A guest that prints nothing: its request and response never cross.
    let secret = "SECRET-REQUEST-BODY-7c1f03";
    let r = rt
        .client()
        .post(format!("{}/quiet/", rt.url()))
        .body(secret)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains(secret));
    // Something logged after it, so the link has carried what it would.
    rt.deploy_ok("later", &guest("hello"), "").await;
    proxy.wait_for_line(Duration::from_secs(10), "later");
    let recorded = relay.recorded();
    assert!(
        contains(&recorded, b"faulty says hello"),
        "the relay saw no log"
    );
    for secret in [secret.as_bytes(), b"Bearer", nacre_tests::TOKEN.as_bytes()] {
        assert!(
            !contains(&recorded, secret),
            "{:?} crossed the control link",
            String::from_utf8_lossy(secret)
        );
    }
}

/// The control listener killed while 1,000 requests run: every request is
/// answered, records are dropped and counted, and the count is reported
/// once the listener is back.
#[tokio::test(flavor = "multi_thread")]
async fn a_dead_control_link_costs_requests_nothing_and_drops_are_reported() {
    let dir = temp_dir("ops-drop");
    let mut control = HostProxy::start(&["--control-listen".into(), unix(&dir, "control.sock")]);
    let addr = unix(&dir, "control.sock");
    let rt = Runtime::start(&["--control", &addr]);
    rt.deploy_ok("talker", &guest("faulty"), "").await;
    control.wait_for_line(Duration::from_secs(30), "control link up");

    let client = rt.client();
    let run = |n: usize| {
        let client = client.clone();
        let url = format!("{}/talker/log", rt.url());
        async move {
            let started = Instant::now();
            let mut tasks = Vec::new();
            for _ in 0..n / 50 {
                let (client, url) = (client.clone(), url.clone());
                tasks.push(tokio::spawn(async move {
                    let mut failed = 0;
                    for _ in 0..50 {
                        match client.get(&url).send().await {
                            Ok(r) if r.status() == 200 => {}
                            _ => failed += 1,
                        }
                    }
                    failed
                }));
            }
            let mut failed = 0;
            for t in tasks {
                failed += t.await.unwrap();
            }
            (failed, started.elapsed())
        }
    };
    let (failed, with_link) = run(1000).await;
    assert_eq!(failed, 0);
    control.kill();
    let (failed, without) = run(1000).await;
    assert_eq!(failed, 0, "requests failed while the control link was down");
    eprintln!("1,000 logging requests: {with_link:?} with the control link, {without:?} without");

    control.restart_after_kill();
    let line = control.wait_for_line(Duration::from_secs(30), "log records dropped");
    let count: u64 = line
        .split_whitespace()
        .find_map(|w| w.parse().ok())
        .expect("a count");
    assert!(count > 0, "{line}");
    // The link carries records again.
    assert_eq!(rt.get("/talker/log").await.0, 200);
    control.wait_for_line(Duration::from_secs(10), "stdout guest=talker");
}

/// A guest whose error string is 16 MiB of DEL (its `Debug` escaping six
/// times as long), twelve times: each failure reaches the host as a
/// bounded line (and the runtime's own log too), the link carries on with
/// no reconnection, the guest's next line arrives promptly, and the
/// runtime's memory stays bounded.
#[tokio::test(flavor = "multi_thread")]
async fn huge_guest_errors_are_cut_and_the_control_link_stays_up() {
    let dir = temp_dir("ops-huge");
    let control = unix(&dir, "control.sock");
    let mut proxy = HostProxy::start(&["--control-listen".into(), control.clone()]);
    let rt = Runtime::start(&["--control", &control]);
    rt.deploy_ok("talker", &guest("faulty"), "").await;
    proxy.wait_for_line(Duration::from_secs(30), "deployed");
    assert_eq!(rt.get("/talker/ok").await.0, 200);
    let before = rt.rss();

    for _ in 0..12 {
        assert_eq!(rt.get("/talker/huge-error").await.0, 500);
    }
    let asked = Instant::now();
    assert_eq!(rt.get("/talker/log").await.0, 200);
    let mut failures = 0;
    loop {
        let line = proxy.wait_for_line(Duration::from_secs(5), "guest=talker");
        if line.contains("stdout guest=talker") {
            break;
        }
        if line.contains("guest request failed") {
            assert!(line.len() < 16 * 1024, "a line of {} bytes", line.len());
            assert!(line.contains("(truncated, "), "{line:.300}");
            failures += 1;
        }
    }
    let took = asked.elapsed();
    eprintln!("the guest's line after 12 huge errors came {took:?} after its request");
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert_eq!(failures, 12, "every failure is logged, cut");

    let ups = proxy
        .log()
        .lines()
        .filter(|l| l.contains("control link up"))
        .count();
    assert_eq!(ups, 1, "the control link was made again:\n{}", proxy.log());
    // A record held 100 MB here before records were bounded: a dozen of
    // them went over 250 MiB after, and 750 MiB at the peak.
    let after = rt.rss();
    let peak = nacre_cli::process::peak_rss(rt.pid()).unwrap_or(0);
    eprintln!(
        "runtime RSS {} MiB before, {} MiB after, {} MiB at the peak",
        before >> 20,
        after >> 20,
        peak >> 20
    );
    assert!(
        after < before + (128 << 20),
        "RSS grew from {} to {} MiB",
        before >> 20,
        after >> 20
    );
    assert!(peak < 400 << 20, "RSS peaked at {} MiB", peak >> 20);
    // The runtime's own log (stderr) got the same bounded lines.
    assert!(rt.log().len() < 4 << 20, "{} bytes of log", rt.log().len());
}

/// A hostile host on the control link: garbage, an oversized length, a cut
/// frame, bytes that are not protobuf, a version the runtime does not
/// speak, a bad frame after a good Hello. Each is logged, the runtime
/// connects again, and it serves throughout.
#[tokio::test(flavor = "multi_thread")]
async fn hostile_frames_on_the_control_link_are_logged_and_the_link_is_made_again() {
    let dir = temp_dir("ops-hostile");
    let path = dir.join("control.sock");
    let listener = tokio::net::UnixListener::bind(&path).unwrap();
    let addr = format!("unix:{}", path.display());
    let rt = Runtime::start(&["--control", &addr]);

    let hello = |min, max| Frame {
        body: Some(Body::Hello(Hello {
            min_version: min,
            max_version: max,
            software: "hostile host".into(),
            sync_advertise: String::new(),
            ..Default::default()
        })),
    };
    let good_hello = nacre_control::encode_frame(&hello(1, 1)).unwrap();
    let mut huge = (1u32 << 30).to_be_bytes().to_vec();
    huge.extend_from_slice(b"xxxx");
    let wrong_version = nacre_control::encode_frame(&hello(7, 9)).unwrap();
    let mut after_hello = good_hello.clone();
    after_hello.extend_from_slice(&[0, 0, 0, 3, 0xff, 0xff, 0xff]);
    let cases: [(&str, Vec<u8>, &str); 6] = [
        (
            "garbage",
            b"GET / HTTP/1.1\r\n\r\n".to_vec(),
            "over the 65536-byte limit",
        ),
        ("oversized", huge, "over the 65536-byte limit"),
        ("cut short", vec![0, 0, 0, 50, 1, 2, 3], "truncated"),
        (
            "not protobuf",
            vec![0, 0, 0, 3, 0xff, 0xff, 0xff],
            "not protobuf",
        ),
        (
            "wrong version",
            wrong_version,
            "speaks control protocol 7..=9",
        ),
        ("bad frame after Hello", after_hello, "not protobuf"),
    ];
    for (what, bytes, logged) in cases {
        let (mut link, _) = tokio::time::timeout(Duration::from_secs(15), listener.accept())
            .await
            .unwrap_or_else(|_| panic!("the runtime did not connect again before {what}"))
            .unwrap();
        let first = nacre_control::read_frame(&mut link).await.unwrap();
        assert!(
            matches!(first.body, Some(Body::Hello(_))),
            "{what}: {first:?}"
        );
        link.write_all(&bytes).await.unwrap();
        link.shutdown().await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !rt.log().contains(logged) {
            assert!(
                Instant::now() < deadline,
                "{what}: nothing logged with {logged:?}:\n{}",
                rt.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(
            rt.get("/enclave").await.0,
            200,
            "{what}: the runtime stopped serving"
        );
        drop(link);
    }
    // Then a host that behaves gets records.
    let (mut link, _) = tokio::time::timeout(Duration::from_secs(15), listener.accept())
        .await
        .expect("the runtime connects again")
        .unwrap();
    nacre_control::read_frame(&mut link).await.unwrap();
    link.write_all(&good_hello).await.unwrap();
    let record = tokio::time::timeout(
        Duration::from_secs(10),
        nacre_control::read_frame(&mut link),
    )
    .await
    .expect("a record")
    .unwrap();
    assert!(
        matches!(record.body, Some(Body::Log(_)) | Some(Body::Dropped(_))),
        "{record:?}"
    );
}

/// The metrics: the host's (`--metrics-listen` through a host proxy
/// `--inbound` rule) and the operator's (`/enclave/metrics` over the
/// enclave's TLS, with the admin token) both pass promtool; the host's
/// hold process-wide figures only, nothing per guest or per answer; the
/// operator's move with requests, traps, timeouts and denials, and never
/// go back when a guest is redeployed.
#[tokio::test(flavor = "multi_thread")]
async fn metrics_pass_promtool_and_move_with_what_happens() {
    let dir = temp_dir("ops-metrics");
    let metrics_sock = unix(&dir, "metrics.sock");
    let rt = Runtime::start(&[
        "--metrics-listen",
        &metrics_sock,
        "--request-timeout",
        "1s",
        "--debug",
    ]);
    let proxy = HostProxy::start(&[
        "--inbound".into(),
        format!("tcp://127.0.0.1:0={metrics_sock}"),
        "--metrics-listen".into(),
        "tcp://127.0.0.1:0".into(),
    ]);
    let url = format!("http://{}/metrics", proxy.inbound_tcp());
    let scrape = || async { reqwest::get(&url).await.unwrap().text().await.unwrap() };
    rt.deploy_ok("f", &guest("faulty"), "").await;
    rt.deploy_ok("fetch", &guest("fetch"), "allow=localhost:1")
        .await;
    for _ in 0..5 {
        assert_eq!(rt.get("/f/ok").await.0, 200);
    }
    assert_eq!(rt.get("/f/trap").await.0, 500);
    assert_eq!(rt.get("/f/loop").await.0, 504);
    let (status, _) = rt.get("/fetch/?url=https%3A%2F%2Fexample.com%2F").await;
    assert_ne!(status, 200);

    // What the host can read: process-wide figures only.
    let text = scrape().await;
    promtool(&text);
    // The host proxy's own metrics too, and OpenMetrics for whoever asks.
    promtool(&proxy.metrics_text().await);
    openmetrics(reqwest::Client::new().get(&url)).await;
    let per_request = [
        "guest=",
        "class=",
        "nacre_guest_requests",
        "nacre_guest_responses",
        "nacre_guest_request_duration",
        "nacre_guest_traps",
        "nacre_guest_kv_bytes",
    ];
    for per_request in per_request {
        assert!(
            !text.contains(per_request),
            "{per_request} in what the host reads:\n{text}"
        );
    }
    assert!(value(&text, "nacre_connections_total") >= 1.0);
    assert!(value(&text, "nacre_compiles_total") >= 2.0);
    assert_eq!(value(&text, "nacre_sync_role{role=\"alone\"}"), 1.0);
    assert!(value(&text, "nacre_tls_certificate_expiry_timestamp_seconds") > 1.7e9);

    // What the operator reads, through the enclave's TLS.
    let ops = operator_metrics(&rt);
    promtool(&ops);
    assert_eq!(value(&ops, "nacre_guest_requests_total{guest=\"f\"}"), 7.0);
    let class = |c: &str| format!("nacre_guest_responses_total{{guest=\"f\",class=\"{c}\"}}");
    assert_eq!(value(&ops, &class("2xx")), 5.0);
    assert_eq!(value(&ops, &class("5xx")), 2.0);
    assert_eq!(value(&ops, "nacre_guest_traps_total{guest=\"f\"}"), 1.0);
    assert_eq!(value(&ops, "nacre_guest_timeouts_total{guest=\"f\"}"), 1.0);
    let count = "nacre_guest_request_duration_seconds_count{guest=\"f\"}";
    assert_eq!(value(&ops, count), 7.0);
    let denied = "nacre_guest_egress_denied_total{guest=\"fetch\"}";
    assert_eq!(value(&ops, denied), 1.0);
    let get = rt.client().get(format!("{}/enclave/metrics", rt.url()));
    openmetrics(get.bearer_auth(nacre_tests::TOKEN)).await;
    // Not without the token: 401 (and 403 where the admin API is off).
    for auth in [&[][..], &["-H", "authorization: Bearer wrong-token"][..]] {
        let mut args = vec!["-o", "/dev/null", "-w", "%{http_code}"];
        args.extend_from_slice(auth);
        args.push("URL/enclave/metrics");
        let (_, status, _) = rt.curl(&args);
        assert_eq!(status, "401", "{auth:?}");
    }
    let closed = Runtime::start_raw(&[]);
    let r = closed
        .client()
        .get(format!("{}/enclave/metrics", closed.url()))
        .bearer_auth(nacre_tests::TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);

    // Redeployed, the name keeps its counters.
    rt.deploy_ok("f", &guest("hello"), "").await;
    assert_eq!(rt.get("/f/").await.0, 200);
    let ops = operator_metrics(&rt);
    assert_eq!(value(&ops, "nacre_guest_requests_total{guest=\"f\"}"), 8.0);
    assert!(value(&scrape().await, "nacre_guest_table_changes_total") >= 3.0);

    // /enclave/debug (anyone may read it) shows the host's figures only.
    let (status, body) = rt.get("/enclave/debug").await;
    assert_eq!(status, 200, "{body}");
    let debug: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(debug["compiles"].as_u64() >= Some(3), "{debug}");
    assert!(
        debug.get("guests").is_none() && debug.get("requests").is_none(),
        "{debug}"
    );
}

/// Sends `request` asking for OpenMetrics, and checks that is the answer.
async fn openmetrics(request: reqwest::RequestBuilder) {
    let om = request
        .header("accept", "application/openmetrics-text; version=1.0.0")
        .send()
        .await
        .unwrap();
    let kind = om.headers()["content-type"].to_str().unwrap().to_string();
    assert!(kind.starts_with("application/openmetrics-text"), "{kind}");
    assert!(om.text().await.unwrap().ends_with("# EOF\n"));
}

/// The sample `series` (name and labels) of `text`.
fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
}

/// `/enclave/metrics` as Prometheus would scrape it: curl over the
/// enclave's TLS with the admin token.
fn operator_metrics(rt: &Runtime) -> String {
    let auth = format!("authorization: Bearer {}", nacre_tests::TOKEN);
    let (ok, text, err) = rt.curl(&["--fail", "-H", &auth, "URL/enclave/metrics"]);
    assert!(ok, "curl: {err}");
    text
}

/// Prometheus' own checker over `text`.
fn promtool(text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs (the test command installs Debian's prometheus)");
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
