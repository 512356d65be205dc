//! This guest's application state (`nacre:enclave/state`): one value per
//! guest name, which no other guest reads or replaces, kept across
//! redeploys of the name, and with multi-enclave sync shared by every
//! enclave of the deployment (written on the leader).
//!
//! ```rust,ignore
//! nacre_sdk::state::put(b"config v2")?;
//! let current = nacre_sdk::state::get()?;
//! ```

use std::fmt;

use crate::bindings::nacre::enclave::state as wit;

/// Why the state could not be read or written.
///
/// ```rust,ignore
/// match nacre_sdk::state::put(b"v2") {
///     Err(nacre_sdk::state::Error::NotLeader) => { /* write on the leader instead */ }
///     other => other?,
/// }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// Only the leader enclave writes; this one is a worker.
    NotLeader,
    /// The enclaves are still electing a leader; retry shortly.
    DesignationInProgress,
    /// The value is over the runtime's limit (1 MiB).
    TooLarge,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Error::NotLeader => "state: this enclave is not the leader",
            Error::DesignationInProgress => "state: leader election in progress",
            Error::TooLarge => "state: value too large",
        })
    }
}

impl std::error::Error for Error {}

impl From<wit::StateError> for Error {
    fn from(e: wit::StateError) -> Error {
        match e {
            wit::StateError::NotLeader => Error::NotLeader,
            wit::StateError::DesignationInProgress => Error::DesignationInProgress,
            wit::StateError::TooLarge => Error::TooLarge,
        }
    }
}

/// The current state, if any was put.
///
/// ```rust,ignore
/// if let Some(bytes) = nacre_sdk::state::get()? { /* ... */ }
/// ```
pub fn get() -> Result<Option<Vec<u8>>, Error> {
    Ok(wit::get()?)
}

/// Replaces the state.
///
/// ```rust,ignore
/// nacre_sdk::state::put(br#"{"feature":true}"#)?;
/// ```
pub fn put(value: &[u8]) -> Result<(), Error> {
    Ok(wit::put(value)?)
}
