//! The Nacre enclave runtime.
//!
//! `main.rs` wires these together; each module is one concern:
//!
//! - [`config`]: flags, environment and `--config` TOML (SPEC §3).
//! - [`tls`]: the certificate and rustls config of the public listener,
//!   TLS-ALPN-01 answers.
//! - [`acme`]: the certificate's life: ACME issuance inside the enclave,
//!   renewal, the self-signed fallback.
//! - [`server`]: serving a handler on a listener: accept, TLS handshake,
//!   HTTP/1.1 or HTTP/2, a deadline for every phase of a connection.
//! - [`router`]: where each request goes: the `/enclave` endpoints, the
//!   admin API (`/enclave/guests`) or a guest.
//! - [`guests`]: wasmtime engine, guest table, running one request.
//! - [`attest`]: attestation documents from the NSM or the dev stand-in.
//! - [`egress`]: guests' outbound HTTP(S): policy, CONNECT tunnel through
//!   the host proxy, TLS inside the enclave.
//! - [`control`]: logs and guest output out to the host proxy over
//!   `--control`.
//! - [`metrics`]: `--metrics-listen`, Prometheus text of the runtime's
//!   figures (and `/enclave/debug`'s).
//! - [`sync`]: several enclaves, one service: leader designation, attested
//!   key synchronization, heartbeats, failover (SPEC §7).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod acme;
pub mod attest;
pub mod config;
pub mod control;
pub mod egress;
pub mod guests;
pub mod http;
pub mod metrics;
pub mod router;
pub mod server;
pub mod sync;
pub mod tls;
pub mod units;
