//! Certificates from an ACME CA, obtained inside the enclave: Pebble (Let's
//! Encrypt's test server) validates TLS-ALPN-01 through the host proxy's
//! public port, the ACME client's traffic leaves through the egress proxy
//! with TLS inside the runtime, and the system's curl and openssl check
//! what is served.

mod deployment;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use nacre_cli::process::{Stderr, Supervised};
use nacre_tests::fleet::{Forwarder, LeaderName, Member, MemberSpec, SyncPorts, within};
use nacre_tests::net::{HostProxy, Relay, closed_port, contains, unix_in, wait_for_bound_ports};
use nacre_tests::pebble::{Pebble, Planned};
use nacre_tests::{Runtime, bin, guest, nacre, temp_dir};

/// The name certificates are ordered for; Pebble's DNS answers 127.0.0.1.
const FQDN: &str = "app.nacre.test";

/// One enclave behind its host proxy, the public side on `public`'s port,
/// egress through a recording relay, ACME flags pointing at Pebble's
/// `directory` on `pebble_port`, trusting `extra_ca`.
struct Enclave {
    rt: Runtime,
    proxy: HostProxy,
    egress: Relay,
    /// The public port (held by the test since before Pebble was told
    /// it), forwarding to the host proxy's.
    public: Forwarder,
}

async fn enclave(
    (pebble_port, extra_ca): (u16, &Path),
    public: Forwarder,
    directory: &str,
    extra: &[&str],
) -> Enclave {
    let dir = temp_dir("acme");
    let proxy = HostProxy::start(&[
        "--inbound".into(),
        format!("tcp://127.0.0.1:0={}", unix_in(&dir, "runtime.sock")),
        "--egress-listen".into(),
        unix_in(&dir, "egress.sock"),
        "--egress-allow-private".into(),
        "--egress-allow".into(),
        format!("localhost:{pebble_port}"),
    ]);
    let egress = Relay::start(
        unix_in(&dir, "relay.sock").parse().expect("address"),
        proxy.egress.clone().expect("an egress listener"),
    )
    .await;
    let relay = egress.listen.to_string();
    let ca = extra_ca.display().to_string();
    let mut flags = vec![
        "--fqdn",
        FQDN,
        "--acme-directory",
        directory,
        "--acme-contact",
        "ops@nacre.test",
        "--extra-ca",
        &ca,
        "--egress",
        &relay,
    ];
    flags.extend_from_slice(extra);
    let mut rt = Runtime::start_program(
        &bin("nacre-runtime"),
        &[],
        &unix_in(&dir, "runtime.sock"),
        &flags,
        false,
    );
    rt.via(proxy.inbound_tcp());
    public.spread_over(&[proxy.inbound_tcp()]);
    Enclave {
        rt,
        proxy,
        egress,
        public,
    }
}

/// `/enclave/config`; None while the listener refuses clients.
async fn config(rt: &Runtime) -> Option<serde_json::Value> {
    let r = rt
        .client()
        .get(format!("{}/enclave/config", rt.url()))
        .send()
        .await
        .ok()?;
    r.json().await.ok()
}

/// `/enclave/config`'s ACME account URI; None while there is none.
async fn account(rt: &Runtime) -> Option<String> {
    config(rt).await?["acme_account"]
        .as_str()
        .map(str::to_string)
}

/// `/enclave/config`'s certificate source and SHA-256.
async fn served(rt: &Runtime) -> (String, String) {
    try_served(rt).await.expect("/enclave/config answers")
}

/// Like [`served`]; None while the listener refuses clients.
async fn try_served(rt: &Runtime) -> Option<(String, String)> {
    let config = config(rt).await?;
    let field = |k: &str| config[k].as_str().unwrap_or_default().to_string();
    Some((field("tls_certificate"), field("tls_certificate_sha256")))
}

/// How long until `rt` serves a CA's certificate; fails past `limit`.
async fn until_acme(rt: &Runtime, limit: Duration, what: &str) -> Duration {
    within(limit, what, || async {
        try_served(rt)
            .await
            .is_some_and(|(source, _)| source == "acme")
    })
    .await
}

/// Waits until `rt`'s log holds `text`; fails past `limit`.
async fn until_logged(rt: &Runtime, limit: Duration, text: &str) {
    within(limit, &format!("{text:?} logged"), || async {
        rt.log().contains(text)
    })
    .await;
}

/// Waits until `rt` shows the ACME account `uri` in `/enclave/config`
/// and has logged it.
async fn until_account(rt: &Runtime, uri: &str) {
    within(
        Duration::from_secs(10),
        "the account shown and logged",
        || async { account(rt).await.as_deref() == Some(uri) && rt.log().contains(uri) },
    )
    .await;
}

/// The system's curl to `https://FQDN:PORT/enclave` trusting only `root`:
/// whether it verified, and what it printed.
fn curl_verified(root: &Path, port: u16) -> (bool, String) {
    let out = Command::new("curl")
        .args(["--silent", "--show-error", "--cacert"])
        .arg(root)
        .arg("--resolve")
        .arg(format!("{FQDN}:{port}:127.0.0.1"))
        .arg(format!("https://{FQDN}:{port}/enclave"))
        .output()
        .expect("curl runs");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// `openssl s_client` offering `alpn` to `port`: what it printed.
fn s_client(port: u16, alpn: &str) -> String {
    let out = Command::new("openssl")
        .args(["s_client", "-connect"])
        .arg(format!("127.0.0.1:{port}"))
        .args(["-servername", FQDN, "-alpn", alpn])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("openssl runs");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A certificate from Pebble: curl verifies it against Pebble's root
/// without -k, `nacre attest` binds it, the ACME path shows the host only
/// ciphertext, and renewal swaps in a new one while a client keeps its
/// connection and goes on making requests.
#[tokio::test(flavor = "multi_thread")]
async fn a_certificate_from_the_ca_is_served_attested_and_renewed_under_a_live_connection() {
    let public = Forwarder::held();
    let pebble = Pebble::start(public.port).await;
    let directory = pebble.directory();
    let hello = guest("hello").display().to_string();
    let boot = format!("hello={hello}");
    let e = enclave(
        (pebble.port, &pebble.extra_ca()),
        public,
        &directory,
        &["--renew-after", "15s", "--wait-for-app", "--guest", &boot],
    )
    .await;

    let took = until_acme(&e.rt, Duration::from_secs(60), "a certificate from the CA").await;
    eprintln!("certificate issued and served {took:?} after the runtime started");
    let root = pebble.root_file().await;
    let (ok, out) = curl_verified(&root, e.public.port);
    assert!(ok, "curl did not verify the CA's certificate: {out}");
    assert!(out.contains("enclave"), "{out}");
    assert_eq!(pebble.issued(), 1, "{}", pebble.log());
    assert!(
        e.rt.log().contains("agreeing to the CA's terms of service"),
        "{}",
        e.rt.log()
    );
    // The account's URI, which a CAA accounturi names, is in
    // /enclave/config and the log; its key is in neither.
    let uri = account(&e.rt)
        .await
        .expect("the account in /enclave/config");
    assert!(
        uri.starts_with(&format!("https://localhost:{}/", pebble.port)),
        "{uri}"
    );
    assert!(e.rt.log().contains(&uri), "{}", e.rt.log());
    let config = e.rt.get("/enclave/config").await.1;
    assert!(!config.contains("key_pkcs8"), "{config}");

    // The document binds the certificate served.
    let (_, first) = served(&e.rt).await;
    let dev_root = e.rt.dev_root.join("root.pem").display().to_string();
    let (ok, out, err) = nacre(&["attest", &e.rt.url(), "--root", &dev_root]);
    assert!(ok, "{err}");
    assert!(out.contains(&first), "{out}");

    // Everything the ACME client sent and got crossed the host as
    // ciphertext: only the CONNECT line names where it went.
    let recorded = e.egress.recorded();
    assert!(
        contains(
            &recorded,
            format!("CONNECT localhost:{}", pebble.port).as_bytes()
        ),
        "the ACME traffic did not go through the egress proxy"
    );
    for plain in [
        &b"sign-me-up"[..],
        b"order-plz",
        b"identifiers",
        FQDN.as_bytes(),
        b"BEGIN CERTIFICATE",
        b"ops@nacre.test",
    ] {
        assert!(
            !contains(&recorded, plain),
            "the host saw {:?} in the clear",
            String::from_utf8_lossy(plain)
        );
    }

    // One client keeps its connection open and makes requests while the
    // certificate is renewed under it.
    let client =
        e.rt.client_builder()
            .http1_only()
            .pool_max_idle_per_host(1)
            .build()
            .expect("client");
    let started = Instant::now();
    let mut on_that_connection = std::collections::BTreeSet::new();
    let mut renewed = None;
    while started.elapsed() < Duration::from_secs(90) {
        let r = client
            .get(format!("{}/hello/", e.rt.url()))
            .send()
            .await
            .expect("a request on the open connection");
        assert_eq!(r.status(), 200);
        on_that_connection.insert(nacre_tests::sha256_hex(&nacre_tests::peer_certificate(&r)));
        let (source, now) = served(&e.rt).await;
        if now != first {
            assert_eq!(source, "acme");
            renewed = Some(now);
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let renewed = renewed.expect("no renewal within 90 s with --renew-after 15s");
    for _ in 0..5 {
        let r = client
            .get(format!("{}/hello/", e.rt.url()))
            .send()
            .await
            .expect("the open connection still serves after the renewal");
        assert_eq!(r.status(), 200);
        on_that_connection.insert(nacre_tests::sha256_hex(&nacre_tests::peer_certificate(&r)));
    }
    assert_eq!(
        on_that_connection.into_iter().collect::<Vec<_>>(),
        std::slice::from_ref(&first),
        "the open connection changed certificates: it was not kept"
    );
    assert!(pebble.issued() >= 2, "{}", pebble.log());
    // New connections get the new certificate, curl still verifies it, and
    // documents bind it from now on.
    let (ok, out) = curl_verified(&root, e.public.port);
    assert!(ok, "{out}");
    let (ok, out, err) = nacre(&["attest", &e.rt.url(), "--root", &dev_root]);
    assert!(ok, "{err}");
    let latest = served(&e.rt).await.1;
    assert!(
        out.contains(&latest) && latest != first,
        "{out}\nrenewed to {renewed}, serving {latest}"
    );
    drop(e.proxy);
}

/// The CA cannot validate (a server nobody here wrote answers its
/// connection with another certificate), the directory is unreachable, or
/// the CA refuses the name: each is logged with what to fix, the runtime
/// keeps serving its self-signed certificate, nothing is issued. With
/// --wait-for-app the listener stays closed to clients meanwhile; a client
/// asking for acme-tls/1 never gets a certificate when no challenge is
/// open.
#[tokio::test(flavor = "multi_thread")]
async fn failed_orders_are_logged_and_the_certificate_held_keeps_serving() {
    // Pebble's validation reaches openssl s_server, not the enclave. It
    // binds a port of its own; the test reads which.
    let pki = nacre_tests::TestPki::generate();
    let mut command = Command::new("openssl");
    command
        .args(["s_server", "-quiet", "-accept", "127.0.0.1:0"])
        .arg("-cert")
        .arg(pki.dir.join("cert.pem"))
        .arg("-key")
        .arg(pki.dir.join("key.pem"))
        .args(["-alpn", "acme-tls/1"])
        .stdin(std::process::Stdio::piped());
    // Killed when the test ends.
    let wrong =
        Supervised::spawn(command, Stderr::Keep { watch: false }).expect("openssl s_server");
    let wrong_port = wait_for_bound_ports(wrong.pid(), 1, 0, Duration::from_secs(30)).tcp[0];
    let pebble = Pebble::start(wrong_port).await;
    let directory = pebble.directory();
    let e = enclave(
        (pebble.port, &pebble.extra_ca()),
        Forwarder::held(),
        &directory,
        &[],
    )
    .await;

    until_logged(&e.rt, Duration::from_secs(60), "could not validate").await;
    let log = e.rt.log();
    assert!(
        log.contains(&format!("the CA could not validate {FQDN} by tls-alpn-01"))
            && log.contains("still serving the one held")
            && log.contains("retry_in"),
        "{log}"
    );
    let (source, _) = served(&e.rt).await;
    assert_eq!(source, "self-signed");
    assert_eq!(e.rt.get("/enclave").await.0, 200);
    assert_eq!(pebble.issued(), 0);

    // The self-signed certificate names the FQDN and lives 90 days.
    let text = s_client(e.public.port, "h2");
    assert!(text.contains(&format!("CN = {FQDN}")), "{text}");
    // acme-tls/1 alone with no challenge open: no certificate at all.
    let text = s_client(e.public.port, "acme-tls/1");
    assert!(
        !text.contains("BEGIN CERTIFICATE") && text.contains("alert"),
        "{text}"
    );

    // An unreachable directory: a port held where nothing listens.
    let (nowhere_port, _nowhere) = closed_port();
    let nowhere = format!("https://localhost:{nowhere_port}/dir");
    let unreachable = enclave(
        (pebble.port, &pebble.extra_ca()),
        Forwarder::held(),
        &nowhere,
        &[],
    )
    .await;
    until_logged(&unreachable.rt, Duration::from_secs(30), "not renewed").await;
    let log = unreachable.rt.log();
    assert!(
        log.contains("check --acme-directory") && log.contains(&nowhere),
        "{log}"
    );
    assert_eq!(served(&unreachable.rt).await.0, "self-signed");

    // A name the CA refuses to issue for.
    let refused = enclave(
        (pebble.port, &pebble.extra_ca()),
        Forwarder::held(),
        &directory,
        &["--fqdn", "nacre_test.invalid"],
    )
    .await;
    until_logged(&refused.rt, Duration::from_secs(30), "not renewed").await;
    let log = refused.rt.log();
    assert!(log.contains("opening an order"), "{log}");
    assert_eq!(served(&refused.rt).await.0, "self-signed");

    // --wait-for-app: while the CA cannot validate, clients get no
    // certificate at all (not the self-signed one).
    let hello = guest("hello").display().to_string();
    let boot = format!("hello={hello}");
    let gated = enclave(
        (pebble.port, &pebble.extra_ca()),
        Forwarder::held(),
        &directory,
        &["--wait-for-app", "--guest", &boot],
    )
    .await;
    until_logged(&gated.rt, Duration::from_secs(60), "could not validate").await;
    let text = s_client(gated.public.port, "http/1.1");
    assert!(!text.contains("BEGIN CERTIFICATE"), "{text}");
    assert!(gated.rt.log().contains("open for the CA's validation only"));
    assert_eq!(pebble.issued(), 0);
}

/// A runtime started before its CA is up (the host proxy finds nobody at
/// the directory's port): the first attempts fail without reaching the CA
/// and are retried within seconds, so the certificate arrives soon after
/// the CA does, not at the five-minute back-off a refusal earns.
#[tokio::test(flavor = "multi_thread")]
async fn a_ca_that_comes_up_late_is_tried_again_within_seconds() {
    let public = Forwarder::held();
    let plan = Planned::new(public.port);
    let directory = plan.directory();
    let e = enclave((plan.port, &plan.extra_ca()), public, &directory, &[]).await;
    until_logged(&e.rt, Duration::from_secs(30), "not renewed").await;
    let log = e.rt.log();
    assert!(
        log.contains("the CA did not answer") && log.contains("retry_in=10s"),
        "{log}"
    );
    assert_eq!(served(&e.rt).await.0, "self-signed");

    tokio::time::sleep(Duration::from_secs(2)).await;
    let pebble = plan.start().await;
    let took = until_acme(
        &e.rt,
        Duration::from_secs(30),
        "a certificate from the CA that came up late",
    )
    .await;
    eprintln!("certificate served {took:?} after the CA started");
    assert_eq!(pebble.issued(), 1, "{}", pebble.log());
}

/// Without a CA the runtime's own certificate names --fqdn (CN and SAN),
/// lives at most 398 days, and is replaced before it expires: here, with
/// --renew-after 2s, under a client that keeps its connection.
#[tokio::test(flavor = "multi_thread")]
async fn the_self_signed_certificate_names_the_fqdn_and_is_renewed() {
    let rt = Runtime::start_raw(&[
        "--fqdn".into(),
        FQDN.into(),
        "--renew-after".into(),
        "2s".into(),
    ]);
    let (source, first) = served(&rt).await;
    assert_eq!(source, "self-signed");
    let text = s_client(rt.addr.port(), "http/1.1");
    assert!(text.contains(&format!("CN = {FQDN}")), "{text}");
    let pem = &text[text.find("-----BEGIN CERTIFICATE").expect("a certificate")..];
    let der =
        <rustls_pki_types::CertificateDer as rustls_pki_types::pem::PemObject>::from_pem_slice(
            pem.as_bytes(),
        )
        .expect("PEM");
    let (_, cert) = x509_parser::parse_x509_certificate(&der).expect("X.509");
    let days =
        (cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp()) / 86400;
    assert!(days <= 398, "lives {days} days");
    let took = within(Duration::from_secs(30), "a renewed certificate", || async {
        served(&rt).await.1 != first
    })
    .await;
    eprintln!("self-signed certificate renewed {took:?} after it was first read");
    assert_eq!(served(&rt).await.0, "self-signed");
    // Once per two seconds, not in a loop.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let renewals = rt.log().matches("certificate renewed").count();
    assert!(
        (1..=2).contains(&renewals),
        "{renewals} renewals: {}",
        rt.log()
    );
}
