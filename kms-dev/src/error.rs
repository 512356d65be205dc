//! Errors: [`StandInError`] when the stand-in cannot start, [`KmsError`]
//! for one refused call (what KMS would answer, and why, for the log).

use std::path::{Path, PathBuf};

use nacre_kms::wire::ErrorCode;

/// Why the stand-in could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StandInError {
    /// Reading or writing the state directory (or a named file) failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A flag's value is unusable (a key ARN, a policy, a credential).
    #[error("{0}")]
    Config(String),
    /// The TLS identity could not be made or loaded.
    #[error("TLS: {0}")]
    Tls(String),
}

impl StandInError {
    /// Wraps an I/O error on `path`, for `map_err`.
    pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StandInError {
        let path = path.to_path_buf();
        move |source| StandInError::Io { path, source }
    }
}

/// A refused call: the error KMS would return and, separately, the reason
/// the stand-in logs (which condition failed, what the document had).
#[derive(Debug, Clone)]
pub struct KmsError {
    /// The KMS error (`__type`) and its HTTP status.
    pub code: ErrorCode,
    /// The `message` the client receives.
    pub message: String,
    /// The detail for the log; the client's message when there is none.
    pub reason: Option<String>,
    /// The key the call named or used, for the log.
    pub key: Option<String>,
}

impl KmsError {
    /// An error whose message says it all.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> KmsError {
        KmsError {
            code,
            message: message.into(),
            reason: None,
            key: None,
        }
    }

    /// Names the key, for the log.
    pub fn on_key(mut self, key: impl Into<String>) -> KmsError {
        self.key = Some(key.into());
        self
    }

    /// Adds the reason the log gives.
    pub fn because(mut self, reason: impl Into<String>) -> KmsError {
        self.reason = Some(reason.into());
        self
    }

    /// What the log says: the reason, or else the message.
    pub fn log_reason(&self) -> &str {
        self.reason.as_deref().unwrap_or(&self.message)
    }
}
