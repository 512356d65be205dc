//! `nacre image …`: runs `nacre-image`, found beside `nacre`. The image
//! builder is a program of its own because the EIF crate links OpenSSL;
//! `nacre` (and `nacre dev`) need no system library.

use anyhow::{Context, bail};
use clap::Args;
use std::ffi::OsString;
use std::path::PathBuf;

/// `nacre image build|describe …`: every argument goes to `nacre-image`.
#[derive(Debug, Args)]
pub struct ImageCmd {
    /// `build --config FILE [--out EIF] …` or `describe EIF`
    /// (`nacre image help` lists them).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 0..)]
    args: Vec<OsString>,
}

impl ImageCmd {
    /// Runs `nacre-image` with the arguments and exits with its status.
    pub fn execute(self) -> anyhow::Result<()> {
        let program = beside_me()?;
        let status = std::process::Command::new(&program)
            .args(&self.args)
            .status()
            .with_context(|| format!("cannot run {}", program.display()))?;
        std::process::exit(status.code().unwrap_or(1));
    }
}

fn beside_me() -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe().context("cannot find where nacre is")?;
    let program = me.with_file_name("nacre-image");
    if !program.exists() {
        bail!(
            "{} is missing: build it with `cargo build --release --manifest-path image/Cargo.toml --target-dir target` (it needs OpenSSL's headers: apt-get install libssl-dev pkg-config)",
            program.display()
        );
    }
    Ok(program)
}
