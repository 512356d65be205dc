//! `nacre`: the command-line client and local dev environment.

mod admin;
mod attest;
mod build;
mod dev;
mod verify;

use clap::{Parser, Subcommand};

/// Nacre: confidential WebAssembly services in AWS Nitro Enclaves.
#[derive(Debug, Parser)]
#[command(name = "nacre", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a local runtime with the examples deployed (dev attestation,
    /// self-signed certificate) and print how to use it.
    Dev(dev::DevCmd),
    /// Upload a component as guest NAME (creates or atomically replaces).
    Deploy(admin::DeployCmd),
    /// List the guests deployed on a runtime.
    Guests(admin::GuestsCmd),
    /// Verify an attestation document offline and print a JSON summary.
    Verify(verify::VerifyCmd),
    /// Attest a live runtime: document, TLS binding, manifest and guests.
    Attest(attest::AttestCmd),
    /// Build a guest crate into a component; prints the .wasm path last.
    Build(build::BuildCmd),
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Dev(c) => c.execute().await,
        Command::Deploy(c) => c.execute().await,
        Command::Guests(c) => c.execute().await,
        Command::Verify(c) => c.execute(),
        Command::Attest(c) => c.execute().await,
        Command::Build(c) => c.execute(),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
