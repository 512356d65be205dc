//! The HTTPS client every command uses, and how it decides whom to trust.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Args;

/// Trust flags shared by commands that talk to a runtime.
#[derive(Debug, Clone, Args)]
pub struct TrustArgs {
    /// Trust this PEM certificate (a CA, or the server's own self-signed
    /// certificate) in addition to the public roots.
    #[arg(long, value_name = "PEM", conflicts_with = "insecure")]
    pub root: Option<PathBuf>,

    /// Accept any server certificate. Only for a local dev runtime: it
    /// defeats TLS.
    #[arg(long)]
    pub insecure: bool,
}

impl TrustArgs {
    /// A client that trusts the public roots plus `--root`, or anything
    /// with `--insecure`.
    pub fn client(&self) -> anyhow::Result<reqwest::Client> {
        let mut b = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_info(true)
            .connect_timeout(std::time::Duration::from_secs(10))
            .timeout(std::time::Duration::from_secs(120));
        if let Some(path) = &self.root {
            let pem = std::fs::read(path)
                .with_context(|| format!("--root {}: cannot read", path.display()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).with_context(|| {
                format!("--root {}: not a PEM certificate file", path.display())
            })?;
            if certs.is_empty() {
                bail!("--root {}: no CERTIFICATE block found", path.display());
            }
            for c in certs {
                b = b.add_root_certificate(c);
            }
        }
        if self.insecure {
            b = b.danger_accept_invalid_certs(true);
        }
        Ok(b.build()?)
    }
}

/// Reads an error response's `{"error": ...}` message, or its raw text.
pub async fn fail(resp: reqwest::Response) -> anyhow::Error {
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    let msg = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
        .unwrap_or(text);
    anyhow::anyhow!("{status}: {msg}")
}

/// Explains a connection failure, pointing at the trust flags when the
/// certificate was the problem.
pub fn connect_error(url: &str, e: reqwest::Error) -> anyhow::Error {
    let chain = format!("{:?}", e);
    if chain.contains("UnknownIssuer") || chain.contains("certificate") {
        anyhow::anyhow!(
            "{url}: the server's TLS certificate is not trusted ({e}); pass --root PEM with its certificate, or --insecure for a local dev runtime"
        )
    } else {
        anyhow::anyhow!("{url}: {e}")
    }
}
