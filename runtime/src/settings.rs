//! The one place flags are checked together: a [`Config`] as parsed becomes
//! typed [`Settings`] the composition root ([`crate::Runtime`]) builds
//! from, or a [`SettingsError`] that names the flag and the fix.
//!
//! Each flag's own syntax is checked where it is parsed (`config.rs`);
//! here go the rules between flags (`--fqdn-leader` needs `--egress` and
//! `--control`), the choices several flags make together (where the
//! certificate comes from) and values read from the machine
//! (`/proc/meminfo` for the guest memory budget).

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use nacre_transport::tunnel::Target;
use nacre_transport::{Address, AllowList};

use crate::config::{AttestationMode, Config, ConfigError, LogFormat};
use crate::guests::{BootGuest, KvLimits};

mod kms;
mod raft;

pub use kms::KmsSettings;

/// Guest instances that may run at once across the process.
pub const MAX_INSTANCES: u32 = 256;

/// Where the public listener's certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertificateSource {
    /// `--tls-cert` and `--tls-key`: the operator's files, which the
    /// operator renews.
    Files {
        /// The PEM certificate chain.
        cert: PathBuf,
        /// The PEM private key.
        key: PathBuf,
    },
    /// `--acme-directory`: ordered from the CA inside the enclave.
    Acme {
        /// The https URL of the CA's directory.
        directory: String,
        /// `--acme-contact`.
        contact: Option<String>,
    },
    /// Neither: a self-signed certificate made at start (and renewed).
    SelfSigned,
}

/// Where attestation documents come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttestationSource {
    /// The Nitro Security Module (`/dev/nsm`).
    Nsm,
    /// The dev stand-in, with its CA kept in this directory.
    Dev {
        /// `--dev-root`.
        root: PathBuf,
        /// `--dev-pcr8`: the signer PCR its documents carry.
        pcr8: Option<Vec<u8>>,
    },
}

/// The sync flags, checked together (`--fqdn-leader` and the rest).
#[derive(Debug, Clone)]
pub struct SyncSettings {
    /// Where the leader is reached, and the deployment's name.
    pub leader: Target,
    /// The sync listener (`--sync-listen`, default `vsock://any:444`).
    pub listen: Address,
    /// `--sync-accept-pcr0`.
    pub accept_pcr0: Vec<Vec<u8>>,
    /// The host proxy's CONNECT endpoint peers are reached through.
    pub egress: Address,
    /// `--sync-genesis-after`.
    pub genesis_after: Duration,
    /// The replicated data's flags.
    pub raft: crate::raft::RaftSettings,
}

/// Guests' outbound network.
#[derive(Debug, Clone)]
pub struct EgressSettings {
    /// `--egress`: the host proxy's CONNECT endpoint (None: no network).
    pub proxy: Option<Address>,
    /// `--egress-allow`: the cap on every guest's allow list.
    pub cap: Option<AllowList>,
    /// `--extra-ca`.
    pub extra_ca: Option<PathBuf>,
}

/// What one request and one guest may use.
#[derive(Debug, Clone)]
pub struct LimitSettings {
    /// `--guest-memory`.
    pub guest_memory: u64,
    /// `--guest-memory-total`, or half of this machine's memory.
    pub guest_memory_total: u64,
    /// `--guest-instances`.
    pub guest_instances: u32,
    /// `--request-timeout`.
    pub request_timeout: Duration,
    /// `--client-timeout`.
    pub client_timeout: Duration,
    /// `--max-connections`.
    pub max_connections: usize,
    /// `--max-body`.
    pub max_body: u64,
    /// `--kv-max-keys` and `--kv-max-bytes`.
    pub kv: KvLimits,
}

/// Everything the runtime is built from, checked.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `--listen`.
    pub listen: Address,
    /// `--fqdn`.
    pub fqdn: String,
    /// Where the certificate comes from.
    pub certificate: CertificateSource,
    /// `--renew-after`.
    pub renew_after: Option<Duration>,
    /// Where attestation documents come from.
    pub attestation: AttestationSource,
    /// `--guest`: deployed at start.
    pub guests: Vec<BootGuest>,
    /// `--wait-for-app`.
    pub wait_for_app: bool,
    /// `--admin-token-sha256` (None: no admin API).
    pub admin_token_sha256: Option<[u8; 32]>,
    /// Guests' outbound network.
    pub egress: EgressSettings,
    /// With `--fqdn-leader`.
    pub sync: Option<SyncSettings>,
    /// `--control`.
    pub control: Option<Address>,
    /// With `--kms-key`: the sealed deployment.
    pub kms: Option<KmsSettings>,
    /// `--metrics-listen`.
    pub metrics_listen: Option<Address>,
    /// `--debug`.
    pub debug: bool,
    /// The limits.
    pub limits: LimitSettings,
    /// `--log-format`.
    pub log_format: LogFormat,
    /// The configuration as `/enclave/config` shows it.
    pub shown: serde_json::Value,
}

/// A combination of flags that cannot run, with the fix.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// A flag, or flags together, that cannot run.
    #[error("{0}")]
    Invalid(String),
    /// The flags did not parse.
    #[error(transparent)]
    Config(#[from] ConfigError),
}

fn invalid(message: impl Into<String>) -> SettingsError {
    SettingsError::Invalid(message.into())
}

impl Settings {
    /// Parses and checks a command line (the first item is the program's
    /// name), with `NACRE_*` and `--config` as [`Config::load_from`] reads
    /// them.
    pub fn from_args<I, T>(args: I) -> Result<Settings, SettingsError>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString>,
    {
        Settings::from_config(Config::load_from(
            args.into_iter().map(Into::into).collect(),
        )?)
    }

    /// Checks `config`'s flags together.
    pub fn from_config(config: Config) -> Result<Settings, SettingsError> {
        let shown = serde_json::to_value(&config)
            .map_err(|e| invalid(format!("cannot show the configuration: {e}")))?;
        let sync = sync_settings(&config)?;
        let kms = kms::kms_settings(&config)?;
        let certificate = certificate_source(&config)?;
        let attestation = match (config.attestation, &config.dev_root) {
            (AttestationMode::Nsm, _) if config.dev_pcr8.is_some() => {
                return Err(invalid(
                    "--dev-pcr8 is for --attestation dev: the NSM measures PCR8 itself",
                ));
            }
            (AttestationMode::Nsm, _) => AttestationSource::Nsm,
            (AttestationMode::Dev, Some(dir)) => AttestationSource::Dev {
                root: dir.clone(),
                pcr8: config.dev_pcr8.as_deref().and_then(|h| hex::decode(h).ok()),
            },
            (AttestationMode::Dev, None) => {
                return Err(invalid(
                    "--attestation dev needs --dev-root DIR (where the dev CA is kept)",
                ));
            }
        };
        let limits = LimitSettings {
            guest_memory: config.guest_memory,
            guest_memory_total: guest_memory_total(&config)?,
            guest_instances: config.guest_instances,
            request_timeout: config.request_timeout,
            client_timeout: config.client_timeout,
            max_connections: config.max_connections as usize,
            max_body: config.max_body,
            kv: KvLimits {
                max_keys: config.kv_max_keys,
                max_bytes: config.kv_max_bytes,
            },
        };
        let cap = (!config.egress_allow.is_empty()).then_some(AllowList(config.egress_allow));
        Ok(Settings {
            listen: config.listen,
            fqdn: config.fqdn,
            certificate,
            renew_after: config.renew_after,
            attestation,
            guests: config.guests,
            wait_for_app: config.wait_for_app,
            admin_token_sha256: config.admin_token_sha256,
            egress: EgressSettings {
                proxy: config.egress,
                cap,
                extra_ca: config.extra_ca,
            },
            sync,
            kms,
            control: config.control,
            metrics_listen: config.metrics_listen,
            debug: config.debug,
            limits,
            log_format: config.log_format,
            shown,
        })
    }

    /// Whether the listener opens for the CA's validation before it opens
    /// to clients: `--wait-for-app` with ACME.
    pub fn gated(&self) -> bool {
        self.wait_for_app && matches!(self.certificate, CertificateSource::Acme { .. })
    }
}

/// The certificate flags: `--tls-cert` with `--tls-key` (clap pairs them),
/// or an https `--acme-directory` reached through `--egress`.
fn certificate_source(config: &Config) -> Result<CertificateSource, SettingsError> {
    if let (Some(cert), Some(key)) = (&config.tls_cert, &config.tls_key) {
        return Ok(CertificateSource::Files {
            cert: cert.clone(),
            key: key.clone(),
        });
    }
    let Some(directory) = &config.acme_directory else {
        return Ok(CertificateSource::SelfSigned);
    };
    if config.egress.is_none() {
        return Err(invalid(
            "--acme-directory needs --egress ADDR: the ACME client reaches the CA through the host proxy",
        ));
    }
    let url: http::Uri = directory
        .parse()
        .map_err(|e| invalid(format!("--acme-directory {directory}: {e}")))?;
    if url.scheme() != Some(&http::uri::Scheme::HTTPS) || url.host().is_none() {
        return Err(invalid(format!(
            "--acme-directory {directory}: give the https:// URL of the CA's directory"
        )));
    }
    Ok(CertificateSource::Acme {
        directory: directory.clone(),
        contact: config.acme_contact.clone(),
    })
}

/// The sync flags: `--fqdn-leader` needs `--egress` (peers are reached
/// through the host proxy) and `--control` (whose Hello says where peers
/// reach this enclave), and the other sync flags need `--fqdn-leader`.
fn sync_settings(config: &Config) -> Result<Option<SyncSettings>, SettingsError> {
    if config.sync_advertise.is_some() {
        return Err(invalid(
            "--sync-advertise is now a flag of nacre-host-proxy, which tells the enclave over the control link: the value differs between parents, and nothing else in the enclave's configuration may come from the host",
        ));
    }
    let Some(leader) = &config.fqdn_leader else {
        if config.sync_listen.is_some() {
            return Err(invalid(
                "--sync-listen takes effect with --fqdn-leader only: add it, or remove it",
            ));
        }
        return Ok(None);
    };
    let leader =
        Target::parse(leader, Some(444)).map_err(|e| invalid(format!("--fqdn-leader {e}")))?;
    let egress = config.egress.clone().ok_or_else(|| {
        invalid(
            "--fqdn-leader needs --egress ADDR: enclaves reach each other through the host proxy",
        )
    })?;
    if config.control.is_none() {
        return Err(invalid(
            "--fqdn-leader needs --control ADDR: the host proxy's Hello on it says where the other enclaves reach this one (nacre-host-proxy --sync-advertise)",
        ));
    }
    let listen = match &config.sync_listen {
        Some(a) => a.clone(),
        None => "vsock://any:444"
            .parse::<Address>()
            .map_err(|e| invalid(format!("the default --sync-listen: {e}")))?,
    };
    Ok(Some(SyncSettings {
        leader,
        listen,
        accept_pcr0: config.sync_accept_pcr0.clone(),
        egress,
        genesis_after: config.sync_genesis_after,
        raft: raft::raft_settings(
            &config.raft,
            matches!(config.attestation, AttestationMode::Dev),
        )?,
    }))
}

/// `--guest-memory-total`, or half of this machine's memory: the other half
/// is the runtime's own (compiled code, key-value data, connections) and
/// what host calls copy out of guests, which is never more than the
/// callers' own memory.
fn guest_memory_total(config: &Config) -> Result<u64, SettingsError> {
    let total = match config.guest_memory_total {
        Some(t) => t,
        None => {
            let meminfo = std::fs::read_to_string("/proc/meminfo").map_err(|e| {
                invalid(format!(
                    "cannot read /proc/meminfo to size guest memory: give --guest-memory-total BYTES: {e}"
                ))
            })?;
            meminfo
                .lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .ok_or_else(|| {
                    invalid("no MemTotal in /proc/meminfo: give --guest-memory-total BYTES")
                })?
                * 1024
                / 2
        }
    };
    if total < config.guest_memory {
        return Err(invalid(format!(
            "--guest-memory-total {total} is less than --guest-memory {}: no instance could reach its limit; raise the first or lower the second",
            config.guest_memory
        )));
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(extra: &[&str]) -> Result<Settings, SettingsError> {
        let mut args = vec![
            "nacre-runtime",
            "--fqdn",
            "x.test",
            "--guest-memory-total",
            "1GiB",
        ];
        args.extend_from_slice(extra);
        Settings::from_args(args)
    }

    fn refused(extra: &[&str]) -> String {
        match settings(extra) {
            Ok(_) => panic!("{extra:?} was accepted"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn the_certificate_source_is_one_of_three() {
        let s = settings(&[]).expect("defaults");
        assert_eq!(s.certificate, CertificateSource::SelfSigned);
        let s = settings(&["--tls-cert", "c.pem", "--tls-key", "k.pem"]).expect("files");
        assert_eq!(
            s.certificate,
            CertificateSource::Files {
                cert: "c.pem".into(),
                key: "k.pem".into()
            }
        );
        let s = settings(&[
            "--acme-directory",
            "https://ca.test/dir",
            "--egress",
            "unix:/e",
        ])
        .expect("acme");
        assert_eq!(
            s.certificate,
            CertificateSource::Acme {
                directory: "https://ca.test/dir".into(),
                contact: None
            }
        );
        assert!(!s.gated());
    }

    #[test]
    fn flags_that_need_each_other_are_named() {
        let e = refused(&["--acme-directory", "https://ca.test/dir"]);
        assert!(e.contains("--acme-directory needs --egress"), "{e}");
        let e = refused(&[
            "--acme-directory",
            "http://ca.test/dir",
            "--egress",
            "unix:/e",
        ]);
        assert!(e.contains("https://"), "{e}");
        let e = refused(&["--fqdn-leader", "a.test"]);
        assert!(e.contains("--fqdn-leader needs --egress"), "{e}");
        let e = refused(&["--fqdn-leader", "a.test", "--egress", "unix:/e"]);
        assert!(e.contains("--fqdn-leader needs --control"), "{e}");
        let e = refused(&["--sync-listen", "unix:/s"]);
        assert!(
            e.contains("--sync-listen takes effect with --fqdn-leader"),
            "{e}"
        );
        let e = refused(&["--attestation", "dev"]);
        assert!(e.contains("--dev-root"), "{e}");
        let e = refused(&["--guest-memory", "2GiB"]);
        assert!(e.contains("--guest-memory-total"), "{e}");
        let arn = "arn:aws:kms:eu-west-1:111122223333:key/k";
        let e = refused(&["--kms-key", arn, "--egress", "unix:/e"]);
        assert!(e.contains("--kms-key needs --control"), "{e}");
        let e = refused(&["--kms-key", arn, "--control", "unix:/c"]);
        assert!(e.contains("--kms-key needs --egress"), "{e}");
        let e = refused(&["--kms-key", "alias/x", "--control", "unix:/c"]);
        assert!(e.contains("give the key's ARN"), "{e}");
        let e = refused(&[
            "--kms-key",
            arn,
            "--control",
            "unix:/c",
            "--egress",
            "unix:/e",
            "--kms-endpoint",
            "http://kms.test",
        ]);
        assert!(e.contains("--kms-endpoint http://kms.test"), "{e}");
    }

    #[test]
    fn sync_settings_default_to_port_444() {
        let s = settings(&[
            "--fqdn-leader",
            "leader.test",
            "--egress",
            "unix:/e",
            "--control",
            "unix:/c",
        ])
        .expect("sync");
        let sync = s.sync.expect("sync settings");
        assert_eq!(sync.leader.to_string(), "leader.test:444");
        assert_eq!(sync.listen.to_string(), "vsock://any:444");
        assert_eq!(sync.genesis_after, Duration::from_secs(30));
    }
}
