//! Addresses, listeners and connections shared by every Nacre binary.
//!
//! Nacre runs the same code over three transports: `tcp://HOST:PORT`,
//! `unix:PATH` and `vsock://CID:PORT`. This crate is the only place that
//! knows which one is in use; everything above it sees an [`Address`], a
//! [`Listener`] and a [`Stream`].
//!
//! It also holds [`AllowRule`], the `HOST:PORT` egress patterns that both the
//! runtime (inside the enclave) and the host proxy (outside) enforce, so the
//! two sides can never disagree about what a pattern means, and [`tunnel`],
//! the HTTP `CONNECT` exchange between them.

mod addr;
mod allow;
mod listener;
pub mod pem;
pub mod presented;
mod stream;
pub mod tunnel;

pub use addr::{Address, AddressError};
pub use allow::{AllowError, AllowList, AllowRule};
pub use listener::Listener;
pub use stream::{Detached, Stream, connect};
