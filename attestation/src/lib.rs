//! Nitro attestation documents: model, COSE/CBOR parsing and strict
//! verification, shared by the runtime and every client.
//!
//! ```no_run
//! let bytes = std::fs::read("attestation.bin").unwrap();
//! match nacre_attestation::Verifier::aws().verify(&bytes) {
//!     Ok(v) => println!("module {} at {}", v.document.module_id, v.document.timestamp),
//!     Err(e) => eprintln!("rejected: {e}"),
//! }
//! ```

mod chain;
mod cose;
mod dev;
mod document;
mod error;
mod userdata;
mod verify;

pub use chain::validity;
pub use cose::CoseSign1;
pub use dev::{DevError, DevSigner, DocumentRequest};
pub use document::{Document, MAX_CABUNDLE, MAX_DOCUMENT, MAX_FIELD, MAX_PCRS};
pub use error::VerifyError;
pub use userdata::{GuestBinding, RuntimeBinding, SyncBinding, SyncRole};
pub use verify::{Verified, Verifier, aws_root_der};

/// The AWS Nitro Enclaves root certificate (G1), PEM.
pub const AWS_NITRO_ROOT_PEM: &str = include_str!("aws_nitro_root_g1.pem");

/// SHA-256 of the DER of [`AWS_NITRO_ROOT_PEM`]; every real document
/// chains to it.
pub const AWS_NITRO_ROOT_SHA256: &str =
    "641a0321a3e244efe456463195d606317ed7cdcc3c1756e09893f3c68f79bb5b";
