//! A runtime for a test: a `nacre-runtime` process, or the library's
//! runtime in the test process, behind one helper with the client-side
//! calls the tests make.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use nacre_cli::process::{self, Stderr, Supervised};

use crate::{TestPki, bin, fleet, inproc, log_filter, sha256_hex, temp_dir};

/// The admin token every test runtime accepts.
pub const TOKEN: &str = "test-admin-token";

/// Where a test's runtime runs.
enum Host {
    /// A `nacre-runtime` process.
    Process(Supervised),
    /// The library's runtime on threads of the test process.
    InProcess(inproc::InProcess),
}

/// A running runtime on loopback, a `nacre-runtime` process or the
/// library's runtime in this process; stopped (and its log printed if the
/// test failed) on drop.
pub struct Runtime {
    host: Host,
    /// The bound address.
    pub addr: SocketAddr,
    pki: Option<TestPki>,
    /// The `--dev-root` directory (dev attestation CA).
    pub dev_root: PathBuf,
    /// The executable, whose SHA-384 is PCR0 in dev attestation.
    program: PathBuf,
    /// Its `--metrics-listen`, when given a TCP address.
    metrics: Option<SocketAddr>,
}

impl Runtime {
    /// Starts a runtime with a test certificate and admin token, plus
    /// `extra` flags.
    pub fn start(extra: &[&str]) -> Runtime {
        Runtime::start_behind(&[], "tcp://127.0.0.1:0", extra)
    }

    /// Like [`Runtime::start`], with the library's runtime in this process
    /// (assembled as the binary assembles it, from the same flags): for
    /// every test that needs no process of its own.
    pub fn in_process(extra: &[&str]) -> Runtime {
        let pki = TestPki::generate();
        let mut args = test_identity_args(&pki);
        args.extend(extra.iter().map(|s| s.to_string()));
        match Runtime::try_in_process(&args) {
            Ok(mut rt) => {
                rt.pki = Some(pki);
                rt
            }
            Err(log) => panic!("runtime did not start; its output:\n{log}"),
        }
    }

    /// Like [`Runtime::start_raw`], in this process.
    pub fn in_process_raw(args: &[String]) -> Runtime {
        match Runtime::try_in_process(args) {
            Ok(rt) => rt,
            Err(log) => panic!("runtime did not start; its output:\n{log}"),
        }
    }

    /// Like [`Runtime::try_start`], in this process.
    pub fn try_in_process(args: &[String]) -> Result<Runtime, String> {
        let dev_root = temp_dir("devroot");
        let mut all = base_args("tcp://127.0.0.1:0", &dev_root);
        all.extend(args.iter().cloned());
        let (host, bound) =
            inproc::InProcess::start(all, log_filter("info,nacre_runtime=debug,openraft=warn"))?;
        Ok(Runtime {
            host: Host::InProcess(host),
            addr: bound_tcp(&bound),
            pki: None,
            dev_root,
            // The dev stand-in measures the running executable as PCR0:
            // this one, read through /proc even if a build has replaced
            // the file since it started.
            program: PathBuf::from("/proc/self/exe"),
            metrics: None,
        })
    }

    /// Starts a runtime with exactly `args` plus a loopback listener and
    /// `--fqdn localhost`.
    pub fn start_raw(args: &[String]) -> Runtime {
        match Runtime::try_start(args) {
            Ok(rt) => rt,
            Err(log) => panic!("runtime did not start; its output:\n{log}"),
        }
    }

    /// Like [`Runtime::start_raw`], returning the output when it exits
    /// before listening.
    pub fn try_start(args: &[String]) -> Result<Runtime, String> {
        Runtime::launch(&bin("nacre-runtime"), &[], "tcp://127.0.0.1:0", args)
    }

    /// Starts a runtime listening on `listen` (for example a unix socket
    /// behind a host proxy), run through `wrapper` (for example
    /// `unshare -n`), with the test certificate and admin token; point
    /// clients at it with [`Runtime::via`].
    pub fn start_behind(wrapper: &[&str], listen: &str, extra: &[&str]) -> Runtime {
        Runtime::start_program(&bin("nacre-runtime"), wrapper, listen, extra, true)
    }

    /// Like [`Runtime::start_behind`], running `program` (another build of
    /// the runtime, for instance) instead of this checkout's; with
    /// `test_certificate` false the runtime makes its own certificate (and
    /// [`Runtime::client`] takes any).
    pub fn start_program(
        program: &Path,
        wrapper: &[&str],
        listen: &str,
        extra: &[&str],
        test_certificate: bool,
    ) -> Runtime {
        let pki = test_certificate.then(TestPki::generate);
        let mut args = match &pki {
            Some(pki) => test_identity_args(pki),
            None => vec!["--admin-token-sha256".into(), sha256_hex(TOKEN.as_bytes())],
        };
        args.extend(extra.iter().map(|s| s.to_string()));
        match Runtime::launch(program, wrapper, listen, &args) {
            Ok(mut rt) => {
                rt.pki = pki;
                rt
            }
            Err(log) => panic!("runtime did not start; its output:\n{log}"),
        }
    }

    /// Clients of this runtime connect to `addr` (a proxy or relay in
    /// front of it) from now on.
    pub fn via(&mut self, addr: SocketAddr) {
        self.addr = addr;
    }

    fn launch(
        program: &Path,
        wrapper: &[&str],
        listen: &str,
        args: &[String],
    ) -> Result<Runtime, String> {
        let dev_root = temp_dir("devroot");
        let mut command = match wrapper.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(program);
                c
            }
            None => Command::new(program),
        };
        command.args(base_args(listen, &dev_root)).args(args).env(
            "NACRE_LOG",
            log_filter("info,nacre_runtime=debug,openraft=warn"),
        );
        let mut child = Supervised::spawn(command, Stderr::Keep { watch: false })
            .expect("spawn nacre-runtime")
            .report_on_panic();
        let mut metrics = None;
        let bound = child.wait_for(Duration::from_secs(60), |l| {
            if let Some(m) = l.strip_prefix("nacre-runtime metrics listening on tcp://") {
                metrics = m.parse().ok();
            }
            l.strip_prefix("nacre-runtime listening on ")
                .map(str::to_string)
        })?;
        Ok(Runtime {
            host: Host::Process(child),
            addr: bound_tcp(&bound),
            pki: None,
            dev_root,
            program: program.to_path_buf(),
            metrics,
        })
    }

    /// `https://localhost:PORT`.
    pub fn url(&self) -> String {
        format!("https://localhost:{}", self.addr.port())
    }

    /// A client trusting the test CA (or anything, for self-signed runtimes).
    pub fn client(&self) -> reqwest::Client {
        self.client_builder().build().unwrap()
    }

    /// The builder behind [`Runtime::client`], for HTTP-version choices.
    pub fn client_builder(&self) -> reqwest::ClientBuilder {
        let b = reqwest::Client::builder()
            .use_rustls_tls()
            .resolve("localhost", self.addr)
            .tls_info(true)
            .timeout(Duration::from_secs(60));
        match &self.pki {
            Some(p) => {
                b.add_root_certificate(reqwest::Certificate::from_pem(p.ca_pem.as_bytes()).unwrap())
            }
            None => b.danger_accept_invalid_certs(true),
        }
    }

    /// A root store holding the test CA.
    pub fn roots(&self) -> rustls::RootCertStore {
        let mut roots = rustls::RootCertStore::empty();
        let ca = self.ca_file().expect("a runtime with the test CA");
        for c in nacre_transport::pem::certificates(&ca).expect("the test CA") {
            roots.add(c).expect("a usable CA");
        }
        roots
    }

    /// Verifies a guest's document `doc` against this runtime's dev root
    /// with `nonce`, and reads its guest binding: which code asked, and
    /// its data.
    pub fn guest_binding(&self, doc: &[u8], nonce: &[u8]) -> nacre_attestation::GuestBinding {
        let root = std::fs::read(self.dev_root.join("root.pem")).unwrap();
        let verified = nacre_attestation::Verifier::with_root_pem(&root)
            .unwrap()
            .nonce(nonce.to_vec())
            .verify(doc)
            .unwrap();
        nacre_attestation::GuestBinding::from_bytes(verified.document.user_data.as_deref().unwrap())
            .unwrap()
    }

    /// The test CA's PEM file, when the runtime uses the test certificate.
    pub fn ca_file(&self) -> Option<PathBuf> {
        self.pki.as_ref().map(TestPki::ca_file)
    }

    /// The executable the runtime runs as, whose SHA-384 is PCR0 in dev
    /// attestation: the `nacre-runtime` binary, or this test binary when
    /// the runtime runs in process.
    pub fn executable(&self) -> &Path {
        &self.program
    }

    /// The flags with which `nacre deploy` and `nacre guests` attest this
    /// runtime before sending the token: its dev root and its image's
    /// PCR0.
    pub fn attest_args(&self) -> Vec<String> {
        vec![
            "--attestation-root".into(),
            self.dev_root.join("root.pem").display().to_string(),
            "--pcr".into(),
            format!("0={}", fleet::pcr0(&self.program)),
        ]
    }

    /// Uploads `wasm` as `name` with an optional query (route, allow).
    pub async fn deploy(&self, name: &str, wasm: &Path, query: &str) -> reqwest::Response {
        let bytes = std::fs::read(wasm).unwrap();
        self.client()
            .put(format!("{}/enclave/guests/{name}?{query}", self.url()))
            .bearer_auth(TOKEN)
            .body(bytes)
            .send()
            .await
            .unwrap()
    }

    /// Uploads and asserts success; the runtime's answer.
    pub async fn deploy_ok(&self, name: &str, wasm: &Path, query: &str) -> nacre_api::GuestInfo {
        let r = self.deploy(name, wasm, query).await;
        let status = r.status();
        let body = r.text().await.unwrap();
        assert!(
            status.is_success(),
            "deploy {name}: {status} {body}\n{}",
            self.log()
        );
        serde_json::from_str(&body).expect("the admin API answers GuestInfo")
    }

    /// GET a path; the whole response, for tests that look at headers.
    pub async fn get_response(&self, path: &str) -> reqwest::Response {
        self.client()
            .get(format!("{}{path}", self.url()))
            .send()
            .await
            .unwrap()
    }

    /// GET a path; returns status and body text.
    pub async fn get(&self, path: &str) -> (u16, String) {
        let r = self.get_response(path).await;
        (r.status().as_u16(), r.text().await.unwrap())
    }

    /// POST `body` to a path; returns status and body text.
    pub async fn post(&self, path: &str, body: &'static str) -> (u16, String) {
        let r = self
            .client()
            .post(format!("{}{path}", self.url()))
            .body(body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    /// PUT `body` to a path; the status, or 0 when no answer came (the
    /// runtime may be paused or cut off on purpose).
    pub async fn put(&self, path: &str, body: &str) -> u16 {
        self.client()
            .put(format!("{}{path}", self.url()))
            .body(body.to_string())
            .send()
            .await
            .map_or(0, |r| r.status().as_u16())
    }

    /// A raw TLS connection to the runtime that offers `alpn` (none: no
    /// ALPN extension at all) and trusts the test CA (or, for self-signed
    /// runtimes, any certificate whose key the server holds).
    pub async fn tls(
        &self,
        alpn: &[&str],
    ) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap();
        let mut config = match &self.pki {
            Some(_) => builder.with_root_certificates(self.roots()),
            None => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(
                    nacre_transport::presented::PresentedKey::new(&provider),
                )),
        }
        .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|a| a.as_bytes().to_vec()).collect();
        let tcp = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
        tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .unwrap()
    }

    /// Runs the system's curl against this runtime (trusting the test CA,
    /// `localhost` resolved to it) with `args`, where `URL` stands for the
    /// runtime's base URL. Returns success, stdout and stderr.
    pub fn curl(&self, args: &[&str]) -> (bool, String, String) {
        let ca = self.ca_file().expect("a runtime with the test CA");
        let url = self.url();
        let out = Command::new("curl")
            .arg("--silent")
            .arg("--show-error")
            .arg("--cacert")
            .arg(ca)
            .arg("--resolve")
            .arg(format!("localhost:{}:127.0.0.1", self.addr.port()))
            .args(args.iter().map(|a| a.replace("URL", &url)))
            .output()
            .expect("curl runs (the test command installs it when missing)");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Everything the runtime logged so far.
    pub fn log(&self) -> String {
        match &self.host {
            Host::Process(child) => child.output(),
            Host::InProcess(host) => host.log(),
        }
    }

    /// Process id (a runtime started as a process).
    pub fn pid(&self) -> u32 {
        match &self.host {
            Host::Process(child) => child.pid(),
            Host::InProcess(_) => {
                panic!("this test needs the runtime's own process: start it with Runtime::start")
            }
        }
    }

    /// Resident set size in bytes, from /proc.
    pub fn rss(&self) -> u64 {
        process::rss(self.pid()).expect("the runtime is running")
    }

    /// Open file descriptors, from /proc.
    pub fn fd_count(&self) -> usize {
        process::fd_count(self.pid())
    }

    /// The operator's per-guest figures (`/enclave/metrics` with the admin
    /// token): the sum of every sample whose name and labels start with
    /// `prefix`, e.g. `nacre_guest_traps_total{guest="f"}`.
    pub async fn guest_metric(&self, prefix: &str) -> f64 {
        let text = self
            .client()
            .get(format!("{}/enclave/metrics", self.url()))
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("GET /enclave/metrics")
            .text()
            .await
            .expect("the metrics");
        let samples: Vec<f64> = text
            .lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .collect();
        assert!(!samples.is_empty(), "no sample {prefix} in\n{text}");
        samples.iter().sum()
    }

    /// The sum of the samples starting with `prefix` on the runtime's
    /// `--metrics-listen` (a TCP address), or None when there are none.
    pub async fn metric(&self, prefix: &str) -> Option<f64> {
        let addr = self
            .metrics
            .expect("a runtime started with --metrics-listen tcp://...");
        let text = reqwest::get(format!("http://{addr}/metrics"))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        let samples: Vec<f64> = text
            .lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .collect();
        (!samples.is_empty()).then(|| samples.iter().sum())
    }

    /// Freezes the process (SIGSTOP), as a host pausing an enclave would:
    /// it holds its sockets and answers nothing until [`Runtime::resume`].
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Lets a paused process run again (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.pid().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill {sig} {}", self.pid());
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        match &mut self.host {
            Host::Process(child) => matches!(child.try_wait(), Ok(None)),
            Host::InProcess(host) => host.is_running(),
        }
    }

    /// Sends SIGTERM and waits for the exit status (in process: stops
    /// serving, as SIGTERM makes the binary do, and says success).
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        match &mut self.host {
            Host::Process(child) => {
                child.terminate();
                child
                    .wait_exit(Duration::from_secs(20))
                    .expect("runtime did not stop on SIGTERM")
            }
            Host::InProcess(host) => {
                host.stop();
                std::os::unix::process::ExitStatusExt::from_raw(0)
            }
        }
    }
}

/// The flags every test runtime gets: where it listens, its name and the
/// dev attestation stand-in.
fn base_args(listen: &str, dev_root: &Path) -> Vec<String> {
    vec![
        "--listen".into(),
        listen.into(),
        "--fqdn".into(),
        "localhost".into(),
        "--attestation".into(),
        "dev".into(),
        "--dev-root".into(),
        dev_root.display().to_string(),
    ]
}

/// The test certificate and the test admin token.
fn test_identity_args(pki: &TestPki) -> Vec<String> {
    vec![
        "--tls-cert".into(),
        pki.dir.join("cert.pem").display().to_string(),
        "--tls-key".into(),
        pki.dir.join("key.pem").display().to_string(),
        "--admin-token-sha256".into(),
        sha256_hex(TOKEN.as_bytes()),
    ]
}

/// A bound address as a socket address; not TCP: reachable only through
/// whatever [`Runtime::via`] names.
fn bound_tcp(bound: &str) -> SocketAddr {
    bound
        .strip_prefix("tcp://")
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)))
}
