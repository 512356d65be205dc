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
    /// Admin token. Sent only after the runtime is attested (unless
    /// --insecure), and only to the attested certificate.
    #[arg(long, env = "NACRE_TOKEN", hide_env_values = true)]
    pub token: String,
    #[command(flatten)]
    pub trust: AdminTrust,
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
        let info = deploy(
            &admin,
            &self.name,
            &self.file,
            self.route.as_deref(),
            &self.allow,
        )
        .await?;
        println!("{}", serde_json::to_string_pretty(&info)?);
        Ok(())
    }
}

/// `PUT URL/enclave/guests/NAME`; returns the runtime's JSON answer.
pub async fn deploy(
    admin: &Admin,
    name: &str,
    file: &std::path::Path,
    route: Option<&str>,
    allow: &[String],
) -> anyhow::Result<GuestInfo> {
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let mut query: Vec<(&str, &str)> = allow.iter().map(|a| ("allow", a.as_str())).collect();
    if let Some(r) = route {
        query.push(("route", r));
    }
    let request = admin
        .request(reqwest::Method::PUT, &format!("{}/{name}", paths::GUESTS))
        .query(&query)
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
