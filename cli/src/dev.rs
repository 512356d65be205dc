//! `nacre dev`: a runtime on this machine with the examples deployed.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use base64::Engine as _;
use clap::Args;
use rand::RngCore;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::admin::deploy;
use crate::client::TrustArgs;
use nacre_cli::guest_build::{build_guests, sibling_binary, source_root};

/// Examples deployed by `nacre dev`: (guest name, crate).
const EXAMPLES: &[(&str, &str)] = &[("hello", "hello"), ("echo", "echo")];

/// Run a local runtime (dev attestation, self-signed certificate) with the
/// guest examples deployed, and print how to reach it.
#[derive(Debug, Args)]
pub struct DevCmd {
    /// Port of the HTTPS listener on 127.0.0.1.
    #[arg(long, default_value_t = 8443)]
    pub port: u16,
    /// Directory for the dev CA, the server certificate and logs
    /// (default: .nacre-dev in the source checkout).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

impl DevCmd {
    /// Builds, starts, deploys, prints, then waits for Ctrl-C.
    pub async fn execute(self) -> anyhow::Result<()> {
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

        let wasm = build_guests(
            &root.join("guest-examples/Cargo.toml"),
            &EXAMPLES.iter().map(|e| e.1).collect::<Vec<_>>(),
        )?;
        let runtime = sibling_binary(Some(&root), "nacre-runtime", "nacre-runtime")?;

        let mut raw = [0u8; 24];
        rand::thread_rng().fill_bytes(&mut raw);
        let token = hex::encode(raw);
        let token_sha = hex::encode(Sha256::digest(token.as_bytes()));
        let log_path = dir.join("runtime.log");
        let log = std::fs::File::create(&log_path)?;
        let listen = format!("tcp://127.0.0.1:{}", self.port);
        let mut child = tokio::process::Command::new(&runtime)
            .args([
                "--listen",
                &listen,
                "--fqdn",
                "localhost",
                "--attestation",
                "dev",
                "--debug",
            ])
            .arg("--dev-root")
            .arg(dir.join("root"))
            .args(["--admin-token-sha256", &token_sha])
            .stdout(Stdio::piped())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {}", runtime.display()))?;

        let stdout = child.stdout.take().context("no stdout from the runtime")?;
        let mut lines = BufReader::new(stdout).lines();
        let ready = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(line) = lines.next_line().await? {
                if line.starts_with("nacre-runtime listening on") {
                    return Ok::<_, std::io::Error>(true);
                }
            }
            Ok(false)
        })
        .await;
        if !matches!(ready, Ok(Ok(true))) {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            bail!(
                "the runtime did not start; its log ({}):\n{log}",
                log_path.display()
            );
        }

        let url = format!("https://localhost:{}", self.port);
        // The runtime made its certificate itself: fetch it once (trust on
        // first use, on loopback) so curl and nacre can pin it after.
        let insecure = TrustArgs {
            root: None,
            insecure: true,
        }
        .client()?;
        let cert_path = dir.join("tls-cert.pem");
        save_server_cert(&insecure, &url, &cert_path).await?;
        let client = TrustArgs {
            root: Some(cert_path.clone()),
            insecure: false,
        }
        .client()?;
        let mut shas = Vec::new();
        for ((name, _), path) in EXAMPLES.iter().zip(&wasm) {
            let info = deploy(&client, &url, &token, name, path, None, &[]).await?;
            eprintln!(
                "deployed {name}: sha256 {}",
                info["sha256"].as_str().unwrap_or("?")
            );
            shas.push(info["sha256"].as_str().unwrap_or_default().to_string());
        }
        let hello_sha = &shas[0];

        let c = cert_path.display();
        let d = dir.display();
        let log = log_path.display();
        let nacre = std::env::current_exe()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| "nacre".into());
        let hello = wasm[0].display();
        let mut nonce = [0u8; 20];
        rand::thread_rng().fill_bytes(&mut nonce);
        let nonce = hex::encode(nonce);
        let banner = [
            String::new(),
            "Nacre dev runtime is up.".into(),
            String::new(),
            format!("  URL          {url}"),
            format!("  admin token  {token}"),
            format!("  dev root     {d}/root"),
            format!("  TLS cert     {c}  (made inside the runtime, pinned by the commands below)"),
            format!("  runtime log  {log}"),
            String::new(),
            "Try:".into(),
            format!("  curl --cacert {c} {url}/hello/world"),
            format!("  curl --cacert {c} -d 'some body' '{url}/echo/path?x=1'"),
            format!("  curl --cacert {c} {url}/enclave/manifest"),
            format!("  curl --cacert {c} -H 'Authorization: Bearer {token}' {url}/enclave/guests"),
            format!(
                "  curl -s --cacert {c} '{url}/enclave/attestation?nonce={nonce}' > {d}/attestation.b64"
            ),
            format!(
                "  {nacre} verify {d}/attestation.b64 --root {d}/root/root.pem --nonce {nonce}"
            ),
            format!("  {nacre} attest {url} --root {d}/root/root.pem --guest hello={hello_sha}"),
            format!("  {nacre} guests {url} --token {token} --root {c}"),
            format!("  {nacre} deploy {url} hi {hello} --route /hi --token {token} --root {c}"),
            String::new(),
            "Press Ctrl-C to stop.".into(),
        ];
        println!("{}", banner.join("\n"));

        tokio::select! {
            _ = tokio::signal::ctrl_c() => eprintln!("stopping"),
            status = child.wait() => bail!("the runtime exited ({}); see {}", status?, log_path.display()),
        }
        child.start_kill()?;
        let _ = child.wait().await;
        Ok(())
    }
}

/// Saves the certificate the server at `url` presents as PEM.
async fn save_server_cert(
    client: &reqwest::Client,
    url: &str,
    path: &std::path::Path,
) -> anyhow::Result<()> {
    let resp = client.get(format!("{url}/enclave")).send().await?;
    let der = resp
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|t| t.peer_certificate())
        .context("the server presented no certificate")?
        .to_vec();
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(chunk)?);
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    std::fs::write(path, pem).with_context(|| format!("cannot write {}", path.display()))
}
