//! What clients get at the HTTP level, seen by the system's curl: early
//! answers over HTTP/1.1 and HTTP/2, and request-head limits. (The
//! deadline for every phase of a connection, raw sockets only, is in the
//! in-process suite: app/connections.rs.)

use nacre_tests::{Runtime, TOKEN, guest, temp_dir};

/// The answers a server gives before it reads a body (a wrong token, an
/// upload or a body over --max-body) reach the system's curl, status and
/// message, over both protocols, with a length, chunked, and without
/// `Expect: 100-continue`.
#[tokio::test(flavor = "multi_thread")]
async fn early_answers_reach_curl_over_http1_and_http2() {
    let rt = Runtime::start(&["--max-body", "1MiB"]);
    rt.deploy_ok("f", &guest("faulty"), "").await;
    let dir = temp_dir("early");
    let big = dir.join("big.bin");
    std::fs::write(&big, vec![7u8; 5 << 20]).unwrap();
    let big = format!("@{}", big.display());
    let auth = format!("Authorization: Bearer {TOKEN}");
    let cases: [(&str, Vec<&str>, &str, &str); 5] = [
        (
            "wrong token",
            vec![
                "-X",
                "PUT",
                "-H",
                "Authorization: Bearer wrong",
                "--data-binary",
                &big,
                "URL/enclave/guests/x",
            ],
            "401",
            "missing or wrong admin token",
        ),
        (
            "upload over --max-body",
            vec![
                "-X",
                "PUT",
                "-H",
                &auth,
                "--data-binary",
                &big,
                "URL/enclave/guests/x",
            ],
            "413",
            "upload limit (--max-body)",
        ),
        (
            "guest body over --max-body",
            vec!["--data-binary", &big, "URL/f/body"],
            "413",
            "request body is over the 1048576 byte limit",
        ),
        (
            "guest body over --max-body, no Expect",
            vec!["-H", "Expect:", "--data-binary", &big, "URL/f/body"],
            "413",
            "request body is over the 1048576 byte limit",
        ),
        (
            "chunked upload over --max-body, no Expect",
            vec![
                "-X",
                "PUT",
                "-H",
                &auth,
                "-H",
                "Expect:",
                "-H",
                "Transfer-Encoding: chunked",
                "--data-binary",
                &big,
                "URL/enclave/guests/x",
            ],
            "413",
            "upload limit (--max-body)",
        ),
    ];
    for version in ["--http1.1", "--http2"] {
        for (label, args, status, message) in &cases {
            for _ in 0..3 {
                let mut a = vec![version, "-w", "\n%{http_code}"];
                a.extend(args.iter().copied());
                let (ok, out, err) = rt.curl(&a);
                assert!(ok, "{version} {label}: curl failed: {err}");
                assert!(
                    out.ends_with(&format!("\n{status}")) && out.contains(message),
                    "{version} {label}: {out}"
                );
            }
        }
    }
    // Nothing was installed, and the runtime serves on.
    let (ok, out, _) = rt.curl(&["URL/f/ok"]);
    assert!(ok && out == "ok", "{out}");
}

/// Request heads are held to nginx's defaults: 8 KiB a line, 32 KiB in
/// all; 431 past them (414 for the target), over both protocols.
#[tokio::test(flavor = "multi_thread")]
async fn request_heads_over_the_limits_get_431() {
    let rt = Runtime::start(&[]);
    rt.deploy_ok("f", &guest("faulty"), "").await;
    let line = |n: usize| "a".repeat(n);
    let (l7, l9, l100) = (line(7000), line(9000), line(100_000));
    let h = |name: &str, v: &str| format!("{name}: {v}");
    let code = |args: Vec<String>| {
        let mut a = vec![
            "-o".to_string(),
            "/dev/null".into(),
            "-w".into(),
            "%{http_code}".into(),
        ];
        a.extend(args);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        rt.curl(&a).1
    };
    for v in ["--http1.1", "--http2"] {
        let with = |headers: &[String], path: &str| {
            let mut a = vec![v.to_string()];
            for hd in headers {
                a.extend(["-H".to_string(), hd.clone()]);
            }
            a.push(format!("URL{path}"));
            a
        };
        // Three 7 KB lines (21 KB) pass; one 9 KB line or five 7 KB lines
        // (35 KB) do not.
        let three: Vec<String> = ["x-a", "x-b", "x-c"].iter().map(|n| h(n, &l7)).collect();
        assert_eq!(code(with(&three, "/f/ok")), "200", "{v}");
        assert_eq!(code(with(&[h("x-big", &l9)], "/f/ok")), "431", "{v}");
        let five: Vec<String> = ["x-a", "x-b", "x-c", "x-d", "x-e"]
            .iter()
            .map(|n| h(n, &l7))
            .collect();
        assert_eq!(code(with(&five, "/f/ok")), "431", "{v}");
        assert_eq!(code(with(&[], &format!("/f/ok?{l9}"))), "414", "{v}");
        // Far over: never served. Over HTTP/1.1 the 431 arrives (the
        // runtime reads and discards the rest of the head before closing);
        // over HTTP/2 the h2 library ends the connection rather than
        // buffer it.
        let huge = code(with(&[h("x-huge", &l100)], "/f/ok"));
        if v == "--http1.1" {
            assert_eq!(huge, "431", "{v}");
        } else {
            assert!(huge == "431" || huge == "000", "{v}: {huge}");
        }
    }
    let (_, out, _) = rt.curl(&["--http1.1", "-H", &h("x-big", &l9), "URL/f/ok"]);
    assert!(
        out.contains("header x-big") && out.contains("8192"),
        "{out}"
    );
}
