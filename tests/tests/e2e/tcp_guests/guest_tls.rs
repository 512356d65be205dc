//! Guests doing their own TLS (rustls inside the component): out to
//! Debian's nginx through a raw tunnel, with the host diverting and cutting
//! that tunnel; and in, as a `tls=guest` TCP guest whose key its own
//! attestation document binds, with the host ending the client's TLS in a
//! relay of its own.

use std::process::Command;
use std::time::{Duration, Instant};

use nacre_tests::net::Relay;
use nacre_tests::origins::Nginx;
use nacre_tests::{TestPki, guest, nacre, sha256_hex, temp_dir};
use nacre_transport::Address;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use super::stack::{ECHO, Stack};

/// The probe's `tls-get` line for nginx's `path`, trusting nginx's CA only.
fn tls_get(nginx: &Nginx, path: &str) -> String {
    let ca = CertificateDer::from_pem_slice(nginx.pki.ca_pem.as_bytes()).expect("nginx's CA");
    format!(
        "tls-get localhost:{} {path} {}",
        nginx.h1_port,
        hex::encode(ca.as_ref())
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_guest_with_its_own_tls_reaches_nginx_and_a_diverted_or_cut_tunnel_fails() {
    let nginx = Nginx::start();
    // The host's own server for the same name, certified by a CA the guest
    // does not trust (as a host holding a certificate for the name would be
    // to a guest that pins its server's CA).
    let impostor = Nginx::start();
    let s = Stack::start(&[nginx.h1_port]).await;

    let got = s.s_client(s.probe, &[&tls_get(&nginx, "/length.bin")], 1);
    let answer = got.first().cloned().unwrap_or_default();
    let size: usize = answer
        .strip_prefix("HTTP/1.1 200 OK; ")
        .and_then(|r| r.strip_suffix(" bytes"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("tls-get answered {answer:?}\n{}", s.rt.log()));
    assert!(size > Nginx::SIZE, "{answer}");
    assert!(nginx.access_log().contains("GET /length.bin"));
    // The host saw where the guest went, not what it asked.
    let seen = s.hijacker.recorded();
    let connect = format!("CONNECT localhost:{}", nginx.h1_port);
    assert!(
        contains(&seen, connect.as_bytes()),
        "no CONNECT on the link"
    );
    assert!(
        !contains(&seen, b"GET /length.bin"),
        "the request crossed in the clear"
    );

    // The host sends the tunnel to its own server: the handshake fails in
    // the guest, and not a byte of the request reaches the impostor.
    let to_impostor = format!("127.0.0.1:{}", impostor.h1_port).parse().unwrap();
    s.hijacker.divert(Some(to_impostor));
    let got = s.s_client(s.probe, &[&tls_get(&nginx, "/length.bin")], 1);
    let answer = got.first().cloned().unwrap_or_default();
    assert!(
        answer.starts_with("error") && answer.contains("certificate"),
        "a diverted tunnel: {answer:?}"
    );
    assert!(
        !impostor.access_log().contains("GET"),
        "the impostor was asked"
    );

    // The host cuts the tunnel after 50 KB of the response: the guest's
    // read fails, never a clean end of a shorter body.
    let nginx_addr = Address::Tcp {
        host: "127.0.0.1".into(),
        port: nginx.h1_port,
    };
    let listen = Address::Tcp {
        host: "127.0.0.1".into(),
        port: 0,
    };
    let cutter = Relay::cutting(listen, nginx_addr, 50_000).await;
    s.hijacker.divert(Some(cutter.tcp()));
    let got = s.s_client(s.probe, &[&tls_get(&nginx, "/length.bin")], 1);
    let answer = got.first().cloned().unwrap_or_default();
    assert!(
        answer.starts_with("error") && answer.contains("close_notify"),
        "a cut tunnel: {answer:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tls_guest_s_key_is_pinned_by_its_attestation_and_a_relay_ending_tls_is_caught() {
    let s = Stack::start(&[]).await;
    let info =
        s.rt.deploy_ok("echo", &guest("tls-echo"), &format!("tcp={ECHO}&tls=guest"))
            .await;
    assert_eq!(info.tcp.map(|t| t.tls), Some("guest".to_string()));
    let code = sha256_hex(&std::fs::read(guest("tls-echo")).unwrap());
    let root = s.rt.dev_root.join("root.pem");
    let dir = temp_dir("tls-guest");

    // Python's ssl (OpenSSL) takes any certificate: the document decides.
    let nonce = hex::encode([0x11u8; 20]);
    let direct = python_attest(s.echo, &nonce, Duration::from_secs(30));
    assert_eq!(direct.echoed, "hello over the guest's own TLS");
    let root = root.to_str().unwrap();
    let verify = |document: &str, nonce: &str, data: &str| {
        let path = dir.join("doc.b64");
        std::fs::write(&path, document).unwrap();
        let path = path.to_str().unwrap();
        nacre(&[
            "verify", path, "--root", root, "--nonce", nonce, "--guest", &code, "--data", data,
        ])
    };
    let (ok, out, err) = verify(&direct.document, &nonce, &direct.cert_sha256);
    assert!(ok, "the guest's own document: {out}{err}");
    // The key was made inside the guest: the runtime logged the guest's
    // own line naming it.
    assert!(
        s.rt.log()
            .contains(&format!("certificate sha256 {}", direct.cert_sha256))
    );
    // The checker refuses what it must: another nonce, other data.
    let other = hex::encode([7u8; 20]);
    assert!(
        !verify(&direct.document, &other, &direct.cert_sha256).0,
        "a stale nonce passed"
    );
    assert!(
        !verify(&direct.document, &nonce, &other).0,
        "other data passed"
    );

    // The host ends the client's TLS in a relay with a certificate of its
    // own and opens its own TLS to the guest (socat, both ways). Every byte
    // passes, and the guest's document with the client's nonce comes back,
    // but it binds the guest's certificate, not the relay's.
    let pki = TestPki::generate();
    let (mitm, _relay) = socat_tls_relay(&pki, s.echo);
    let nonce = hex::encode([0x22u8; 20]);
    let relayed = python_attest(mitm, &nonce, Duration::from_secs(10));
    assert_eq!(relayed.echoed, "hello over the guest's own TLS");
    assert_ne!(relayed.cert_sha256, direct.cert_sha256);
    let (ok, out, err) = verify(&relayed.document, &nonce, &relayed.cert_sha256);
    assert!(!ok, "a relay ending TLS passed: {out}");
    assert!(
        err.contains(&format!("the guest's data is {}", direct.cert_sha256)),
        "{err}"
    );
}

/// What a client learned on one TLS connection to a `tls-echo` guest.
struct Attested {
    cert_sha256: String,
    document: String,
    echoed: String,
}

/// One connection with Python's `ssl`: the served certificate's SHA-256,
/// the document for `nonce`, an echoed line, and a 100,000-byte line
/// echoed whole. Retries until `limit`
/// (the guest binds once deployed).
fn python_attest(at: std::net::SocketAddr, nonce: &str, limit: Duration) -> Attested {
    const CLIENT: &str = r#"
import hashlib, socket, ssl, sys
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10) as raw:
    with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
        der = tls.getpeercert(binary_form=True)
        f = tls.makefile("rwb")
        f.write(("attest %s\nhello over the guest's own TLS\n" % sys.argv[3]).encode())
        f.write(b"x" * 100000 + b"\n")
        f.flush()
        print(hashlib.sha256(der).hexdigest())
        print(f.readline().decode().strip())
        print(f.readline().decode().strip())
        print(len(f.readline().strip()))
"#;
    let deadline = Instant::now() + limit;
    loop {
        let out = Command::new("python3")
            .args([
                "-c",
                CLIENT,
                &at.ip().to_string(),
                &at.port().to_string(),
                nonce,
            ])
            .output()
            .expect("python3");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let lines: Vec<&str> = text.lines().collect();
        if out.status.success() && lines.len() == 4 {
            // A line longer than rustls' 64 KiB of buffers comes back whole.
            assert_eq!(lines[3], "100000", "a long line's echo");
            return Attested {
                cert_sha256: lines[0].to_string(),
                document: lines[1].to_string(),
                echoed: lines[2].to_string(),
            };
        }
        assert!(
            Instant::now() < deadline,
            "python's TLS client at {at}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// `socat` ending TLS with `pki`'s certificate and opening its own TLS to
/// `to`: a host's relay that reads everything. Its address, and the child
/// (killed on drop).
fn socat_tls_relay(pki: &TestPki, to: std::net::SocketAddr) -> (std::net::SocketAddr, Killed) {
    let (child, port) = pki
        .socat_tls_listener(&format!("OPENSSL:{to},verify=0"))
        .expect("socat");
    (
        std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Killed(child),
    )
}

/// A child process killed when dropped.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
