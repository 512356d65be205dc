//! `nacre-image`: builds and describes Nacre's enclave images. `nacre
//! image …` runs it (it is a program of its own because the EIF crate
//! links OpenSSL, and `nacre` needs no system library).

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use nacre_image::assemble::{BuildOptions, build};
use nacre_image::eif::describe;
use nacre_image::measurements_json;
use nacre_image::signing::Signing;
use std::path::PathBuf;

/// Builds and describes Nacre enclave images (EIF).
#[derive(Parser)]
#[command(name = "nacre image", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Builds an EIF from a configuration and prints its PCRs.
    Build(BuildArgs),
    /// Checks an EIF's structure and CRC and prints its PCRs.
    Describe {
        /// The EIF.
        eif: PathBuf,
    },
}

#[derive(Args)]
struct BuildArgs {
    /// The image's configuration (TOML; see docs/image.md).
    #[arg(long)]
    config: PathBuf,
    /// The EIF to write.
    #[arg(long, default_value = "nacre.eif")]
    out: PathBuf,
    /// Where to write the PCRs as JSON (default: the EIF's path with
    /// `.pcrs.json`); `nacre attest --pcrs` reads it.
    #[arg(long)]
    pcrs_out: Option<PathBuf>,
    /// The kernel package's file, when already here (otherwise it is
    /// fetched with `apt-get download` into --cache).
    #[arg(long)]
    kernel_deb: Option<PathBuf>,
    /// Where fetched kernel packages are kept.
    #[arg(long, default_value = "target/nacre-image/kernels")]
    cache: PathBuf,
    /// The operator's signing certificate (PEM), for PCR8.
    #[arg(long, requires = "sign_key")]
    sign_cert: Option<PathBuf>,
    /// The operator's signing key (PEM).
    #[arg(long, requires = "sign_cert")]
    sign_key: Option<PathBuf>,
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Build(args) => run_build(args),
        Command::Describe { eif } => run_describe(eif),
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(2);
        }
    }
}

fn run_build(args: BuildArgs) -> anyhow::Result<i32> {
    let signing = args
        .sign_cert
        .zip(args.sign_key)
        .map(|(cert, key)| Signing { cert, key });
    let options = BuildOptions {
        config: args.config,
        kernel_deb: args.kernel_deb,
        cache: args.cache,
        out: args.out.clone(),
        signing,
    };
    let built = build(&options)?;
    let pcrs = args
        .pcrs_out
        .unwrap_or_else(|| args.out.with_extension("pcrs.json"));
    let json = serde_json::to_string_pretty(&measurements_json(&built.measurements))?;
    std::fs::write(&pcrs, format!("{json}\n"))
        .with_context(|| format!("cannot write {}", pcrs.display()))?;
    println!("{json}");
    eprintln!(
        "wrote {} ({} bytes; run it with at least --memory {} MiB) and its PCRs to {}",
        args.out.display(),
        built.eif_len,
        built.memory_mib,
        pcrs.display()
    );
    Ok(0)
}

fn run_describe(eif: PathBuf) -> anyhow::Result<i32> {
    let d = describe(&eif)?;
    let sections: Vec<_> = d
        .sections
        .iter()
        .map(|(kind, size)| serde_json::json!({"Type": kind, "Size": size}))
        .collect();
    let mut out = measurements_json(&d.measurements);
    out["EifVersion"] = d.version.into();
    out["IsCrcValid"] = d.crc_ok.into();
    out["Sections"] = sections.into();
    if let Some(meta) = d.metadata {
        out["Metadata"] = meta;
    }
    out["IsSigned"] = d.signature.is_some().into();
    if let Some(check) = &d.signature {
        out["SignatureCheck"] = check.is_ok().into();
    }
    println!("{}", serde_json::to_string_pretty(&out)?);
    if !d.crc_ok {
        eprintln!(
            "error: {}: the CRC in its header does not match its contents: the file is damaged",
            eif.display()
        );
        return Ok(1);
    }
    if let Some(Err(why)) = &d.signature {
        eprintln!(
            "error: {}: its signature does not verify: {why}",
            eif.display()
        );
        return Ok(1);
    }
    Ok(0)
}
