//! The Nacre enclave runtime.
//!
//! `main.rs` wires these together; each module is one concern:
//!
//! - [`config`]: flags, environment and `--config` TOML (SPEC §3).
//! - [`tls`]: the certificate and rustls config of the public listener.
//! - [`server`]: accepting connections, TLS handshake, HTTP/1.1 and HTTP/2.
//! - [`app`]: dispatching each request to the runtime or to a guest.
//! - [`endpoints`]: `/enclave`, `/enclave/config`, `/enclave/debug`,
//!   `/enclave/manifest`.
//! - [`admin`]: `/enclave/guests` (deploy, list, delete).
//! - [`guests`]: wasmtime engine, guest table, running one request.
//! - [`attest`]: attestation documents from the NSM or the dev stand-in.
//! - [`egress`]: guests' outbound HTTP(S): policy, CONNECT tunnel through
//!   the host proxy, TLS inside the enclave.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod admin;
pub mod app;
pub mod attest;
pub mod config;
pub mod egress;
pub mod endpoints;
pub mod guests;
pub mod http;
pub mod server;
pub mod tls;
pub mod units;
