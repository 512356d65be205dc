//! The Nacre guest SDK.
//!
//! For now it re-exports [`wstd`], the async runtime and HTTP types guests
//! are written with; the `nacre:enclave` capabilities arrive later.

pub use wstd;
