//! Attestation documents for this guest (`nacre:enclave/attestation`).
//!
//! A document is signed by the Nitro Security Module (or the dev stand-in)
//! and its user data names this guest's code: the runtime stamps the
//! SHA-256 of the calling component, so no guest can speak for another.
//! Clients check it with `nacre verify --nonce HEX`.
//!
//! ```rust,ignore
//! use nacre_sdk::attestation;
//!
//! let doc = attestation::request(Some(&nonce), None, Some(&public_key))?;
//! ```

use std::fmt;

use crate::bindings::nacre::enclave::attestation as wit;

/// Why no document was made (a field too large, the security module
/// unavailable); the message says which.
///
/// ```rust,ignore
/// if let Err(nacre_sdk::attestation::Error(why)) = attestation::request(None, None, None) {
///     eprintln!("no document: {why}");
/// }
/// ```
#[derive(Debug)]
pub struct Error(pub String);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "attestation: {}", self.0)
    }
}

impl std::error::Error for Error {}

/// A COSE_Sign1 attestation document (the AWS Nitro format) with this
/// `nonce`, this `public_key`, and user data binding `user_data` to this
/// guest's code hash. Each field is at most 512 bytes.
///
/// ```rust,ignore
/// let doc: Vec<u8> = nacre_sdk::attestation::request(Some(b"client nonce"), None, None)?;
/// ```
pub fn request(
    nonce: Option<&[u8]>,
    user_data: Option<&[u8]>,
    public_key: Option<&[u8]>,
) -> Result<Vec<u8>, Error> {
    wit::request(nonce, user_data, public_key).map_err(Error)
}

/// The SHA-256 of this guest's component, as the runtime computed it.
///
/// ```rust,ignore
/// let hash: [u8; 32] = nacre_sdk::attestation::code_hash();
/// ```
pub fn code_hash() -> [u8; 32] {
    let mut out = [0u8; 32];
    let got = wit::code_hash();
    let n = got.len().min(32);
    out[..n].copy_from_slice(&got[..n]);
    out
}
