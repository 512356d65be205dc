//! Nitro attestation documents: model, COSE/CBOR parsing, chain
//! verification and the dev signer, shared by the runtime and clients.
//!
//! Not built yet; the runtime answers `/enclave/attestation` with 501
//! until it is.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

/// The SHA-256 of the DER of the AWS Nitro Enclaves root certificate (G1)
/// that every real document chains to.
pub const AWS_NITRO_ROOT_SHA256: &str =
    "641a0321a3e244efe456463195d606317ed7cdcc3c1756e09893f3c68f79bb5b";
