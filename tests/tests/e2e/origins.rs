//! Guest egress against origins nobody here wrote: Python's http.server in
//! TLS (HTTP/1.0, no close_notify) and nginx from the distribution (HTTP/2
//! and HTTP/1.1), with content-length, chunked and close-delimited bodies,
//! through the real host proxy with a recording relay on the egress link,
//! as the egress tests run it. Every fetch must bring the whole body back,
//! however the origin closes afterwards.

use nacre_tests::net::{HostProxy, Relay};
use nacre_tests::origins::{Nginx, PythonOrigin, pattern_body};
use nacre_tests::{Runtime, guest, temp_dir};

/// Fetches through this many times each.
const ROUNDS: usize = 20;

fn unix(dir: &std::path::Path, name: &str) -> String {
    format!("unix:{}", dir.join(name).display())
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn guests_fetch_whole_bodies_from_python_and_nginx() {
    let python = PythonOrigin::start();
    let nginx = Nginx::start();
    let dir = temp_dir("origins");
    let ca = dir.join("cas.pem");
    let pem = |pki: &nacre_tests::TestPki| pki.ca_pem.clone();
    std::fs::write(&ca, pem(&python.pki) + &pem(&nginx.pki)).unwrap();
    let ports = [python.port, nginx.h2_port, nginx.h1_port];

    let mut args = vec![
        "--inbound".to_string(),
        format!("tcp://127.0.0.1:0={}", unix(&dir, "runtime.sock")),
        "--egress-listen".into(),
        unix(&dir, "egress.sock"),
        "--egress-allow-private".into(),
    ];
    for p in ports {
        args.extend(["--egress-allow".to_string(), format!("localhost:{p}")]);
    }
    let proxy = HostProxy::start(&args);
    // The relay of the egress tests: its closing order (it shuts down one
    // direction when the other ends) is what made the races show.
    let relay = Relay::start(
        unix(&dir, "relay-egress.sock").parse().unwrap(),
        proxy.egress.clone().unwrap(),
    )
    .await;
    let mut rt = Runtime::start_behind(
        &[],
        &unix(&dir, "runtime.sock"),
        &[
            "--egress",
            &relay.listen.to_string(),
            "--extra-ca",
            &ca.display().to_string(),
        ],
    );
    rt.via(proxy.inbound_tcp());
    let allow: Vec<String> = ports
        .iter()
        .map(|p| format!("allow=localhost:{p}"))
        .collect();
    rt.deploy_ok("fetch", &guest("fetch"), &allow.join("&"))
        .await;

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

    let client = rt.client();
    let mut failures = Vec::new();
    for (url, want) in &cases {
        for _ in 0..ROUNDS {
            let r = client
                .get(format!("{}/fetch/?url={}", rt.url(), urlencode(url)))
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
        rt.log()
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
    let python = PythonOrigin::start();
    let nginx = Nginx::start();
    let dir = temp_dir("cut");
    let ca = dir.join("cas.pem");
    std::fs::write(&ca, python.pki.ca_pem.clone() + &nginx.pki.ca_pem).unwrap();
    let mut args = vec![
        "--inbound".to_string(),
        format!("tcp://127.0.0.1:0={}", unix(&dir, "runtime.sock")),
        "--egress-listen".into(),
        unix(&dir, "egress.sock"),
        "--egress-allow-private".into(),
    ];
    for p in [python.port, nginx.h2_port] {
        args.extend(["--egress-allow".to_string(), format!("localhost:{p}")]);
    }
    let proxy = HostProxy::start(&args);
    // Past the CONNECT answer and the TLS handshake, well inside the body.
    let relay = Relay::cutting(
        unix(&dir, "relay-egress.sock").parse().unwrap(),
        proxy.egress.clone().unwrap(),
        60_000,
    )
    .await;
    let mut rt = Runtime::start_behind(
        &[],
        &unix(&dir, "runtime.sock"),
        &[
            "--egress",
            &relay.listen.to_string(),
            "--extra-ca",
            &ca.display().to_string(),
        ],
    );
    rt.via(proxy.inbound_tcp());
    let allow = format!(
        "allow=localhost:{}&allow=localhost:{}",
        python.port, nginx.h2_port
    );
    rt.deploy_ok("fetch", &guest("fetch"), &allow).await;
    for url in [
        format!("https://localhost:{}/length/200000", python.port),
        format!("https://localhost:{}/chunked/200000", python.port),
        format!("https://localhost:{}/length.bin", nginx.h2_port),
        format!("https://localhost:{}/chunked.shtml", nginx.h2_port),
    ] {
        let (status, body) = rt.get(&format!("/fetch/?url={}", urlencode(&url))).await;
        assert_eq!(
            status,
            502,
            "{url}: a cut answer passed as whole: {} bytes",
            body.len()
        );
    }
}
