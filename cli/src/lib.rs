//! Library side of the `nacre` CLI: what other tools (and the end-to-end
//! tests) reuse rather than rewrite.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod client;
pub mod guest_build;
pub mod process;
