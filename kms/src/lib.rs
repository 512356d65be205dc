//! AWS KMS's protocol for Nacre, without I/O.
//!
//! Nacre's enclave asks KMS for data keys (`GenerateDataKey`) and to
//! decrypt them (`Decrypt`), passing an attestation document so that KMS
//! seals its answer to a key only the enclave holds. A development KMS
//! stand-in answers the same calls. Both sides share this crate:
//!
//! - [`wire`]: the JSON 1.1 bodies, field for field as KMS names them;
//! - [`recipient`]: the enclave's one-call RSA key pair;
//! - [`envelope`]: the CMS EnvelopedData KMS returns as
//!   `CiphertextForRecipient` — `open` in the enclave, `seal` in the
//!   stand-in;
//! - [`sigv4`]: SigV4 signing (client) and verification (stand-in);
//! - [`call`]: a signed request out, a typed answer (or error) in.
//!
//! # Why sans-IO
//!
//! Like rustls, this crate never opens a socket or reads a clock: callers
//! pass bytes, `http` values and `SystemTime`s in and get the same out.
//! The enclave reaches KMS through a vsock proxy, the stand-in is an HTTP
//! server, and the tests are neither; each brings its own transport and
//! time, and every protocol decision is tested here without a network.
//!
//! # Dependencies, and why
//!
//! - `aws-lc-rs`: RSA-OAEP-SHA-256, AES-256-CBC and SHA-256 from one
//!   library, AWS's own (already built here for attestation).
//! - `aws-sigv4` (+ `aws-credential-types`, `aws-smithy-runtime-api` for
//!   its credential types): the AWS SDK's signer, so the canonical
//!   request is KMS's own, not a re-implementation's.
//! - `serde`/`serde_json`/`base64`: the wire format.
//! - `zeroize`, `subtle`: secrets are erased on drop and compared in
//!   constant time.
//! - No CMS/ASN.1 crate: KMS's envelopes are BER with indefinite lengths,
//!   which the `der` crate refuses; see the envelope module's BER reader.

pub mod call;
pub mod envelope;
#[doc(hidden)]
pub mod fuzzing;
pub use envelope::recipient;
pub mod sigv4;
pub mod wire;

pub use wire::SecretBytes;
