//! Library side of the `nacre` CLI: what other tools (and the end-to-end
//! tests) reuse rather than rewrite.

pub mod client;
pub mod guest_build;
pub mod process;
