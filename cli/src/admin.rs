//! `nacre deploy` and `nacre guests`: the runtime's admin API. Both
//! attest the runtime before the token leaves (see [`crate::pinned`]).

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use nacre_api::{GuestInfo, paths};

use crate::pinned::{Admin, AdminTrust};
use nacre_cli::client::fail;

/// Upload a component as guest NAME (creates or atomically replaces it).
#[derive(Debug, Args)]
pub struct DeployCmd {
    /// Base URL of the runtime, e.g. https://localhost:8443.
    pub url: String,
    /// Guest name: lower-case letters, digits and '-'.
    pub name: String,
    /// The component (.wasm) to upload.
    pub file: PathBuf,
    /// Route prefix (default /NAME; / makes it the default guest).
    #[arg(long)]
    pub route: Option<String>,
    /// Outbound destination the guest may reach, HOST:PORT (repeatable).
    #[arg(long, value_name = "HOST:PORT")]
    pub allow: Vec<String>,
    /// Serve it as a TCP guest on this port (a wasi:cli command that
    /// listens with wasi:sockets) rather than over HTTP.
    #[arg(long, value_name = "PORT", conflicts_with = "route")]
    pub tcp: Option<u16>,
    /// Where a TCP guest's clients' TLS ends: `enclave` (the runtime, with
    /// the deployment's certificate; the default) or `guest` (the bytes
    /// pass as sent and the guest runs TLS itself).
    #[arg(long, value_name = "MODE", requires = "tcp", value_parser = ["enclave", "guest"])]
    pub tls: Option<String>,
    /// Admin token. Sent only after the runtime is attested (unless
    /// --insecure), and only to the attested certificate.
    #[arg(long, env = "NACRE_TOKEN", hide_env_values = true)]
    pub token: String,
    #[command(flatten)]
    pub trust: AdminTrust,
}

/// Where and how a guest is served: the query of `PUT
/// /enclave/guests/NAME`.
#[derive(Debug, Default, Clone)]
pub struct Placement {
    /// `route=`: the HTTP route prefix (default `/NAME`).
    pub route: Option<String>,
    /// `allow=`: outbound destinations, HOST:PORT.
    pub allow: Vec<String>,
    /// `tcp=`: serve it as a TCP guest on this port.
    pub tcp: Option<u16>,
    /// `tls=`: `enclave` or `guest`, for a TCP guest.
    pub tls: Option<String>,
}

impl Placement {
    fn query(&self) -> Vec<(&'static str, String)> {
        let mut query: Vec<(&str, String)> =
            self.allow.iter().map(|a| ("allow", a.clone())).collect();
        query.extend(self.route.clone().map(|r| ("route", r)));
        query.extend(self.tcp.map(|p| ("tcp", p.to_string())));
        query.extend(self.tls.clone().map(|t| ("tls", t)));
        query
    }
}

/// List the deployed guests.
#[derive(Debug, Args)]
pub struct GuestsCmd {
    /// Base URL of the runtime, e.g. https://localhost:8443.
    pub url: String,
    /// Admin token. Sent only after the runtime is attested (unless
    /// --insecure), and only to the attested certificate.
    #[arg(long, env = "NACRE_TOKEN", hide_env_values = true)]
    pub token: String,
    #[command(flatten)]
    pub trust: AdminTrust,
}

impl DeployCmd {
    /// Runs the command, printing the runtime's answer as JSON.
    pub async fn execute(self) -> anyhow::Result<()> {
        let admin = self.trust.connect(&self.url, &self.token).await?;
        let placement = Placement {
            route: self.route,
            allow: self.allow,
            tcp: self.tcp,
            tls: self.tls,
        };
        let info = deploy(&admin, &self.name, &self.file, &placement).await?;
        println!("{}", serde_json::to_string_pretty(&info)?);
        Ok(())
    }
}

/// `PUT URL/enclave/guests/NAME`; returns the runtime's JSON answer.
pub async fn deploy(
    admin: &Admin,
    name: &str,
    file: &std::path::Path,
    placement: &Placement,
) -> anyhow::Result<GuestInfo> {
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let request = admin
        .request(reqwest::Method::PUT, &format!("{}/{name}", paths::GUESTS))
        .query(&placement.query())
        .header("content-type", "application/wasm")
        .body(bytes);
    let resp = admin.send(request).await?;
    if !resp.status().is_success() {
        return Err(fail(resp)
            .await
            .context(format!("deploying {} as {name}", file.display())));
    }
    Ok(resp.json().await?)
}

impl GuestsCmd {
    /// Runs the command, printing the guest list as JSON.
    pub async fn execute(self) -> anyhow::Result<()> {
        let admin = self.trust.connect(&self.url, &self.token).await?;
        let resp = admin
            .send(admin.request(reqwest::Method::GET, paths::GUESTS))
            .await?;
        if !resp.status().is_success() {
            return Err(fail(resp).await.context("listing guests"));
        }
        let list: Vec<GuestInfo> = resp.json().await?;
        println!("{}", serde_json::to_string_pretty(&list)?);
        Ok(())
    }
}
