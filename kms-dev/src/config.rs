//! What the stand-in is started with (the binary's flags, or a test's
//! values): state directory, attestation root, credentials, keys, TLS.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nacre_kms::sigv4::SecretString;

use crate::error::StandInError;

/// One refused call, as the refusal hook sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The operation (`Decrypt`), or the target as sent when unknown.
    pub operation: String,
    /// The key's ARN (or the `KeyId` as sent), when the call named one.
    pub key: Option<String>,
    /// The KMS error name returned (`AccessDeniedException`).
    pub error: String,
    /// Why: which check failed and what the request had.
    pub reason: String,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "refused {} key={} {}: {}",
            self.operation,
            self.key.as_deref().unwrap_or("-"),
            self.error,
            self.reason
        )
    }
}

/// Called for every refusal (the binary prints a line on stdout).
pub type RefusalHook = Arc<dyn Fn(&Refusal) + Send + Sync>;

/// An access key id and its secret. The secret is never printed: no
/// `Debug` derive, and the manual one shows the id only.
#[derive(Clone)]
pub struct Credential {
    /// The access key id (`AKIA...`).
    pub access_key_id: String,
    /// Zeroed on drop.
    secret: SecretString,
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Credential({}, secret hidden)", self.access_key_id)
    }
}

impl Credential {
    /// A credential from its parts.
    pub fn new(access_key_id: impl Into<String>, secret: impl Into<String>) -> Credential {
        Credential {
            access_key_id: access_key_id.into(),
            secret: SecretString::new(secret.into()),
        }
    }

    /// Parses `AKID:SECRET` (the secret may itself contain `:`).
    pub fn parse(flag: &str) -> Result<Credential, StandInError> {
        match flag.split_once(':') {
            Some((id, secret)) if !id.is_empty() && !secret.is_empty() => {
                Ok(Credential::new(id, secret))
            }
            _ => Err(StandInError::Config(
                "a credential is AKID:SECRET (--credentials or NACRE_KMS_DEV_CREDENTIALS)".into(),
            )),
        }
    }

    /// Parses a comma-separated list of `AKID:SECRET` (the environment
    /// variable's form).
    pub fn parse_list(list: &str) -> Result<Vec<Credential>, StandInError> {
        list.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(Credential::parse)
            .collect()
    }

    /// The secret, for the signature check only.
    pub(crate) fn secret(&self) -> &str {
        self.secret.expose()
    }
}

/// One key: its ARN and its key policy (JSON text).
#[derive(Debug, Clone)]
pub struct KeyConfig {
    /// `arn:aws:kms:REGION:ACCOUNT:key/ID`.
    pub arn: String,
    /// The key policy document.
    pub policy_json: String,
    /// Where the policy was read from, for messages.
    pub policy_source: String,
}

impl KeyConfig {
    /// Parses `ARN=POLICY.json` and reads the policy file.
    pub fn from_flag(flag: &str) -> Result<KeyConfig, StandInError> {
        let Some((arn, path)) = flag.split_once('=') else {
            return Err(StandInError::Config(format!(
                "--key {flag:?}: expected ARN=POLICY.json"
            )));
        };
        let path = Path::new(path);
        let policy_json = std::fs::read_to_string(path).map_err(StandInError::io(path))?;
        Ok(KeyConfig {
            arn: arn.to_string(),
            policy_json,
            policy_source: path.display().to_string(),
        })
    }
}

/// Where the HTTPS certificate comes from.
#[derive(Debug, Clone, Default)]
pub enum TlsSource {
    /// A CA kept in the state directory and a fresh leaf for `localhost`
    /// and `127.0.0.1`.
    #[default]
    SelfIssued,
    /// The operator's PEM files.
    Files {
        /// Certificate chain, leaf first.
        cert: PathBuf,
        /// Its private key.
        key: PathBuf,
    },
}

/// Everything [`crate::StandIn::open`] needs.
#[derive(Clone, Default)]
pub struct Config {
    /// Directory for key material and the TLS CA (created 0700).
    pub state_dir: PathBuf,
    /// PEM of the root attestation documents must chain to (the dev root);
    /// `None` trusts AWS's Nitro root.
    pub attestation_root_pem: Option<Vec<u8>>,
    /// Who may call (SigV4).
    pub credentials: Vec<Credential>,
    /// The keys.
    pub keys: Vec<KeyConfig>,
    /// The HTTPS identity.
    pub tls: TlsSource,
    /// Called for each refusal, besides the log.
    pub on_refusal: Option<RefusalHook>,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("state_dir", &self.state_dir)
            .field("attestation_root", &self.attestation_root_pem.is_some())
            .field("credentials", &self.credentials)
            .field("keys", &self.keys)
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_parse_and_never_show_the_secret() {
        let c = Credential::parse("AKIDEXAMPLE:se:cret").expect("parse");
        assert_eq!(c.access_key_id, "AKIDEXAMPLE");
        assert_eq!(c.secret(), "se:cret");
        assert!(!format!("{c:?}").contains("se:cret"));
        let cfg = Config {
            credentials: vec![c],
            ..Config::default()
        };
        assert!(!format!("{cfg:?}").contains("se:cret"));
        for bad in ["", "AKID", ":secret", "AKID:"] {
            assert!(Credential::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(Credential::parse_list("a:1, b:2,").expect("list").len(), 2);
    }

    #[test]
    fn key_flag_needs_an_equals_and_a_readable_file() {
        assert!(KeyConfig::from_flag("arn:aws:kms:x").is_err());
        assert!(KeyConfig::from_flag("arn=/nonexistent/policy.json").is_err());
    }
}
