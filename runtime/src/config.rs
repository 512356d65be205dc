//! `nacre-runtime` flags (docs/operating.md): command line, `NACRE_*` environment and
//! `--config FILE.toml`, in that order of precedence.

mod raft;

pub use raft::RaftFlags;

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use nacre_transport::{Address, AllowRule};

use crate::guests::BootGuest;
use crate::units::{parse_duration, parse_size};

/// The Nacre enclave runtime: serves WebAssembly components over TLS that
/// ends inside the enclave, and attests to the code that answers.
///
/// Every flag can also be set as NACRE_<FLAG> in the environment (for
/// example NACRE_REQUEST_TIMEOUT=5s) or as a key of the --config TOML file
/// (for example request-timeout = "5s"). The command line wins over the
/// environment, which wins over the file.
// The doc comments are the `--help` text, where `NACRE_<FLAG>` and
// `NAME=PATH[;route=/p]` are read literally, not as HTML or links.
#[allow(rustdoc::invalid_html_tags, rustdoc::broken_intra_doc_links)]
#[derive(Debug, Clone, Parser, serde::Serialize)]
#[command(name = "nacre-runtime", version, args_override_self = true)]
pub struct Config {
    /// Public TLS listener: tcp://HOST:PORT, unix:PATH or vsock://CID:PORT.
    #[arg(
        long,
        env = "NACRE_LISTEN",
        default_value = "vsock://any:443",
        value_name = "ADDR"
    )]
    pub listen: Address,

    /// Inter-enclave listener for key sync, with --fqdn-leader (default
    /// vsock://any:444 then).
    #[arg(long, env = "NACRE_SYNC_LISTEN", value_name = "ADDR")]
    pub sync_listen: Option<Address>,

    /// No longer a runtime flag: where peers reach this enclave differs
    /// between parents of one image, so the host proxy says it
    /// (`nacre-host-proxy --sync-advertise`) on the control link. Kept only
    /// to refuse it with that fix.
    #[arg(
        long,
        env = "NACRE_SYNC_ADVERTISE",
        value_name = "HOST:PORT",
        hide = true
    )]
    pub sync_advertise: Option<String>,

    /// How long a leader that holds no keys, having seen no sign of its
    /// deployment (no heartbeat from an enclave holding keys, no exchange
    /// begun), waits before it starts the deployment's first key set. Make
    /// it longer than a worker takes to find a new leader (about 15 s).
    #[arg(long, env = "NACRE_SYNC_GENESIS_AFTER", default_value = "30s", value_parser = parse_duration, value_name = "DUR")]
    #[serde(serialize_with = "ser_duration")]
    pub sync_genesis_after: Duration,

    /// PCR0 (hex) of another image whose enclaves this one syncs with, for
    /// rolling upgrades (repeatable); without it, a peer's PCRs must equal
    /// this enclave's (all but PCR4).
    #[arg(
        long,
        env = "NACRE_SYNC_ACCEPT_PCR0",
        value_name = "HEX",
        value_delimiter = ',',
        value_parser = parse_pcr0
    )]
    #[serde(serialize_with = "ser_hex_list")]
    pub sync_accept_pcr0: Vec<Vec<u8>>,

    /// The replicated data's flags (`--raft-*`, `--kv-write-timeout`).
    #[command(flatten)]
    #[serde(flatten)]
    pub raft: RaftFlags,

    /// The host proxy's control channel (its --control-listen): the
    /// runtime's log records and guests' output lines go there too, as
    /// length-prefixed protobuf; reconnected by itself.
    #[arg(long, env = "NACRE_CONTROL", value_name = "ADDR")]
    pub control: Option<Address>,

    /// Name in the TLS certificate, e.g. app.example.com.
    #[arg(long, env = "NACRE_FQDN", value_name = "NAME")]
    pub fqdn: String,

    /// PEM certificate chain to serve; without it (and without
    /// --acme-directory) a self-signed P-256 certificate is made at start.
    #[arg(long, env = "NACRE_TLS_CERT", value_name = "PEM", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key for --tls-cert.
    #[arg(long, env = "NACRE_TLS_KEY", value_name = "PEM", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// ACME directory URL (https) to obtain a certificate for --fqdn from,
    /// by TLS-ALPN-01 on --listen, through --egress. Giving it agrees to
    /// the CA's terms of service (the log shows their URL).
    #[arg(
        long,
        env = "NACRE_ACME_DIRECTORY",
        value_name = "URL",
        conflicts_with = "tls_cert"
    )]
    pub acme_directory: Option<String>,

    /// Contact address given to the ACME server (expiry notices).
    #[arg(
        long,
        env = "NACRE_ACME_CONTACT",
        value_name = "EMAIL",
        requires = "acme_directory"
    )]
    pub acme_contact: Option<String>,

    /// Renew the certificate (the CA's, or the self-signed one) once it is
    /// this old (default: within the CA's ARI window, else at two thirds of
    /// its lifetime). Not for --tls-cert, which the operator renews.
    #[arg(long, env = "NACRE_RENEW_AFTER", value_parser = parse_duration, value_name = "DUR", conflicts_with = "tls_cert")]
    #[serde(serialize_with = "ser_opt_duration")]
    pub renew_after: Option<Duration>,

    /// Attestation provider: nsm (the Nitro Security Module, /dev/nsm) or
    /// dev (a local stand-in signed by a dev CA).
    #[arg(long, env = "NACRE_ATTESTATION", value_enum, default_value_t = AttestationMode::Nsm)]
    pub attestation: AttestationMode,

    /// Dev mode: directory of the dev CA (created when missing).
    #[arg(long, env = "NACRE_DEV_ROOT", value_name = "DIR")]
    pub dev_root: Option<PathBuf>,

    /// Dev mode: PCR8 of the documents (96 hex digits; default zeros),
    /// standing for the certificate that signed the image, to try a KMS
    /// key policy that names a signer (kms:RecipientAttestation:PCR8).
    #[arg(long, env = "NACRE_DEV_PCR8", value_name = "HEX", value_parser = parse_pcr8)]
    pub dev_pcr8: Option<String>,

    /// Guest to load at start: NAME=PATH[;route=/p][;allow=HOST:PORT,...]
    /// (repeatable).
    #[arg(
        long = "guest",
        env = "NACRE_GUEST",
        value_name = "SPEC",
        value_delimiter = '|'
    )]
    #[serde(skip)]
    pub guests: Vec<BootGuest>,

    /// Enables the admin API for the bearer token whose SHA-256 is HEX;
    /// absent, the admin API answers 403.
    #[arg(long, env = "NACRE_ADMIN_TOKEN_SHA256", value_name = "HEX", value_parser = parse_sha256)]
    // /enclave/config says whether the admin API is on, never the hash: an
    // unsalted SHA-256 of a token a person chose can be guessed offline.
    #[serde(rename = "admin_api", serialize_with = "ser_enabled")]
    pub admin_token_sha256: Option<[u8; 32]>,

    /// The host proxy's CONNECT endpoint for guests' outbound HTTPS;
    /// absent, guests have no outbound network.
    #[arg(long, env = "NACRE_EGRESS", value_name = "ADDR")]
    pub egress: Option<Address>,

    /// The enclave's cap on every guest's allow list (repeatable;
    /// *.domain:port wildcards). An upload asking for more is refused.
    #[arg(
        long,
        env = "NACRE_EGRESS_ALLOW",
        value_name = "HOST:PORT",
        value_delimiter = ','
    )]
    pub egress_allow: Vec<AllowRule>,

    /// Extra trust roots (PEM) for guests' outbound TLS.
    #[arg(long, env = "NACRE_EXTRA_CA", value_name = "PEM")]
    pub extra_ca: Option<PathBuf>,

    /// Enables multi-enclave key sync: the name (and port, default 444)
    /// at which the deployment's leader is reached, through the host proxy
    /// (--egress).
    #[arg(long, env = "NACRE_FQDN_LEADER", value_name = "HOST[:PORT]")]
    pub fqdn_leader: Option<String>,

    /// Seal the deployment with AWS KMS: the ARN of a symmetric KMS key
    /// (arn:aws:kms:REGION:ACCOUNT:key/ID) whose key policy lets this
    /// image unwrap it. The deployment's root is made (or unwrapped) with
    /// an attestation document, and its certificate, guests, state and
    /// key-value data are kept sealed in the host proxy's --store, so the
    /// deployment survives its enclaves. Needs --control and --egress.
    #[arg(long, env = "NACRE_KMS_KEY", value_name = "ARN")]
    pub kms_key: Option<String>,

    /// The KMS key's region (default: the ARN's).
    #[arg(
        long,
        env = "NACRE_KMS_REGION",
        value_name = "REGION",
        requires = "kms_key"
    )]
    pub kms_region: Option<String>,

    /// KMS's https URL (default `https://kms.REGION.amazonaws.com`): a VPC
    /// endpoint, or the dev stand-in. Reached through --egress, with TLS
    /// inside the enclave.
    #[arg(
        long,
        env = "NACRE_KMS_ENDPOINT",
        value_name = "URL",
        requires = "kms_key"
    )]
    pub kms_endpoint: Option<String>,

    /// The roots (PEM) KMS's certificate must chain to, instead of
    /// Amazon's (a VPC endpoint with a private CA, the dev stand-in).
    /// --extra-ca does not count for KMS.
    #[arg(long, env = "NACRE_KMS_CA", value_name = "PEM", requires = "kms_key")]
    pub kms_ca: Option<PathBuf>,

    /// Open the public listener only once every --guest is compiled and
    /// ready.
    #[arg(long, env = "NACRE_WAIT_FOR_APP")]
    pub wait_for_app: bool,

    /// Expose /enclave/debug with runtime statistics.
    #[arg(long, env = "NACRE_DEBUG")]
    pub debug: bool,

    /// Check the flags and every --guest (each must compile and link as it
    /// would be deployed), say so, and exit without opening anything: 0
    /// when the runtime would start, 2 otherwise. `nacre image build` runs
    /// it before it builds an image.
    #[arg(long)]
    #[serde(skip)]
    pub check: bool,

    /// Serve the runtime's Prometheus metrics here (plain HTTP, any path):
    /// process-wide figures only (per-guest figures are at /enclave/metrics,
    /// behind the admin token), no secrets. Expose it on
    /// the parent with a host proxy --inbound rule.
    #[arg(long, env = "NACRE_METRICS_LISTEN", value_name = "ADDR")]
    pub metrics_listen: Option<Address>,

    /// Wall-clock limit for one guest request; past it the guest is
    /// stopped and the client gets 504.
    #[arg(long, env = "NACRE_REQUEST_TIMEOUT", default_value = "30s", value_parser = parse_duration, value_name = "DUR")]
    #[serde(serialize_with = "ser_duration")]
    pub request_timeout: Duration,

    /// How long a client may keep the runtime waiting: to finish its TLS
    /// handshake, to send a request head, between the parts of a request
    /// body while it is awaited (then 408), and with nothing in flight on
    /// an open connection (HTTP/1.1 keep-alive, HTTP/2 with no open
    /// stream). Past it the connection is closed.
    #[arg(long, env = "NACRE_CLIENT_TIMEOUT", default_value = "10s", value_parser = parse_duration, value_name = "DUR")]
    #[serde(serialize_with = "ser_duration")]
    pub client_timeout: Duration,

    /// Client connections served at once, HTTPS and every TCP guest's port
    /// together. Past it HTTPS clients wait in the kernel's backlog and a
    /// TCP guest's new clients are closed (each TCP guest holds at most 256
    /// of them in any case).
    #[arg(long, env = "NACRE_MAX_CONNECTIONS", default_value_t = 4096, value_parser = clap::value_parser!(u32).range(1..=65536), value_name = "N")]
    pub max_connections: u32,

    /// Instances one guest may run at once, of the 256 the runtime runs in
    /// all: a guest whose requests stall or pile up holds at most this
    /// many, and the others keep answering.
    #[arg(long, env = "NACRE_GUEST_INSTANCES", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=256), value_name = "N")]
    pub guest_instances: u32,

    /// Linear memory all guest instances together may hold (default: half
    /// of this machine's memory, from /proc/meminfo). Each guest name may
    /// hold its share of it (this × --guest-instances / 256). Growth past
    /// either fails inside the guest; a request that cannot get the memory
    /// its instance starts with is answered 503.
    #[arg(long, env = "NACRE_GUEST_MEMORY_TOTAL", value_parser = parse_size, value_name = "BYTES")]
    pub guest_memory_total: Option<u64>,

    /// Linear-memory limit per guest instance.
    #[arg(long, env = "NACRE_GUEST_MEMORY", default_value = "128MiB", value_parser = parse_size, value_name = "BYTES")]
    pub guest_memory: u64,

    /// Request body limit, for guests and uploads alike.
    #[arg(long, env = "NACRE_MAX_BODY", default_value = "16MiB", value_parser = parse_size, value_name = "BYTES")]
    pub max_body: u64,

    /// wasi:keyvalue quota: keys one guest may keep, across its buckets.
    #[arg(
        long,
        env = "NACRE_KV_MAX_KEYS",
        default_value_t = 10_000,
        value_name = "N"
    )]
    pub kv_max_keys: u64,

    /// wasi:keyvalue quota: bytes of keys plus values one guest may keep.
    #[arg(long, env = "NACRE_KV_MAX_BYTES", default_value = "64MiB", value_parser = parse_size, value_name = "BYTES")]
    pub kv_max_bytes: u64,

    /// Log format.
    #[arg(long, env = "NACRE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// TOML file with any of these flags as keys.
    #[arg(long, env = "NACRE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// Where attestation documents come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AttestationMode {
    /// The Nitro Security Module at /dev/nsm.
    Nsm,
    /// The local dev stand-in (docs/attestation.md).
    Dev,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

fn parse_sha256(s: &str) -> Result<[u8; 32], String> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out).map_err(|_| {
        format!(
            "{s:?} is not a SHA-256: give 64 hex digits, e.g. from `printf %s TOKEN | sha256sum`"
        )
    })?;
    Ok(out)
}

fn parse_pcr0(s: &str) -> Result<Vec<u8>, String> {
    match hex::decode(s) {
        Ok(v) if v.iter().all(|b| *b == 0) && v.len() == 48 => Err(format!(
            "{s:?} is all zeros, the PCR0 of every enclave in debug mode (whose memory the host reads): never accept it"
        )),
        Ok(v) if v.len() == 48 => Ok(v),
        _ => Err(format!(
            "{s:?} is not a PCR0: give 96 hex digits (SHA-384), as `nacre verify` prints"
        )),
    }
}

/// A PCR as hex, checked and lowercased (clap would read a `Vec<u8>`
/// field as a list of flags).
fn parse_pcr8(s: &str) -> Result<String, String> {
    match hex::decode(s) {
        Ok(v) if v.len() == 48 => Ok(hex::encode(v)),
        _ => Err(format!("{s:?} is not a PCR: give 96 hex digits (SHA-384)")),
    }
}

fn ser_hex_list<S: serde::Serializer>(v: &[Vec<u8>], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(v.iter().map(hex::encode))
}

fn ser_enabled<S: serde::Serializer>(v: &Option<[u8; 32]>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(if v.is_some() { "enabled" } else { "disabled" })
}

fn ser_duration<S: serde::Serializer>(v: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&humantime::format_duration(*v))
}

fn ser_opt_duration<S: serde::Serializer>(v: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => ser_duration(v, s),
        None => s.serialize_none(),
    }
}

/// Why the configuration could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The --config file is unreadable or not TOML.
    #[error("--config {path}: {why}")]
    File {
        /// The file.
        path: String,
        /// What went wrong.
        why: String,
    },
    /// Flags are invalid (clap's message, which includes usage).
    #[error(transparent)]
    Flags(#[from] clap::Error),
}

impl Config {
    /// Parses `args` (program name first), reading `--config` and the
    /// environment.
    pub fn load_from(args: Vec<OsString>) -> Result<Config, ConfigError> {
        let file =
            config_path(&args).or_else(|| std::env::var_os("NACRE_CONFIG").map(PathBuf::from));
        let mut all: Vec<OsString> = args.iter().take(1).cloned().collect();
        if let Some(path) = file {
            all.extend(toml_args(&path)?);
        }
        all.extend(args.into_iter().skip(1));
        Ok(Config::try_parse_from(all)?)
    }
}

fn config_path(args: &[OsString]) -> Option<PathBuf> {
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        let a = a.to_str()?;
        if a == "--config" {
            return it.next().map(PathBuf::from);
        }
        if let Some(v) = a.strip_prefix("--config=") {
            return Some(PathBuf::from(v));
        }
    }
    None
}

/// Turns TOML keys into flags placed before the real command line, so clap
/// validates both the same way and later (command-line) values override.
/// Keys whose NACRE_ variable is set are skipped: the environment wins over
/// the file.
fn toml_args(path: &std::path::Path) -> Result<Vec<OsString>, ConfigError> {
    let err = |why: String| ConfigError::File {
        path: path.display().to_string(),
        why,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| err(e.to_string()))?;
    let mut out = Vec::new();
    for (key, value) in table {
        let flag = key.replace('_', "-");
        if flag == "config" {
            return Err(err("a config file cannot name another config file".into()));
        }
        let env = format!("NACRE_{}", flag.replace('-', "_").to_ascii_uppercase());
        if std::env::var_os(env).is_some() {
            continue;
        }
        let values = match value {
            toml::Value::Array(items) => items,
            other => vec![other],
        };
        for v in values {
            match v {
                toml::Value::Boolean(true) => out.push(format!("--{flag}").into()),
                toml::Value::Boolean(false) => {}
                toml::Value::String(s) => out.push(format!("--{flag}={s}").into()),
                toml::Value::Integer(i) => out.push(format!("--{flag}={i}").into()),
                other => {
                    return Err(err(format!(
                        "key {key:?}: {other} is not a string, number or boolean"
                    )));
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<OsString> {
        std::iter::once("nacre-runtime")
            .chain(a.iter().copied())
            .map(OsString::from)
            .collect()
    }

    #[test]
    fn defaults_and_units() {
        let c = Config::load_from(args(&["--fqdn", "x.test"])).unwrap();
        assert_eq!(c.listen.to_string(), "vsock://any:443");
        assert_eq!(c.request_timeout, Duration::from_secs(30));
        assert_eq!(c.guest_memory, 128 << 20);
        assert_eq!(c.max_body, 16 << 20);
        assert_eq!(c.attestation, AttestationMode::Nsm);
        assert_eq!(c.client_timeout, Duration::from_secs(10));
        assert_eq!(c.guest_instances, 64);
        assert_eq!(c.guest_memory_total, None);
        let c = Config::load_from(args(&[
            "--fqdn",
            "x",
            "--max-body",
            "1KiB",
            "--request-timeout",
            "2s",
        ]))
        .unwrap();
        assert_eq!(c.max_body, 1024);
        assert_eq!(c.request_timeout, Duration::from_secs(2));
    }

    #[test]
    fn bad_values_are_named() {
        let e = Config::load_from(args(&["--fqdn", "x", "--listen", "http://x"]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("http://x"), "{e}");
        let e = Config::load_from(args(&["--fqdn", "x", "--admin-token-sha256", "zz"]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("64 hex digits"), "{e}");
        let e = Config::load_from(args(&["--fqdn", "x", "--guest-instances", "300"]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("300"), "{e}");
        let e = Config::load_from(args(&["--fqdn", "x", "--tls-cert", "a.pem"]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("--tls-key"), "{e}");
    }

    #[test]
    fn toml_file_then_command_line() {
        let dir = std::env::temp_dir().join(format!("nacre-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("c.toml");
        std::fs::write(
            &file,
            "fqdn = \"from.file\"\nmax_body = \"2KiB\"\ndebug = true\nguest = [\"a=a.wasm\", \"b=b.wasm;route=/\"]\n",
        )
        .unwrap();
        let f = file.to_str().unwrap();
        let c = Config::load_from(args(&["--config", f, "--max-body", "3KiB"])).unwrap();
        assert_eq!(c.fqdn, "from.file");
        assert_eq!(c.max_body, 3 * 1024, "command line overrides the file");
        assert!(c.debug);
        assert_eq!(c.guests.len(), 2);
        std::fs::write(&file, "fqdn = [1.5]\n").unwrap();
        let e = Config::load_from(args(&["--config", f]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("c.toml"), "{e}");
    }
}
