//! The protocol between the enclaves of a Nacre deployment, in one place
//! for both ends of every exchange (an enclave is sender and receiver,
//! worker and leader in turn):
//!
//! - [`wire`]: the JSON bodies of the sync endpoints and their bounds;
//! - [`seal`]: the key material ([`seal::Payload`]), what travels with it
//!   ([`seal::Bundle`]) and how it is sealed to one receiver (HPKE);
//! - [`auth`]: the deployment key and its tags over what is not sealed;
//! - [`order`]: the one order every enclave takes key material in;
//! - [`raft`]: the sealed frame Raft's calls between enclaves travel in,
//!   each answer bound to its request.
//!
//! Nothing here does I/O: the runtime's sync module runs the exchanges.
//! Everything a peer or the host sends is parsed here, so the fuzz target
//! (`fuzz/`) covers it.

pub mod auth;
#[doc(hidden)]
pub mod fuzzing;
pub mod order;
pub mod raft;
pub mod seal;
pub mod wire;

/// Bytes that are not what the protocol says, or a key that does not fit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ProtoError(pub String);
