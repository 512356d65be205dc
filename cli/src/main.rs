//! `nacre`: the command-line client and local dev environment.

mod admin;
mod attest;
mod build;
mod dev;
mod image;
mod pinned;
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
    /// Build or describe an enclave image (EIF); runs nacre-image.
    Image(image::ImageCmd),
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
        Command::Image(c) => c.execute(),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_flags_are_consistent() {
        Cli::command().debug_assert();
    }

    fn deploy(extra: &[&str]) -> Result<Cli, clap::Error> {
        let mut args = vec![
            "nacre",
            "deploy",
            "https://x",
            "n",
            "f.wasm",
            "--token",
            "t",
        ];
        args.extend(extra);
        Cli::try_parse_from(args)
    }

    #[test]
    fn pins_and_roots_parse_and_conflict_with_insecure() {
        let cli = deploy(&[
            "--pcr",
            "0=aa",
            "--pcr",
            "8=bb",
            "--pcrs",
            "p.json",
            "--root",
            "ca.pem",
            "--attestation-root",
            "root.pem",
        ])
        .unwrap();
        let Command::Deploy(d) = cli.command else {
            panic!("not deploy");
        };
        assert_eq!(d.trust.pcr, vec![(0, vec![0xaa]), (8, vec![0xbb])]);
        assert_eq!(
            d.trust.attestation_root.as_deref(),
            Some("root.pem".as_ref())
        );
        assert_eq!(d.trust.tls.root.as_deref(), Some("ca.pem".as_ref()));
        for pin in [
            &["--pcr", "0=aa"][..],
            &["--pcrs", "p.json"],
            &["--attestation-root", "r.pem"],
        ] {
            let mut extra = vec!["--insecure"];
            extra.extend(pin);
            assert!(deploy(&extra).is_err(), "{extra:?}");
        }
        assert!(deploy(&["--pcr", "0=zz"]).is_err());
        assert!(deploy(&["--insecure"]).is_ok());
        assert!(deploy(&["--insecure", "--tcp", "8080", "--tls", "guest"]).is_ok());
        // --tls is a TCP guest's; a TCP guest has no route.
        assert!(deploy(&["--insecure", "--tls", "guest"]).is_err());
        assert!(deploy(&["--insecure", "--tcp", "8080", "--route", "/x"]).is_err());
        assert!(deploy(&["--insecure", "--tcp", "8080", "--tls", "both"]).is_err());
        assert!(deploy(&["--insecure", "--tcp", "70000"]).is_err());
    }
}
