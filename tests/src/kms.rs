//! The KMS dev stand-in as the tests run it: its process, a key policy
//! naming images or signers, and the credentials the host proxy hands the
//! enclave.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use nacre_cli::process::{Stderr, Supervised};

use crate::{bin, temp_dir};

/// The test key.
pub const KEY_ARN: &str =
    "arn:aws:kms:eu-west-1:111122223333:key/0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d";
/// The parent's access key.
pub const ACCESS_KEY: &str = "AKIANACRETESTPARENT1";
/// The parent's secret key.
pub const SECRET_KEY: &str = "nacre-test-parent-secret-access-key-0001";

/// What the key policy lets unwrap the root.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// PCR0s (`kms:RecipientAttestation:ImageSha384`), hex.
    pub images: Vec<String>,
    /// A PCR8 (`kms:RecipientAttestation:PCR8`), hex: the image's signer.
    pub signer: Option<String>,
}

impl Policy {
    /// Images of exactly these PCR0s.
    pub fn images(pcr0s: &[String]) -> Policy {
        Policy {
            images: pcr0s.to_vec(),
            signer: None,
        }
    }

    /// Images signed by the signer of this PCR8, whatever their PCR0.
    pub fn signer(pcr8: &str) -> Policy {
        Policy {
            images: Vec::new(),
            signer: Some(pcr8.to_string()),
        }
    }

    /// The key policy document, as an operator writes it for AWS KMS.
    pub fn json(&self) -> String {
        let mut condition = serde_json::Map::new();
        if !self.images.is_empty() {
            condition.insert(
                "kms:RecipientAttestation:ImageSha384".into(),
                serde_json::json!(self.images),
            );
        }
        if let Some(pcr8) = &self.signer {
            condition.insert(
                "kms:RecipientAttestation:PCR8".into(),
                serde_json::json!(pcr8),
            );
        }
        serde_json::json!({
            "Version": "2012-10-17",
            "Statement": [{
                "Sid": "The Nacre image unwraps its deployment root",
                "Effect": "Allow",
                "Principal": {"AWS": "arn:aws:iam::111122223333:role/nacre-parent"},
                "Action": ["kms:Decrypt", "kms:GenerateDataKey"],
                "Resource": "*",
                "Condition": {
                    "StringEqualsIgnoreCase": condition,
                    "StringEquals": {"kms:EncryptionContext:nacre:purpose": "deployment-root"}
                }
            }]
        })
        .to_string()
    }
}

/// A running `nacre-kms-dev`; stopped on drop.
pub struct Kms {
    child: Option<Supervised>,
    args: Vec<String>,
    /// Where it keeps its key material and CA.
    pub state: PathBuf,
    /// Its port on loopback.
    pub port: u16,
    credentials: PathBuf,
}

impl Kms {
    /// The stand-in for `KEY_ARN` under `policy`, checking documents
    /// against the dev root in `dev_root`.
    pub fn start(dev_root: &Path, policy: &Policy) -> Kms {
        Kms::start_in(&temp_dir("kms"), dev_root, policy)
    }

    /// As [`Kms::start`], keeping its state in `state` (a restarted
    /// stand-in keeps its keys).
    pub fn start_in(state: &Path, dev_root: &Path, policy: &Policy) -> Kms {
        std::fs::create_dir_all(state).expect("state dir");
        let policy_file = state.join("policy.json");
        std::fs::write(&policy_file, policy.json()).expect("policy");
        let credentials = state.join("parent-credentials.json");
        std::fs::write(
            &credentials,
            serde_json::json!({
                "AccessKeyId": ACCESS_KEY,
                "SecretAccessKey": SECRET_KEY,
            })
            .to_string(),
        )
        .expect("credentials");
        let args = vec![
            "--state".to_string(),
            state.display().to_string(),
            "--attestation-root".into(),
            dev_root.join("root.pem").display().to_string(),
            "--credentials".into(),
            format!("{ACCESS_KEY}:{SECRET_KEY}"),
            "--key".into(),
            format!("{KEY_ARN}={}", policy_file.display()),
        ];
        let mut kms = Kms {
            child: None,
            args,
            state: state.to_path_buf(),
            port: 0,
            credentials,
        };
        kms.run(&[]);
        kms
    }

    fn run(&mut self, extra: &[String]) {
        let mut command = Command::new(bin("nacre-kms-dev"));
        command.args(&self.args).args(extra);
        let mut child = Supervised::spawn(command, Stderr::Keep { watch: false })
            .expect("spawn nacre-kms-dev")
            .report_on_panic();
        let addr = child
            .wait_for(Duration::from_secs(30), |l| {
                l.strip_prefix("listening https://").map(str::to_string)
            })
            .unwrap_or_else(|e| panic!("the KMS stand-in did not start: {e}"));
        self.port = addr
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("a port");
        self.child = Some(child);
    }

    /// Stops it (KMS unreachable from now on).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill();
        }
    }

    /// Starts it again on the same port, with its keys.
    pub fn restart(&mut self) {
        self.stop();
        let port = self.port;
        self.run(&["--listen".to_string(), format!("127.0.0.1:{port}")]);
    }

    /// Everything it printed: one `refused` line per refusal.
    pub fn output(&self) -> String {
        self.child
            .as_ref()
            .map(Supervised::output)
            .unwrap_or_default()
    }

    /// Its CA certificate (PEM), which the runtime trusts with
    /// `--extra-ca`.
    pub fn ca(&self) -> PathBuf {
        self.state.join("tls/ca.pem")
    }

    /// The runtime's flags for this KMS: the key, its URL, and its CA as
    /// the one KMS is trusted on.
    pub fn runtime_flags(&self) -> Vec<String> {
        vec![
            "--kms-key".into(),
            KEY_ARN.into(),
            "--kms-endpoint".into(),
            format!("https://localhost:{}", self.port),
            "--kms-ca".into(),
            self.ca().display().to_string(),
        ]
    }

    /// The host proxy's flags: KMS reachable through egress, the parent's
    /// credentials handed over, the store in `store`.
    pub fn proxy_flags(&self, store: &Path) -> Vec<String> {
        vec![
            "--egress-allow-private-to".into(),
            format!("localhost:{}", self.port),
            "--aws-credentials".into(),
            format!("file:{}", self.credentials.display()),
            "--store".into(),
            store.display().to_string(),
        ]
    }
}

impl Drop for Kms {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One PEM file holding every certificate of `files`: the runtime's
/// `--extra-ca` when it must trust several test CAs.
pub fn bundle(files: &[PathBuf]) -> PathBuf {
    let mut pem = String::new();
    for f in files {
        pem.push_str(&std::fs::read_to_string(f).expect("CA file"));
        pem.push('\n');
    }
    let out = temp_dir("ca-bundle").join("bundle.pem");
    std::fs::write(&out, pem).expect("bundle");
    out
}
