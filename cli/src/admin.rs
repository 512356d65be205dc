//! `nacre deploy` and `nacre guests`: the runtime's admin API.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use nacre_api::{GuestInfo, paths};

use nacre_cli::client::{TrustArgs, connect_error, fail};

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
    /// Admin token.
    #[arg(long, env = "NACRE_TOKEN", hide_env_values = true)]
    pub token: String,
    #[command(flatten)]
    pub trust: TrustArgs,
}

/// List the deployed guests.
#[derive(Debug, Args)]
pub struct GuestsCmd {
    /// Base URL of the runtime, e.g. https://localhost:8443.
    pub url: String,
    /// Admin token.
    #[arg(long, env = "NACRE_TOKEN", hide_env_values = true)]
    pub token: String,
    #[command(flatten)]
    pub trust: TrustArgs,
}

impl DeployCmd {
    /// Runs the command, printing the runtime's answer as JSON.
    pub async fn execute(self) -> anyhow::Result<()> {
        let client = self.trust.client()?;
        let info = deploy(
            &client,
            &self.url,
            &self.token,
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
    client: &reqwest::Client,
    url: &str,
    token: &str,
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
    let endpoint = format!("{}{}/{name}", url.trim_end_matches('/'), paths::GUESTS);
    let resp = client
        .put(&endpoint)
        .query(&query)
        .bearer_auth(token)
        .header("content-type", "application/wasm")
        .body(bytes)
        .send()
        .await
        .map_err(|e| connect_error(url, e))?;
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
        let client = self.trust.client()?;
        let resp = client
            .get(format!(
                "{}{}",
                self.url.trim_end_matches('/'),
                paths::GUESTS
            ))
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| connect_error(&self.url, e))?;
        if !resp.status().is_success() {
            return Err(fail(resp).await.context("listing guests"));
        }
        let list: Vec<GuestInfo> = resp.json().await?;
        println!("{}", serde_json::to_string_pretty(&list)?);
        Ok(())
    }
}
