//! The `nacre` CLI against real runtimes: trust flags, deploy, guests.

use nacre_tests::{Runtime, TOKEN, guest, nacre, peer_certificate, sha256_hex};

#[tokio::test(flavor = "multi_thread")]
async fn deploy_and_list_with_explicit_trust() {
    let rt = Runtime::start(&[]);
    let url = format!("https://127.0.0.1:{}", rt.addr.port());
    let wasm = guest("hello");
    let wasm_s = wasm.display().to_string();
    let ca = rt.ca_file().unwrap();
    let ca_s = ca.display().to_string();
    let pins = rt.attest_args();
    let with_pins = |args: &[&str]| {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(pins.iter().map(String::as_str));
        nacre(&all)
    };

    // The test CA is not a public root: refused unless trusted explicitly.
    let (ok, _, err) = with_pins(&["deploy", &url, "hello", &wasm_s, "--token", TOKEN]);
    assert!(!ok);
    assert!(err.contains("--root"), "{err}");

    // The certificate names localhost; the URL uses 127.0.0.1.
    let url = rt.url();
    let (ok, out, err) = with_pins(&[
        "deploy", &url, "hello", &wasm_s, "--route", "/hi", "--token", TOKEN, "--root", &ca_s,
    ]);
    assert!(ok, "{err}");
    let info: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(info["sha256"], sha256_hex(&std::fs::read(&wasm).unwrap()));
    assert_eq!(info["route"], "/hi");

    let (ok, _, err) = with_pins(&[
        "deploy", &url, "x", &wasm_s, "--token", "wrong", "--root", &ca_s,
    ]);
    assert!(!ok);
    assert!(err.contains("401"), "{err}");

    let (ok, out, err) = with_pins(&["guests", &url, "--token", TOKEN, "--root", &ca_s]);
    assert!(ok, "{err}");
    let list: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(list[0]["name"], "hello");
}

#[tokio::test(flavor = "multi_thread")]
async fn self_signed_runtime_needs_insecure_and_serves_its_own_certificate() {
    let token_sha = sha256_hex(TOKEN.as_bytes());
    let rt = Runtime::start_raw(&["--admin-token-sha256".into(), token_sha]);

    // The certificate was made in the runtime for --fqdn, and
    // /enclave/config reports its hash.
    let r = rt
        .client()
        .get(format!("{}/enclave/config", rt.url()))
        .send()
        .await
        .unwrap();
    let der = peer_certificate(&r);
    let cfg: serde_json::Value = r.json().await.unwrap();
    assert_eq!(cfg["tls_certificate"], "self-signed");
    assert_eq!(cfg["tls_certificate_sha256"], sha256_hex(&der));
    assert!(
        der.windows(9).any(|w| w == b"localhost"),
        "SAN names the fqdn"
    );

    let url = rt.url();
    let wasm = guest("hello").display().to_string();
    let (ok, _, err) = nacre(&["deploy", &url, "hello", &wasm, "--token", TOKEN]);
    assert!(!ok && err.contains("--insecure"), "{err}");
    let (ok, _, err) = nacre(&[
        "deploy",
        &url,
        "hello",
        &wasm,
        "--token",
        TOKEN,
        "--insecure",
    ]);
    assert!(ok, "{err}");
    assert_eq!(rt.get("/hello").await.0, 200);
}

fn testdata(name: &str) -> String {
    nacre_tests::root()
        .join("attestation/testdata/nitro")
        .join(name)
        .display()
        .to_string()
}

#[test]
fn verify_real_documents_with_exit_codes_and_named_reasons() {
    let doc = testdata("doc_7.bin");
    let (ok, out, err) = nacre(&["verify", &doc, "--at", "2023-09-28T11:08:27Z"]);
    assert!(ok, "{err}");
    let summary: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(summary["kind"], "nitro");
    assert_eq!(summary["timestamp_ms"], 1695899307117u64);
    let pcr0 = summary["pcrs"]["0"].as_str().unwrap().to_string();
    let nonce = summary["nonce"].as_str().unwrap().to_string();

    // Unix seconds work too, and so do matching expectations.
    let (ok, _, err) = nacre(&[
        "verify",
        &doc,
        "--at",
        "1695899307",
        "--nonce",
        &nonce,
        "--pcr",
        &format!("0={pcr0}"),
    ]);
    assert!(ok, "{err}");

    for (args, needle) in [
        (vec!["--at", "1695899307", "--pcr", "0=00"], "PCR0 mismatch"),
        (
            vec!["--at", "1695899307", "--nonce", "00"],
            "nonce mismatch",
        ),
        (vec![], "expired"),
        (vec!["--at", "1695899000"], "not valid before"),
    ] {
        let mut a = vec!["verify", doc.as_str()];
        a.extend(args);
        let (ok, out, err) = nacre(&a);
        assert!(!ok && out.is_empty(), "{a:?}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
        assert!(err.contains(needle), "{a:?}: {err}");
    }
}

#[test]
fn verify_dev_documents_only_with_the_dev_root() {
    let dir = nacre_tests::temp_dir("devroot");
    let signer = nacre_attestation::DevSigner::open(&dir).unwrap();
    let doc = signer
        .sign(nacre_attestation::DocumentRequest::default())
        .unwrap();
    // Base64, as /enclave/attestation serves it.
    let path = dir.join("doc.b64");
    use base64::Engine as _;
    std::fs::write(
        &path,
        base64::engine::general_purpose::STANDARD.encode(&doc),
    )
    .unwrap();
    let p = path.display().to_string();

    let (ok, _, err) = nacre(&["verify", &p]);
    assert!(!ok && err.contains("chain untrusted"), "{err}");
    let root = dir.join("root.pem").display().to_string();
    let (ok, out, err) = nacre(&["verify", &p, "--root", &root]);
    assert!(ok, "{err}");
    let summary: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(summary["kind"], "dev");
    assert!(
        summary["module_id"]
            .as_str()
            .unwrap()
            .starts_with("nacre-dev")
    );
}

#[test]
fn build_prints_the_component_path_last() {
    let krate = nacre_tests::root().join("guest-examples/kv-counter");
    let (ok, out, err) = nacre_tests::nacre(&["build", krate.to_str().unwrap()]);
    assert!(ok, "{err}");
    let last = out.lines().last().expect("a path");
    assert!(last.ends_with("kv_counter.wasm"), "{out}");
    let bytes = std::fs::read(last).unwrap();
    // A component, not a core module: layer 1 in the preamble.
    assert_eq!(&bytes[..8], b"\0asm\x0d\0\x01\0");

    let missing = nacre_tests::temp_dir("nobuild");
    let (ok, _, err) = nacre_tests::nacre(&["build", missing.to_str().unwrap()]);
    assert!(!ok);
    assert!(
        err.contains(missing.to_str().unwrap()) && err.contains("Cargo.toml"),
        "{err}"
    );
}

/// The processes `pid` started, from every thread's `children` list.
fn children_of(pid: u32) -> Vec<u32> {
    let mut kids = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let list = std::fs::read_to_string(task.unwrap().path().join("children")).unwrap();
        kids.extend(list.split_whitespace().map(|k| k.parse::<u32>().unwrap()));
    }
    kids
}

/// Sends SIGKILL to its processes when dropped (a no-op for ended ones).
struct KillOnDrop(Vec<u32>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        for pid in &self.0 {
            if !stopped(*pid) {
                let _ = std::process::Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
        }
    }
}

/// Whether `pid` is gone (or a zombie: it has stopped running).
fn stopped(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
    }
}

/// The README's demo command: it serves the examples through its host
/// proxy, and SIGTERM (not only Ctrl-C) stops the runtime and the proxy
/// with it, instead of leaving them running on the port.
#[tokio::test(flavor = "multi_thread")]
async fn dev_serves_the_examples_and_sigterm_stops_it_all() {
    use std::process::Command;
    use std::time::{Duration, Instant};

    let dir = nacre_tests::temp_dir("nacre-dev");
    let (mut dev, port, banner) = start_dev(&dir);

    // The printed commands work when pasted: the `nacre` they name is the
    // binary the build made, not the replaced one ("... (deleted)").
    assert!(
        !banner.iter().any(|l| l.contains("(deleted)")),
        "{banner:#?}"
    );
    for verb in [" attest ", " guests "] {
        let line = banner
            .iter()
            .find(|l| l.contains(verb) && !l.contains("curl"))
            .unwrap_or_else(|| panic!("no{verb}command in {banner:#?}"));
        let words: Vec<&str> = line.split_whitespace().collect();
        let out = Command::new(words[0]).args(&words[1..]).output().unwrap();
        assert!(
            out.status.success(),
            "{line}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    let client = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    let url = format!("https://127.0.0.1:{port}/hello/world");
    let body = client.get(&url).send().await.unwrap().text().await.unwrap();
    assert!(body.contains("Hello, world"), "{body}");

    // The TCP guest example, with the banner's own socat line (TLS checked
    // against the pinned certificate).
    let socat = banner
        .iter()
        .find(|l| l.contains("socat"))
        .unwrap_or_else(|| panic!("no socat command in {banner:#?}"));
    let out = Command::new("sh")
        .args(["-c", socat.trim()])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "hello over TCP\n",
        "{socat}: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // An acknowledged write reaches the sealed store within about 50 ms
    // plus one snapshot's write (docs/persistence.md); nacre dev's SIGTERM
    // kills its children, so the test waits for a manifest written after
    // the increment. The manifest is the snapshot's last object.
    let before = settled_snapshot(&dir).await;
    let count = incr(&client, port).await;
    let cert = served_certificate(port).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while newest_snapshot(&dir) <= before {
        assert!(Instant::now() < deadline, "no snapshot after the increment");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let kids = children_of(dev.pid());
    // Whatever this test finds, it leaves nothing running behind it.
    let _reaper = KillOnDrop(kids.clone());
    assert_eq!(
        kids.len(),
        3,
        "a runtime, a host proxy and the KMS stand-in: {kids:?}"
    );
    dev.terminate();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = dev
        .wait_exit(Duration::from_secs(10))
        .expect("nacre dev still running 10 s after SIGTERM");
    assert!(status.success(), "nacre dev ended with {status}");
    while !kids.iter().all(|&k| stopped(k)) {
        assert!(
            Instant::now() < deadline,
            "still running after nacre dev's SIGTERM: {kids:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "port {port} still served"
    );

    // Started again in the same directory, the demo's deployment is back:
    // the certificate, and the counter counts on.
    let (mut dev, port, _) = start_dev(&dir);
    let _reaper = KillOnDrop(children_of(dev.pid()));
    assert_eq!(
        served_certificate(port).await,
        cert,
        "the certificate came back"
    );
    let next = incr(&client, port).await;
    let number = |s: &str| -> u64 {
        s.chars()
            .filter(char::is_ascii_digit)
            .collect::<String>()
            .parse()
            .unwrap_or_else(|_| panic!("no count in {s:?}"))
    };
    assert_eq!(number(&next), number(&count) + 1, "{count} then {next}");
    dev.terminate();
    dev.wait_exit(std::time::Duration::from_secs(10));
}

/// The number of the newest sealed manifest in `nacre dev`'s store
/// (`snapshots/ROOT/SEQ`), 0 when none.
fn newest_snapshot(dir: &std::path::Path) -> u64 {
    nacre_tests::sealed::stored(&dir.join("store"), "snapshots")
        .iter()
        .filter_map(|name| name.rsplit('/').next()?.parse().ok())
        .max()
        .unwrap_or(0)
}

/// The newest manifest once none has come for a second: a write started
/// before the next change would otherwise count as one made after it.
async fn settled_snapshot(dir: &std::path::Path) -> u64 {
    let mut newest = newest_snapshot(dir);
    loop {
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        match newest_snapshot(dir) {
            n if n == newest => return n,
            n => newest = n,
        }
    }
}

/// Starts `nacre dev --port 0` in `dir`; the process, the port the banner
/// names (the host proxy bound one the system chose) and the banner.
fn start_dev(dir: &std::path::Path) -> (nacre_cli::process::Supervised, u16, Vec<String>) {
    use nacre_cli::process::{Stderr, Supervised};
    let mut command = std::process::Command::new(nacre_tests::bin("nacre"));
    command
        .args(["dev", "--port", "0", "--tcp-port", "0", "--dir"])
        .arg(dir);
    let mut dev = Supervised::spawn(command, Stderr::Keep { watch: false })
        .unwrap()
        .report_on_panic();
    let mut lines = Vec::new();
    let banner = dev
        .wait_for(std::time::Duration::from_secs(300), |line| {
            if line.starts_with("Press Ctrl-C") {
                return Some(std::mem::take(&mut lines));
            }
            lines.push(line.to_string());
            None
        })
        .unwrap_or_else(|why| panic!("nacre dev printed no banner: {why}"));
    let port: u16 = banner
        .iter()
        .find_map(|l| {
            let at = l.find("https://localhost:")? + "https://localhost:".len();
            let digits: String = l[at..].chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        })
        .unwrap_or_else(|| panic!("no https://localhost:PORT in the banner {banner:#?}"));
    assert_ne!(port, 0, "{banner:#?}");
    (dev, port, banner)
}

/// `POST /kv-counter/incr` on `port`: the count it answers.
async fn incr(client: &reqwest::Client, port: u16) -> String {
    let url = format!("https://127.0.0.1:{port}/kv-counter/incr");
    let r = client.post(url).send().await.unwrap();
    r.text().await.unwrap()
}

/// The SHA-256 of the certificate served on `port`.
async fn served_certificate(port: u16) -> String {
    let client = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .tls_info(true)
        .build()
        .unwrap();
    let r = client
        .get(format!("https://127.0.0.1:{port}/enclave"))
        .send()
        .await
        .unwrap();
    nacre_tests::sha256_hex(&nacre_tests::peer_certificate(&r))
}
