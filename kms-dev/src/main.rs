//! `nacre-kms-dev`: the KMS dev stand-in as a process. Prints one line,
//! `listening https://ADDR`, on stdout once bound, then one `refused ...`
//! line per refusal; logs go to stderr.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::Parser;
use nacre_kms_dev::{Config, Credential, KeyConfig, Refusal, StandIn, TlsSource};

/// A dev stand-in for AWS KMS: GenerateDataKey and Decrypt, attested
/// Recipients, key policies (docs/development.md).
#[derive(Parser)]
#[command(name = "nacre-kms-dev", version)]
struct Args {
    /// Address to listen on (port 0: any free port; the line on stdout
    /// says which).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Directory for key material and the TLS CA, kept across restarts.
    #[arg(long, value_name = "DIR")]
    state: PathBuf,
    /// Root certificate (PEM) attestation documents must chain to: the dev
    /// root (`--dev-root DIR`/root.pem). Default: AWS's Nitro root.
    #[arg(long, value_name = "PEM")]
    attestation_root: Option<PathBuf>,
    /// Who may call: AKID:SECRET, repeatable; or a comma-separated list in
    /// the environment (keeps the secret out of `ps`).
    #[arg(
        long,
        value_name = "AKID:SECRET",
        env = "NACRE_KMS_DEV_CREDENTIALS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    credentials: Vec<String>,
    /// A key and its key policy: ARN=POLICY.json, repeatable.
    #[arg(long = "key", value_name = "ARN=POLICY.json", required = true)]
    keys: Vec<String>,
    /// Certificate chain (PEM) to serve instead of the stand-in's own.
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --tls-cert.
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Print the path of the stand-in's CA certificate (made if missing)
    /// and exit: give it to the runtime's --kms-ca.
    #[arg(long)]
    print_ca: bool,
    /// Log format on stderr.
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormat,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// One line on stdout; a closed stdout is not worth dying for.
fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
}

fn config(args: &Args) -> anyhow::Result<Config> {
    let credentials = args
        .credentials
        .iter()
        .map(|c| Credential::parse(c.trim()))
        .collect::<Result<Vec<_>, _>>()?;
    let keys = args
        .keys
        .iter()
        .map(|k| KeyConfig::from_flag(k))
        .collect::<Result<Vec<_>, _>>()?;
    let attestation_root_pem = match &args.attestation_root {
        Some(path) => Some(
            std::fs::read(path)
                .with_context(|| format!("--attestation-root {}", path.display()))?,
        ),
        None => None,
    };
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => TlsSource::Files {
            cert: cert.clone(),
            key: key.clone(),
        },
        (None, None) => TlsSource::SelfIssued,
        _ => bail!("--tls-cert and --tls-key go together"),
    };
    Ok(Config {
        state_dir: args.state.clone(),
        attestation_root_pem,
        credentials,
        keys,
        tls,
        on_refusal: Some(Arc::new(|r: &Refusal| say(&r.to_string()))),
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match args.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }

    let standin = StandIn::open(config(&args)?)?;
    if args.print_ca {
        match standin.tls_ca_path() {
            Some(path) => say(&path.display().to_string()),
            None => bail!("--print-ca: with --tls-cert the stand-in has no CA of its own"),
        }
        return Ok(());
    }
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("--listen {}", args.listen))?;
    let addr = listener.local_addr()?;
    for arn in standin.key_arns() {
        tracing::info!(key = %arn, "key ready");
    }
    if let Some(ca) = standin.tls_ca_path() {
        tracing::info!(ca = %ca.display(), "clients trust this CA (the runtime's --kms-ca)");
    }
    say(&format!("listening https://{addr}"));
    nacre_kms_dev::serve(listener, standin, stop()).await;
    Ok(())
}

/// Ctrl-C or SIGTERM.
async fn stop() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
    tracing::info!("stopping");
}
