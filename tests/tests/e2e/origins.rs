//! Guest egress against origins nobody here wrote: Python's http.server in
//! TLS (HTTP/1.0, no close_notify) and nginx from the distribution (HTTP/2
//! and HTTP/1.1), with content-length, chunked and close-delimited bodies,
//! through the real host proxy with a recording relay on the egress link,
//! as the egress tests run it. Every fetch must bring the whole body back,
//! however the origin closes afterwards.

use nacre_tests::guest;
use nacre_tests::net::{Stack, urlencode};
use nacre_tests::origins::{Nginx, PythonOrigin, pattern_body};

/// Fetches through this many times each.
const ROUNDS: usize = 20;

/// Both origins, and a stack whose egress reaches them through a relay
/// that cuts each connection after `cut_after` bytes, if set.
async fn start(cut_after: Option<usize>) -> (PythonOrigin, Nginx, Stack) {
    let python = PythonOrigin::start();
    let nginx = Nginx::start();
    let ca = nacre_tests::temp_dir("origins").join("cas.pem");
    std::fs::write(&ca, python.pki.ca_pem.clone() + &nginx.pki.ca_pem).unwrap();
    let ports = [python.port, nginx.h2_port, nginx.h1_port];
    let allow: Vec<String> = ports.iter().map(|p| format!("localhost:{p}")).collect();
    let stack = Stack::start(&[], &allow, &ca.display().to_string(), cut_after).await;
    let query: Vec<String> = allow.iter().map(|a| format!("allow={a}")).collect();
    stack
        .rt
        .deploy_ok("fetch", &guest("fetch"), &query.join("&"))
        .await;
    (python, nginx, stack)
}

#[tokio::test(flavor = "multi_thread")]
async fn guests_fetch_whole_bodies_from_python_and_nginx() {
    // The relay's closing order (it shuts one direction when the other
    // ends) is what made the races show.
    let (python, nginx, stack) = start(None).await;
    let mut cases: Vec<(String, Vec<u8>)> = Vec::new();
    for kind in ["length", "chunked", "close"] {
        for n in [0, 100, 200_000] {
            let path = format!("/{kind}/{n}");
            let url = format!("https://localhost:{}{path}", python.port);
            cases.push((url, pattern_body(&path, n)));
        }
    }
    for port in [nginx.h2_port, nginx.h1_port] {
        for path in ["/length.bin", "/chunked.shtml"] {
            let url = format!("https://localhost:{port}{path}");
            cases.push((url, Nginx::body(path)));
        }
    }

    let client = stack.rt.client();
    let mut failures = Vec::new();
    for (url, want) in &cases {
        for _ in 0..ROUNDS {
            let r = client
                .get(format!("{}/fetch/?url={}", stack.rt.url(), urlencode(url)))
                .send()
                .await
                .unwrap();
            let status = r.status();
            let body = r.bytes().await.unwrap();
            if status != 200 || body.as_ref() != want.as_slice() {
                failures.push(format!(
                    "{url}: {status}, {} bytes: {}",
                    body.len(),
                    String::from_utf8_lossy(&body[..body.len().min(200)])
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} fetches failed:\n{}\n{}",
        failures.len(),
        cases.len() * ROUNDS,
        failures.join("\n"),
        stack.rt.log()
    );
    // nginx saw every request, none refused as malformed.
    assert!(!nginx.log().contains("client sent"), "{}", nginx.log());
}

/// The host cuts the egress link in the middle of a body: a guest must see
/// an error, never a shorter body taken as whole. Content-length, chunked
/// and HTTP/2 framing each give the cut away, with or without a TLS
/// close_notify.
#[tokio::test(flavor = "multi_thread")]
async fn a_body_cut_short_by_the_host_is_an_error_for_the_guest() {
    // Past the CONNECT answer and the TLS handshake, well inside the body.
    let (python, nginx, stack) = start(Some(60_000)).await;
    for url in [
        format!("https://localhost:{}/length/200000", python.port),
        format!("https://localhost:{}/chunked/200000", python.port),
        format!("https://localhost:{}/length.bin", nginx.h2_port),
        format!("https://localhost:{}/chunked.shtml", nginx.h2_port),
    ] {
        let (status, body) = stack.fetch(&url).await;
        assert_eq!(
            status,
            502,
            "{url}: a cut answer passed as whole: {} bytes",
            body.len()
        );
    }
}
