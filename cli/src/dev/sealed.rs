//! `nacre dev`'s sealed deployment: the KMS dev stand-in (`nacre-kms-dev`)
//! with a key policy naming the runtime just built, the host proxy keeping
//! the sealed store in the dev directory, and the runtime's `--kms-key`.
//! The store, the stand-in's key and the dev root stay in the directory,
//! so the demo's deployment (guests, state, key-value data, certificate)
//! comes back when `nacre dev` is started again.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use nacre_cli::process::{Stderr, Supervised};

/// The dev key: any ARN the stand-in is told about works.
const KEY_ARN: &str = "arn:aws:kms:eu-west-1:111122223333:key/6e61-6372-6520-6465-76";

/// The running stand-in and what the runtime and proxy need of it.
pub struct DevKms {
    child: Supervised,
    port: u16,
    dir: PathBuf,
}

impl DevKms {
    /// Starts the stand-in (`program`) in `dir/kms`, its key policy naming
    /// the image whose PCR0 is `pcr0` (the runtime about to start), with
    /// fresh credentials the host proxy hands over; logs to `log`.
    pub fn start(program: &Path, dir: &Path, pcr0: &[u8], log: &Path) -> anyhow::Result<DevKms> {
        let state = dir.join("kms");
        // The host proxy keeps the store only in a directory that exists.
        for d in [&state, &dir.join("store")] {
            std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
        }
        let policy = state.join("policy.json");
        write(&policy, &policy_json(pcr0))?;
        let (akid, secret) = (
            format!("AKIADEV{}", super::random_hex::<6>().to_uppercase()),
            super::random_hex::<20>(),
        );
        write(
            &dir.join("aws-credentials.json"),
            &serde_json::json!({"AccessKeyId": akid, "SecretAccessKey": secret}).to_string(),
        )?;
        let mut command = std::process::Command::new(program);
        command
            .arg("--state")
            .arg(&state)
            .arg("--attestation-root")
            .arg(dir.join("root/root.pem"))
            .arg("--key")
            .arg(format!("{KEY_ARN}={}", policy.display()))
            // In the environment, not the command line: out of `ps`.
            .env("NACRE_KMS_DEV_CREDENTIALS", format!("{akid}:{secret}"));
        let mut child = Supervised::spawn(command, Stderr::File(log.to_path_buf()))
            .with_context(|| format!("cannot start {}", program.display()))?;
        let addr = child
            .wait_for(Duration::from_secs(30), |l| {
                l.strip_prefix("listening https://").map(str::to_string)
            })
            .map_err(|why| anyhow::anyhow!("{why}\n(log: {})", log.display()))?;
        let port = addr
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .context("the KMS stand-in did not say its port")?;
        Ok(DevKms {
            child,
            port,
            dir: dir.to_path_buf(),
        })
    }

    /// The runtime's flags: the key, the stand-in's URL and CA, and the
    /// control link the store and credentials come over.
    pub fn runtime_args(&self, control: &str) -> Vec<String> {
        vec![
            "--kms-key".into(),
            KEY_ARN.into(),
            "--kms-endpoint".into(),
            format!("https://localhost:{}", self.port),
            "--kms-ca".into(),
            self.dir.join("kms/tls/ca.pem").display().to_string(),
            "--control".into(),
            control.into(),
        ]
    }

    /// The host proxy's flags: the store, the credentials, the control
    /// listener, and the stand-in reachable through egress.
    pub fn proxy_args(&self, control: &str) -> Vec<String> {
        vec![
            "--control-listen".into(),
            control.into(),
            "--store".into(),
            self.store().display().to_string(),
            "--aws-credentials".into(),
            format!("file:{}", self.dir.join("aws-credentials.json").display()),
            "--egress-allow-private-to".into(),
            format!("localhost:{}", self.port),
        ]
    }

    /// Where the sealed deployment is kept.
    pub fn store(&self) -> PathBuf {
        self.dir.join("store")
    }

    /// Fails, naming the log, once the stand-in has exited.
    pub fn check(&mut self, log: &Path) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            anyhow::bail!("the KMS stand-in exited ({status}); see {}", log.display());
        }
        Ok(())
    }
}

/// A key policy as an operator writes one: this image may make and unwrap
/// its deployment's root, nothing else may.
fn policy_json(pcr0: &[u8]) -> String {
    serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "nacre dev: the runtime built by this checkout",
            "Effect": "Allow",
            "Principal": "*",
            "Action": ["kms:Decrypt", "kms:GenerateDataKey"],
            "Resource": "*",
            "Condition": {
                "StringEqualsIgnoreCase": {
                    "kms:RecipientAttestation:ImageSha384": hex::encode(pcr0)
                },
                "StringEquals": {"kms:EncryptionContext:nacre:purpose": "deployment-root"}
            }
        }]
    })
    .to_string()
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}
