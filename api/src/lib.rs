//! The runtime's HTTP API as both sides see it (docs/api.md): the types
//! `nacre-runtime` writes and `nacre`, the tests and the benchmark read,
//! written once so the two can never disagree.
//!
//! - [`Manifest`]: `/enclave/manifest`, whose SHA-256 every runtime
//!   document binds, and [`strip_route`], which paths a route serves.
//! - [`GuestInfo`]: what the admin API answers about a guest.
//! - [`ErrorBody`]: `{"error": ...}`, every error the runtime answers.
//! - [`parse_nonce`]: the nonce `/enclave/attestation` takes.
//!
//! ```
//! use nacre_api::{ErrorBody, parse_nonce};
//! let body = ErrorBody::new("no guest serves /x").to_bytes();
//! assert_eq!(ErrorBody::message(&body).as_deref(), Some("no guest serves /x"));
//! assert!(parse_nonce(&"ab".repeat(20)).is_ok());
//! ```

mod manifest;

pub use manifest::{
    MANIFEST_VERSION, Manifest, ManifestEntry, ManifestError, TcpEntry, strip_route,
};

/// The runtime's own endpoints.
pub mod paths {
    /// The index page.
    pub const INDEX: &str = "/enclave";
    /// `GET ?nonce=HEX`: a Base64 attestation document.
    pub const ATTESTATION: &str = "/enclave/attestation";
    /// The effective configuration, no secrets.
    pub const CONFIG: &str = "/enclave/config";
    /// Runtime statistics (with `--debug`).
    pub const DEBUG: &str = "/enclave/debug";
    /// The guest manifest.
    pub const MANIFEST: &str = "/enclave/manifest";
    /// The admin API: `GET` the list, `PUT`/`DELETE` `/NAME`.
    pub const GUESTS: &str = "/enclave/guests";
}

/// What the admin API reports about a guest (`PUT` and `GET
/// /enclave/guests[/NAME]`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GuestInfo {
    /// Guest name.
    pub name: String,
    /// Lower-case hex SHA-256 of the component.
    pub sha256: String,
    /// Route prefix.
    pub route: String,
    /// Allowed outbound destinations.
    pub allow: Vec<String>,
    /// Component size in bytes.
    pub size: usize,
    /// A TCP guest's port and TLS (its `route` is empty); absent for HTTP
    /// guests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpEntry>,
}

/// `{"error": message}`: the body of every error the runtime itself
/// answers. The message names the input and the fix; internals stay in the
/// runtime's log.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ErrorBody {
    /// What went wrong, for a person.
    pub error: String,
}

impl ErrorBody {
    /// An error body saying `message`.
    pub fn new(message: impl Into<String>) -> ErrorBody {
        ErrorBody {
            error: message.into(),
        }
    }

    /// The JSON bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        // A struct of one string always serializes.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// The message of an error response, if `body` is one.
    pub fn message(body: &[u8]) -> Option<String> {
        serde_json::from_slice::<ErrorBody>(body)
            .ok()
            .map(|b| b.error)
    }
}

/// Bytes in the nonce `/enclave/attestation` takes (as nitriding requires).
pub const NONCE_LEN: usize = 20;

/// Why a nonce was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NonceError {
    /// Not exactly `2 * NONCE_LEN` characters.
    #[error("nonce must be exactly 40 hex digits (20 bytes), got {0} characters")]
    Length(usize),
    /// A character that is not a hex digit.
    #[error("nonce must be exactly 40 hex digits (20 bytes): it has a non-hex character")]
    NotHex,
}

/// Reads a nonce given as exactly 40 hex digits.
pub fn parse_nonce(hex_digits: &str) -> Result<[u8; NONCE_LEN], NonceError> {
    if hex_digits.len() != 2 * NONCE_LEN {
        return Err(NonceError::Length(hex_digits.len()));
    }
    let mut out = [0u8; NONCE_LEN];
    hex::decode_to_slice(hex_digits, &mut out).map_err(|_| NonceError::NotHex)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonces_are_exactly_forty_hex_digits() {
        assert_eq!(parse_nonce(&"0a".repeat(20)), Ok([10u8; 20]));
        assert_eq!(parse_nonce("abc"), Err(NonceError::Length(3)));
        assert_eq!(parse_nonce(&"zz".repeat(20)), Err(NonceError::NotHex));
        assert_eq!(parse_nonce(&"00".repeat(21)), Err(NonceError::Length(42)));
    }

    #[test]
    fn error_bodies_round_trip_and_other_bodies_are_not_errors() {
        let b = ErrorBody::new("bad \"input\"").to_bytes();
        assert_eq!(b, br#"{"error":"bad \"input\""}"#);
        assert_eq!(ErrorBody::message(&b).as_deref(), Some("bad \"input\""));
        assert_eq!(ErrorBody::message(b"plain text"), None);
    }
}
