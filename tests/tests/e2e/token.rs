//! The admin token goes only to the attested enclave: `nacre deploy` and
//! `nacre guests` attest the server first and refuse, before the token
//! leaves, anything that is not the pinned enclave on this very TLS
//! certificate, however well its certificate chains.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use nacre_tests::fleet::Forwarder;
use nacre_tests::net::{HttpsServer, TlsRelay, contains};
use nacre_tests::{Runtime, TOKEN, TestPki, guest, nacre};

/// An HTTPS server with a certificate from a CA the client trusts, for
/// the enclave's name, that is not the enclave: it answers
/// `/enclave/attestation` with a genuine document of the real enclave
/// made for another nonce (all an impostor can have), anything else with
/// `[]`, and records every request it gets, headers included.
struct Impostor {
    server: HttpsServer,
    requests: Arc<Mutex<Vec<String>>>,
}

impl Impostor {
    async fn start(replayed: String) -> Impostor {
        let requests = Arc::new(Mutex::new(Vec::new()));
        let log = requests.clone();
        let server = HttpsServer::start(&["http/1.1"], move |req| {
            let (log, replayed) = (log.clone(), replayed.clone());
            async move {
                let mut seen = format!("{} {}", req.method(), req.uri());
                for (name, value) in req.headers() {
                    seen.push_str(&format!("\n{name}: {}", value.to_str().unwrap_or("?")));
                }
                log.lock().unwrap().push(seen);
                let body = if req.uri().path() == "/enclave/attestation" {
                    replayed
                } else {
                    "[]".to_string()
                };
                hyper::Response::new(Full::new(Bytes::from(body)))
            }
        })
        .await;
        Impostor { server, requests }
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

/// `nacre VERB URL ... --token TOKEN` plus `extra`.
fn admin(verb: &str, url: &str, extra: &[&str]) -> (bool, String, String) {
    let wasm = guest("hello").display().to_string();
    let mut args = vec![verb, url];
    if verb == "deploy" {
        args.extend(["hello", wasm.as_str()]);
    }
    args.extend(["--token", TOKEN]);
    args.extend(extra);
    nacre(&args)
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// `nacre deploy` and `nacre guests` with `trust` both fail, naming
/// `needle` and saying the token was not sent.
fn both_refused(url: &str, trust: &[String], needle: &str) {
    for verb in ["deploy", "guests"] {
        let (ok, out, err) = admin(verb, url, &strs(trust));
        assert!(!ok, "{verb} sent the token: {out}");
        assert!(
            err.contains(needle) && err.contains("admin token was not sent"),
            "{verb}: {err}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_trusted_certificate_that_is_not_the_enclave_never_gets_the_token() {
    let rt = Runtime::start(&[]);
    let (status, replayed) = rt
        .get(&format!("/enclave/attestation?nonce={}", "ab".repeat(20)))
        .await;
    assert_eq!(status, 200, "{replayed}");
    let fake = Impostor::start(replayed).await;
    let url = format!("https://localhost:{}", fake.server.port);
    let mut trust = vec![
        "--root".to_string(),
        fake.server.pki.ca_file().display().to_string(),
    ];
    trust.extend(rt.attest_args());

    both_refused(&url, &trust, "nonce mismatch");
    let seen = fake.requests();
    assert_eq!(
        seen.len(),
        2,
        "one attestation request per command: {seen:#?}"
    );
    for request in &seen {
        assert!(
            request.starts_with("GET /enclave/attestation?nonce="),
            "{request}"
        );
        let lower = request.to_ascii_lowercase();
        assert!(
            !lower.contains("authorization") && !request.contains(TOKEN),
            "{request}"
        );
    }

    // The recording does catch a token when one is sent: --insecure skips
    // attestation, and then the impostor gets it.
    let (ok, _, err) = admin("guests", &url, &["--insecure"]);
    assert!(ok && err.contains("not attesting"), "{err}");
    let last = fake.requests().pop().unwrap_or_default();
    assert!(
        last.contains(&format!("authorization: Bearer {TOKEN}")),
        "{last}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_relay_terminating_tls_in_front_of_the_enclave_never_gets_the_token() {
    let rt = Runtime::start(&[]);
    let pki = TestPki::generate();
    let relay = TlsRelay::start(rt.addr, rt.roots(), pki.server_config(&["http/1.1"])).await;
    let url = format!("https://localhost:{}", relay.addr.port());
    let mut trust = vec!["--root".to_string(), pki.ca_file().display().to_string()];
    trust.extend(rt.attest_args());

    both_refused(&url, &trust, "terminates TLS");
    // The relay read the attestation requests in plaintext, and nothing
    // else: no token.
    let sent = relay.from_clients();
    assert!(contains(&sent, b"GET /enclave/attestation?nonce="));
    let lower = sent.to_ascii_lowercase();
    assert!(
        !contains(&lower, b"authorization") && !contains(&sent, TOKEN.as_bytes()),
        "{}",
        String::from_utf8_lossy(&sent)
    );
    assert_eq!(rt.get("/hello").await.0, 404, "nothing was deployed");

    // The same relay reads the token of a client that does not attest.
    let (ok, _, err) = admin("deploy", &url, &["--insecure"]);
    assert!(ok, "{err}");
    assert!(contains(&relay.from_clients(), TOKEN.as_bytes()));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_real_enclave_gets_the_token_only_with_the_right_image_pin() {
    let rt = Runtime::start(&[]);
    let url = rt.url();
    let ca = rt.ca_file().unwrap().display().to_string();
    let pins = rt.attest_args();
    let root = pins[1].clone();
    let pcr0 = pins[3].trim_start_matches("0=").to_string();

    // No pin: refused before any connection, naming the fixes.
    let (ok, _, err) = admin("deploy", &url, &["--root", &ca]);
    assert!(!ok, "deployed without a pin");
    for fix in ["--pcr 0=HEX", "--pcrs FILE", "--insecure"] {
        assert!(err.contains(fix), "{err}");
    }
    // Another image: refused naming PCR0 and the value the enclave has.
    let wrong = format!("0={}", "00".repeat(48));
    let (ok, _, err) = admin(
        "deploy",
        &url,
        &["--root", &ca, "--attestation-root", &root, "--pcr", &wrong],
    );
    assert!(!ok, "deployed with a wrong PCR0");
    assert!(
        err.contains("PCR0 mismatch") && err.contains(&pcr0),
        "{err}"
    );
    // The AWS root instead of the dev root: the chain fails, naming the flag.
    let pin = format!("0={pcr0}");
    let (ok, _, err) = admin("deploy", &url, &["--root", &ca, "--pcr", &pin]);
    assert!(
        !ok && err.contains("chain untrusted") && err.contains("--attestation-root"),
        "{err}"
    );
    assert_eq!(rt.get("/hello").await.0, 404, "nothing was deployed");

    // The right pin: deployed.
    let mut trust = vec!["--root", ca.as_str()];
    trust.extend(strs(&pins));
    let (ok, out, err) = admin("deploy", &url, &trust);
    assert!(ok, "{err}");
    assert!(out.contains("\"name\": \"hello\""), "{out}");
    assert_eq!(rt.get("/hello").await.0, 200);

    // The same pin as nitro-cli describe-eif prints it.
    let file = nacre_tests::temp_dir("pcrs").join("describe-eif.json");
    let eif = serde_json::json!({
        "EifVersion": 4,
        "Measurements": {
            "HashAlgorithm": "Sha384 { ... }",
            "PCR0": pcr0,
            "PCR1": "00".repeat(48),
            "PCR2": "00".repeat(48),
        },
    });
    std::fs::write(&file, eif.to_string()).unwrap();
    let file = file.display().to_string();
    let (ok, out, err) = admin(
        "guests",
        &url,
        &["--root", &ca, "--attestation-root", &root, "--pcrs", &file],
    );
    assert!(ok, "{err}");
    assert!(out.contains("\"hello\""), "{out}");
}

/// The name leads to the enclave for the attestation and elsewhere for the
/// next connection (DNS or a load balancer the host controls): the
/// connection that carries the token must itself present the attested
/// certificate, or it gets nothing.
#[tokio::test(flavor = "multi_thread")]
async fn a_name_that_switches_servers_after_the_attestation_never_gets_the_token() {
    let rt = Runtime::start(&[]);
    let fake = Impostor::start(String::new()).await;
    let name = Forwarder::start().await;
    // Round robin: the first connection reaches the enclave, the next the
    // impostor.
    name.spread_over(&[
        SocketAddr::from(([127, 0, 0, 1], fake.server.port)),
        rt.addr,
    ]);
    // Both certificates chain to roots the client trusts.
    let bundle = nacre_tests::temp_dir("cas").join("cas.pem");
    let cas = [rt.ca_file().unwrap(), fake.server.pki.ca_file()]
        .map(|f| std::fs::read_to_string(f).unwrap())
        .concat();
    std::fs::write(&bundle, cas).unwrap();
    let mut trust = vec!["--root".to_string(), bundle.display().to_string()];
    trust.extend(rt.attest_args());
    let url = format!("https://localhost:{}", name.port);

    let (ok, out, err) = admin("guests", &url, &strs(&trust));
    assert!(!ok, "the token went to the second server: {out}");
    assert!(
        err.contains("not the one the enclave attested") && err.contains("terminates TLS"),
        "{err}"
    );
    assert!(fake.requests().is_empty(), "{:#?}", fake.requests());
}
