//! `nacre dev`: the production layout on one machine. A host proxy and a
//! runtime linked by unix sockets, as the parent and the enclave are by
//! vsock, with the guest examples deployed, and the deployment sealed with
//! the KMS dev stand-in ([`sealed`]) so it survives a restart of the demo.

mod banner;
mod sealed;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use base64::Engine as _;
use clap::Args;
use rand::RngCore;
use sha2::{Digest, Sha256, Sha384};
use tokio::signal::unix::{SignalKind, signal};

use self::banner::Banner;
use crate::admin::{Placement, deploy};
use crate::pinned::{Admin, AdminTrust};
use nacre_cli::client::{TrustArgs, peer_certificate};
use nacre_cli::guest_build::{build_guests, sibling_binaries, source_root};
use nacre_cli::process::{Stderr, Supervised};

/// Examples deployed by `nacre dev`: (guest name, crate).
const EXAMPLES: &[(&str, &str)] = &[
    ("hello", "hello"),
    ("echo", "echo"),
    ("fetch", "fetch"),
    ("kv-counter", "kv-counter"),
    ("attested-signer", "attested-signer"),
    ("tcp-echo", "tcp-echo"),
];

/// The port `tcp-echo` binds as written, so the one it is deployed on.
const TCP_ECHO_PORT: u16 = 8080;

/// Where the `fetch` example may go unless `--allow` says otherwise.
const DEFAULT_EGRESS: &[&str] = &["example.com:443"];

/// Run a local host proxy and runtime (dev attestation, self-signed
/// certificate) with the guest examples deployed, and print how to reach
/// them.
#[derive(Debug, Args)]
pub struct DevCmd {
    /// Port of the HTTPS listener (the host proxy's) on 127.0.0.1; 0 lets
    /// the system choose one (the banner names it).
    #[arg(long, default_value_t = 8443)]
    pub port: u16,
    /// Port on 127.0.0.1 where the `tcp-echo` example (a TCP guest, TLS
    /// ended in the runtime) is reached; 0 lets the system choose one.
    #[arg(long, default_value_t = 8080)]
    pub tcp_port: u16,
    /// Directory for the dev CA, the server certificate, sockets and logs
    /// (default: .nacre-dev in the source checkout).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Hosts the `fetch` example may reach (repeatable; default
    /// example.com:443). Both the runtime and the host proxy allow them.
    #[arg(long, value_name = "HOST:PORT")]
    pub allow: Vec<String>,
    /// Let the host proxy follow names that resolve to loopback or private
    /// addresses (for an origin on this machine, e.g. --allow
    /// localhost:9000); refused by default, as in production.
    #[arg(long)]
    pub egress_allow_private: bool,
}

/// Starts `program`, logging to `log`, and waits for a stdout line that
/// starts with `ready`; the child, and the stdout lines before that one.
fn start(
    program: &Path,
    args: &[String],
    log: &Path,
    ready: &str,
) -> anyhow::Result<(Supervised, Vec<String>)> {
    let mut command = std::process::Command::new(program);
    command.args(args);
    let mut child = Supervised::spawn(command, Stderr::File(log.to_path_buf()))
        .with_context(|| format!("cannot start {}", program.display()))?;
    let mut before = Vec::new();
    child
        .wait_for(Duration::from_secs(60), |l| {
            let done = l.starts_with(ready);
            if !done {
                before.push(l.to_string());
            }
            done.then_some(())
        })
        .map_err(|why| anyhow::anyhow!("{why}\n(log: {})", log.display()))?;
    Ok((child, before))
}

/// [`start`] on a blocking thread, so a signal is heard while it waits.
async fn start_off_thread(
    program: PathBuf,
    args: Vec<String>,
    log: PathBuf,
    ready: &'static str,
) -> anyhow::Result<(Supervised, Vec<String>)> {
    tokio::task::spawn_blocking(move || start(&program, &args, &log, ready)).await?
}

impl DevCmd {
    /// Builds, starts, deploys, prints, then waits for Ctrl-C or SIGTERM.
    pub async fn execute(self) -> anyhow::Result<()> {
        // SIGTERM's default action ends this process without dropping
        // anything, which would leave the runtime and the host proxy
        // running, holding the port. Handled, it drops `run`, and with it
        // the children (`kill_on_drop`), at any stage.
        let mut term = signal(SignalKind::terminate())?;
        let stop = async {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        };
        tokio::select! {
            r = self.run() => r,
            () = stop => {
                eprintln!("stopping");
                Ok(())
            }
        }
    }

    /// Builds the examples, starts the runtime and the host proxy, pins the
    /// runtime's certificate, deploys the examples over attested admin,
    /// prints the banner, then watches both children.
    async fn run(self) -> anyhow::Result<()> {
        let (dir, root) = self.directories()?;
        let allow = self.egress_allow();

        let wasm = build_examples(&root)?;
        let bins = dev_binaries(&root)?;

        let token = random_hex::<24>();
        let runtime_log = dir.join("runtime.log");
        let proxy_log = dir.join("host-proxy.log");
        let kms_log = dir.join("kms.log");
        // In dev attestation PCR0 is the SHA-384 of the runtime executable:
        // the stand-in's key policy names the one just built. Its dev root
        // is made first, so the stand-in can check documents against it.
        let pcr0 = file_sha384(&bins[0])?;
        let dev_root = dir.join("root/root.pem");
        nacre_attestation::DevSigner::open(&dir.join("root"))
            .map_err(|e| anyhow::anyhow!("the dev root in {}: {e}", dir.display()))?;
        let mut kms = sealed::DevKms::start(&bins[3], &dir, &pcr0, &kms_log)?;
        let (mut runtime, mut proxy, (port, tcp_port)) = self
            .start_children(
                &bins,
                &dir,
                &token,
                &allow,
                &kms,
                (&runtime_log, &proxy_log),
            )
            .await?;

        let url = format!("https://localhost:{port}");
        // The runtime made its certificate itself: fetch it once (trust on
        // first use, on loopback) so curl and nacre can pin it after.
        let insecure = TrustArgs {
            root: None,
            insecure: true,
        }
        .client()?;
        let cert_path = dir.join("tls-cert.pem");
        save_server_cert(&insecure, &url, &cert_path).await?;
        // The token goes to the runtime started above, attested like any
        // other: by the dev root and the image it runs.
        let trust = admin_trust(&cert_path, &dev_root, &pcr0);
        let admin = trust.connect(&url, &token).await?;
        let shas = deploy_examples(&admin, &wasm, &allow).await?;

        let banner = Banner {
            url: &url,
            token: &token,
            dir: &dir,
            cert: &cert_path,
            dev_root: &dev_root,
            pcr0: &pcr0,
            runtime_log: &runtime_log,
            proxy_log: &proxy_log,
            allow: &allow,
            // The freshly built binary, not this process's own path: the
            // build above replaced the file this process runs from, and
            // Linux names that one "... (deleted)" from then on.
            nacre: &bins[2],
            hello_wasm: &wasm[0],
            hello_sha: &shas[0],
            tcp_port,
            store: &kms.store(),
        };
        println!("{}", banner.render());

        // Runs until a signal drops this future (see `execute`), and with
        // it the children.
        loop {
            kms.check(&kms_log)?;
            tokio::select! {
                r = supervise(&mut runtime, &mut proxy, &runtime_log, &proxy_log) => return r,
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    /// The working directory (`--dir`, or `.nacre-dev` in the source
    /// checkout), created and made absolute, and the source checkout the
    /// examples are built from.
    fn directories(&self) -> anyhow::Result<(PathBuf, PathBuf)> {
        let root = source_root();
        let dir = match (&self.dir, &root) {
            (Some(d), _) => d.clone(),
            (None, Some(r)) => r.join(".nacre-dev"),
            (None, None) => bail!("not in a Nacre source checkout: pass --dir DIR"),
        };
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let dir = dir.canonicalize()?;
        let Some(root) = root else {
            bail!(
                "nacre dev builds the examples from the Nacre source checkout, which is not where this binary was built"
            );
        };
        Ok((dir, root))
    }

    /// `--allow`, or [`DEFAULT_EGRESS`] when none is given.
    fn egress_allow(&self) -> Vec<String> {
        if self.allow.is_empty() {
            DEFAULT_EGRESS.iter().map(|s| s.to_string()).collect()
        } else {
            self.allow.clone()
        }
    }

    /// Starts the host proxy, then the runtime behind it (which reads its
    /// sealed deployment through the proxy before it listens), each
    /// logging to its file and waited for until ready. The runtime is
    /// given the admin token's SHA-256 only.
    async fn start_children(
        &self,
        bins: &[PathBuf],
        dir: &Path,
        token: &str,
        allow: &[String],
        kms: &sealed::DevKms,
        (runtime_log, proxy_log): (&Path, &Path),
    ) -> anyhow::Result<(Supervised, Supervised, (u16, u16))> {
        let token_sha = hex::encode(Sha256::digest(token.as_bytes()));
        let (mut runtime_args, mut proxy_args) = self.child_args(dir, &token_sha, allow);
        let control = format!("unix:{}", dir.join("control.sock").display());
        runtime_args.extend(kms.runtime_args(&control));
        proxy_args.extend(kms.proxy_args(&control));
        let (proxy, lines) = start_off_thread(
            bins[1].clone(),
            proxy_args,
            proxy_log.to_path_buf(),
            "nacre-host-proxy ready",
        )
        .await?;
        let (runtime, _) = start_off_thread(
            bins[0].clone(),
            runtime_args,
            runtime_log.to_path_buf(),
            "nacre-runtime listening",
        )
        .await?;
        // The ports the proxy bound: `--port` and `--tcp-port`, or the ones
        // the system chose for 0.
        let bound = |target_suffix: &str| {
            lines.iter().find_map(|l| {
                let rest = l.strip_prefix("nacre-host-proxy inbound tcp://127.0.0.1:")?;
                let (port, target) = rest.split_once(" -> ")?;
                target
                    .ends_with(target_suffix)
                    .then(|| port.parse::<u16>().ok())?
            })
        };
        let port =
            bound("runtime.sock").context("the host proxy did not say which port it listens on")?;
        let tcp_port = bound(&format!("runtime.sock.tcp-{TCP_ECHO_PORT}"))
            .context("the host proxy did not say which port tcp-echo is reached on")?;
        Ok((runtime, proxy, (port, tcp_port)))
    }

    /// The runtime's and the host proxy's arguments: linked by two unix
    /// sockets in `dir`, both allowing `allow` out.
    fn child_args(
        &self,
        dir: &Path,
        token_sha: &str,
        allow: &[String],
    ) -> (Vec<String>, Vec<String>) {
        // The two sockets stand for the enclave's vsock ports.
        let runtime_sock = format!("unix:{}", dir.join("runtime.sock").display());
        let egress_sock = format!("unix:{}", dir.join("egress.sock").display());
        let mut runtime_args: Vec<String> = [
            "--listen",
            &runtime_sock,
            "--fqdn",
            "localhost",
            "--attestation",
            "dev",
            "--debug",
            "--egress",
            &egress_sock,
            "--admin-token-sha256",
            token_sha,
            "--dev-root",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        runtime_args.push(dir.join("root").display().to_string());
        let mut proxy_args = vec![
            "--inbound".to_string(),
            format!("tcp://127.0.0.1:{}={runtime_sock}", self.port),
            "--inbound".to_string(),
            format!(
                "tcp://127.0.0.1:{}={runtime_sock}.tcp-{TCP_ECHO_PORT}",
                self.tcp_port
            ),
            "--egress-listen".into(),
            egress_sock.clone(),
        ];
        if self.egress_allow_private {
            proxy_args.push("--egress-allow-private".into());
        }
        for a in allow {
            runtime_args.extend(["--egress-allow".to_string(), a.clone()]);
            proxy_args.extend(["--egress-allow".to_string(), a.clone()]);
        }
        (runtime_args, proxy_args)
    }
}

/// Saves the certificate the server at `url` presents as PEM.
async fn save_server_cert(
    client: &reqwest::Client,
    url: &str,
    path: &std::path::Path,
) -> anyhow::Result<()> {
    let resp = client.get(format!("{url}/enclave")).send().await?;
    let der = peer_certificate(&resp).context("the server presented no certificate")?;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(chunk)?);
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    std::fs::write(path, pem).with_context(|| format!("cannot write {}", path.display()))
}

/// Builds the guest examples from the checkout at `root`: one component
/// per entry of [`EXAMPLES`], in that order.
fn build_examples(root: &Path) -> anyhow::Result<Vec<PathBuf>> {
    build_guests(
        &root.join("guest-examples/Cargo.toml"),
        &EXAMPLES.iter().map(|e| e.1).collect::<Vec<_>>(),
    )
}

/// The runtime, host proxy, `nacre` and KMS stand-in binaries built beside
/// this one: in that order.
fn dev_binaries(root: &Path) -> anyhow::Result<Vec<PathBuf>> {
    sibling_binaries(
        Some(root),
        &[
            ("nacre-runtime", "nacre-runtime"),
            ("nacre-host-proxy", "nacre-host-proxy"),
            ("nacre-cli", "nacre"),
            ("nacre-kms-dev", "nacre-kms-dev"),
        ],
    )
}

/// `N` random bytes, hex-encoded.
fn random_hex<const N: usize>() -> String {
    let mut raw = [0u8; N];
    rand::thread_rng().fill_bytes(&mut raw);
    hex::encode(raw)
}

/// SHA-384 of the file at `path`.
fn file_sha384(path: &Path) -> anyhow::Result<Vec<u8>> {
    Ok(Sha384::digest(
        std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?,
    )
    .to_vec())
}

/// How to reach the admin API of the runtime `nacre dev` started: its TLS
/// certificate pinned (`cert`), attested by the dev root with PCR0 pinned.
fn admin_trust(cert: &Path, dev_root: &Path, pcr0: &[u8]) -> AdminTrust {
    AdminTrust {
        tls: TrustArgs {
            root: Some(cert.to_path_buf()),
            insecure: false,
        },
        attestation_root: Some(dev_root.to_path_buf()),
        pcr: vec![(0, pcr0.to_vec())],
        pcrs: None,
    }
}

/// Deploys each of [`EXAMPLES`] from `wasm` (built in that order), one
/// after the other; only `fetch` may reach `allow`, and `tcp-echo` is a
/// TCP guest. Returns their SHA-256s, in the same order.
async fn deploy_examples(
    admin: &Admin,
    wasm: &[PathBuf],
    allow: &[String],
) -> anyhow::Result<Vec<String>> {
    let mut shas = Vec::new();
    for ((name, _), path) in EXAMPLES.iter().zip(wasm) {
        let placement = match *name {
            "fetch" => Placement {
                allow: allow.to_vec(),
                ..Placement::default()
            },
            "tcp-echo" => Placement {
                tcp: Some(TCP_ECHO_PORT),
                ..Placement::default()
            },
            _ => Placement::default(),
        };
        let info = deploy(admin, name, path, &placement).await?;
        eprintln!("deployed {name}: sha256 {}", info.sha256);
        shas.push(info.sha256);
    }
    Ok(shas)
}

/// Checks on both children every 200 ms, and fails, naming the log to
/// read, as soon as either has exited. Returns no other way.
async fn supervise(
    runtime: &mut Supervised,
    proxy: &mut Supervised,
    runtime_log: &Path,
    proxy_log: &Path,
) -> anyhow::Result<()> {
    loop {
        if let Some(status) = runtime.try_wait()? {
            bail!(
                "the runtime exited ({status}); see {}",
                runtime_log.display()
            );
        }
        if let Some(status) = proxy.try_wait()? {
            bail!(
                "the host proxy exited ({status}); see {}",
                proxy_log.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
