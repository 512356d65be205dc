//! Helpers for the end-to-end tests: build the binaries and guests, start
//! a real `nacre-runtime`, and talk to it over real TLS.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use nacre_cli::guest_build::{build_guests, cargo};

pub mod fleet;
pub mod forwarder;
mod inproc;
pub mod kms;
pub mod layout;
pub mod linearizable;
pub mod net;
pub mod origins;
pub mod pebble;
mod runtime;
pub mod sealed;

pub use runtime::{Runtime, TOKEN};

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Path of a workspace binary, built (once per test process) from the
/// current sources so a test never runs a stale binary.
pub fn bin(name: &str) -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    let dir = BUILT.get_or_init(|| {
        // target/debug/deps/e2e-HASH -> target/debug (tests);
        // target/release/nacre-bench -> target/release (benchmarks).
        let exe = std::env::current_exe().expect("test binary path");
        let mut dir = exe.parent().expect("target dir");
        if dir.ends_with("deps") {
            dir = dir.parent().expect("target dir");
        }
        let dir = dir.to_path_buf();
        // The whole workspace, so the feature set (and the compiled
        // dependencies) match `cargo test --workspace`.
        let mut build = cargo();
        build.args(["build", "--workspace", "--bins"]);
        if dir.ends_with("release") {
            build.arg("--release");
        }
        let status = build
            .arg("--manifest-path")
            .arg(root().join("Cargo.toml"))
            .arg("--target-dir")
            .arg(dir.parent().expect("target root"))
            .status()
            .expect("run cargo build");
        assert!(status.success(), "building the binaries failed");
        dir
    });
    let path = dir.join(name);
    assert!(path.is_file(), "{} missing", path.display());
    path
}

/// Every crate of `guest-examples/` the tests use.
const GUESTS: &[&str] = &[
    "hello",
    "echo",
    "raw-hello",
    "floor",
    "faulty",
    "not-http",
    "attest-guest",
    "fetch",
    "kv-counter",
    "kv-probe",
    "kv-lin",
    "attested-signer",
    "tcp-echo",
    "tcp-probe",
    "tls-echo",
];

/// Path of a guest component from `guest-examples/`, built (once per test
/// process) the way `nacre dev` builds them.
pub fn guest(crate_name: &str) -> PathBuf {
    static BUILT: OnceLock<Vec<PathBuf>> = OnceLock::new();
    let built = BUILT.get_or_init(|| {
        build_guests(&root().join("guest-examples/Cargo.toml"), GUESTS)
            .expect("building guest-examples")
    });
    let i = GUESTS
        .iter()
        .position(|g| *g == crate_name)
        .unwrap_or_else(|| panic!("{crate_name} is not in GUESTS"));
    built[i].clone()
}

/// A test CA and a `localhost` leaf it signed, written as PEM files.
pub struct TestPki {
    /// Directory holding ca.pem, cert.pem, key.pem.
    pub dir: PathBuf,
    /// The CA certificate (PEM).
    pub ca_pem: String,
}

impl TestPki {
    /// Makes a fresh CA and leaf in a new temporary directory.
    pub fn generate() -> TestPki {
        let dir = temp_dir("pki");
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "nacre test CA");
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .signed_by(&leaf_key, &issuer)
            .unwrap();
        std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
        std::fs::write(dir.join("cert.pem"), leaf.pem()).unwrap();
        std::fs::write(dir.join("key.pem"), leaf_key.serialize_pem()).unwrap();
        TestPki {
            dir,
            ca_pem: ca.pem(),
        }
    }

    /// A TLS server configuration presenting the leaf, offering `alpn`.
    pub fn server_config(&self, alpn: &[&str]) -> rustls::ServerConfig {
        let certs = nacre_transport::pem::certificates(&self.dir.join("cert.pem")).unwrap();
        let key = nacre_transport::pem::private_key(&self.dir.join("key.pem")).unwrap();
        let mut config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        config.alpn_protocols = alpn.iter().map(|a| a.as_bytes().to_vec()).collect();
        config
    }

    /// The CA certificate's PEM file.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }
}

impl TestPki {
    /// `socat` ending TLS with this PKI's certificate on a free loopback
    /// port, a process per connection, each handed to socat's address
    /// `then` (`PIPE` echoes; `OPENSSL:HOST:PORT,verify=0` opens TLS
    /// onward). The child (the caller stops it) and its port, once it
    /// listens.
    pub fn socat_tls_listener(&self, then: &str) -> std::io::Result<(std::process::Child, u16)> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let listen = format!(
            "OPENSSL-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork,verify=0,cert={},key={}",
            self.dir.join("cert.pem").display(),
            self.dir.join("key.pem").display()
        );
        let mut child = std::process::Command::new("socat")
            .args([listen.as_str(), then])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()?;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                return Err(std::io::Error::other(format!(
                    "socat did not listen on {port}"
                )));
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Ok((child, port))
    }
}

/// Whether this process runs as root (network namespaces need it).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// A fresh directory under the system temp dir.
pub fn temp_dir(tag: &str) -> PathBuf {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("nacre-e2e-{}-{tag}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

static LOG_FILTER: OnceLock<String> = OnceLock::new();

/// Sets the `NACRE_LOG` filter of every runtime and host proxy started
/// from now on in this process (benchmarks want `warn`; tests keep the
/// default, which their assertions on log lines rely on).
pub fn set_log_filter(filter: &str) {
    let _ = LOG_FILTER.set(filter.to_string());
}

pub(crate) fn log_filter(default: &str) -> &str {
    LOG_FILTER.get().map_or(default, String::as_str)
}

/// `component` with a custom section `name` holding `content` appended:
/// the same code, other bytes (and another SHA-256), larger by about
/// `content.len()`.
pub fn with_custom_section(component: &[u8], name: &str, content: &[u8]) -> Vec<u8> {
    fn leb(mut n: usize, out: &mut Vec<u8>) {
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }
    let mut section = Vec::with_capacity(name.len() + content.len() + 5);
    leb(name.len(), &mut section);
    section.extend_from_slice(name.as_bytes());
    section.extend_from_slice(content);
    let mut out = Vec::with_capacity(component.len() + section.len() + 6);
    out.extend_from_slice(component);
    out.push(0); // a custom section
    leb(section.len(), &mut out);
    out.extend_from_slice(&section);
    out
}

/// Runs the `nacre` CLI; returns success, stdout and stderr.
pub fn nacre(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(bin("nacre"))
        .args(args)
        .output()
        .expect("run nacre");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// DER of the certificate the server presented for this response.
pub fn peer_certificate(r: &reqwest::Response) -> Vec<u8> {
    nacre_cli::client::peer_certificate(r).expect("a TLS peer certificate")
}

/// Lower-case hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}
