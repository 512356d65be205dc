//! `nacre build [PATH]`: a guest crate into a component.

use std::io::BufRead;
use std::path::PathBuf;
use std::process::Stdio;

use anyhow::{Context, bail};
use clap::Args;
use nacre_cli::guest_build::wasm_build;

/// Build a guest crate into a WebAssembly component (release,
/// wasm32-wasip2, installing the target if missing); the last line printed
/// is the `.wasm` path.
#[derive(Debug, Args)]
pub struct BuildCmd {
    /// The crate's directory or its Cargo.toml (default: the current
    /// directory).
    #[arg(default_value = ".")]
    pub path: PathBuf,
}

impl BuildCmd {
    /// Runs cargo and prints the component's path.
    pub fn execute(self) -> anyhow::Result<()> {
        let manifest = if self.path.is_dir() {
            self.path.join("Cargo.toml")
        } else {
            self.path.clone()
        };
        if !manifest.is_file() {
            bail!(
                "{}: no Cargo.toml there; give the guest crate's directory (made with `cargo new --lib`)",
                manifest.display()
            );
        }
        let manifest = manifest.canonicalize()?;
        let mut child = wasm_build(&manifest)?
            .args(["--message-format", "json-render-diagnostics"])
            .stdout(Stdio::piped())
            .spawn()
            .context("cannot run cargo")?;
        let stdout = child.stdout.take().context("no output from cargo")?;
        let mut component = None;
        for line in std::io::BufReader::new(stdout).lines() {
            let msg: serde_json::Value = match serde_json::from_str(&line?) {
                Ok(v) => v,
                Err(_) => continue,
            };
            if msg["reason"] != "compiler-artifact"
                || msg["manifest_path"].as_str() != manifest.to_str()
            {
                continue;
            }
            let files = msg["filenames"].as_array().into_iter().flatten();
            if let Some(wasm) = files
                .filter_map(|f| f.as_str())
                .find(|f| f.ends_with(".wasm"))
            {
                component = Some(PathBuf::from(wasm));
            }
        }
        if !child.wait()?.success() {
            bail!("cargo build failed (its messages are above)");
        }
        let Some(component) = component else {
            bail!(
                "{} built no component: a guest crate needs `[lib] crate-type = [\"cdylib\"]` (or a binary target)",
                manifest.display()
            );
        };
        println!("{}", component.display());
        Ok(())
    }
}
