//! A dev stand-in for AWS KMS, used by `nacre dev` and the tests instead
//! of AWS (docs/development.md, "The KMS dev stand-in").
//!
//! It speaks KMS's JSON 1.1 protocol (`POST /`, `X-Amz-Target:
//! TrentService.<Op>`, SigV4) for `GenerateDataKey` and `Decrypt`, with and
//! without an attested `Recipient`, and refuses what KMS refuses, with the
//! same error names: key policies with `kms:RecipientAttestation:*` and
//! `kms:EncryptionContext:*` conditions, attestation documents of another
//! root or more than five minutes old, ciphertext under another context.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use nacre_kms_dev::{Config, Credential, KeyConfig, StandIn};
//! let standin = StandIn::open(Config {
//!     state_dir: "/tmp/kms-dev".into(),
//!     attestation_root_pem: Some(std::fs::read("/tmp/dev-root/root.pem")?),
//!     credentials: vec![Credential::parse("AKIDEXAMPLE:secret")?],
//!     keys: vec![KeyConfig::from_flag(
//!         "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab=policy.json",
//!     )?],
//!     ..Config::default()
//! })?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! nacre_kms_dev::serve(listener, standin, std::future::pending()).await;
//! # Ok(()) }
//! ```

mod blob;
mod config;
mod error;
mod keys;
mod ops;
pub mod policy;
mod recipient;
mod server;
mod standin;
mod tls;

pub use config::{Config, Credential, KeyConfig, Refusal, RefusalHook, TlsSource};
pub use error::{KmsError, StandInError};
pub use recipient::MAX_AGE as MAX_DOCUMENT_AGE;
pub use server::serve;
pub use standin::{MAX_BODY, StandIn};
