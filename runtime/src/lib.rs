//! The Nacre enclave runtime.
//!
//! [`Runtime::build`] assembles these from checked [`Settings`] and
//! [`Runtime::serve`] runs them; `main.rs` only parses flags, sets up
//! logging and signals. Each module is one concern:
//!
//! - [`settings`]: the flags checked together, as typed settings.
//! - [`config`]: flags, environment and `--config` TOML (docs/operating.md).
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
//! - [`sockets`]: guests' `wasi:sockets`, virtual: listening only where
//!   the runtime hands connections over, connecting only through the host
//!   proxy to their allow list.
//! - [`tcp`]: TCP guests: a listener per guest port, TLS ended in the
//!   enclave (or in the guest), one long-lived instance each.
//! - [`control`]: logs and guest output out to the host proxy over
//!   `--control`.
//! - [`metrics`]: `--metrics-listen`, Prometheus text of the runtime's
//!   figures (and `/enclave/debug`'s).
//! - [`fleet`]: what the other features need of the deployment: the
//!   role, and the narrow [`fleet::Deployment`] port sync implements.
//! - [`sync`]: several enclaves, one service: leader designation, attested
//!   key synchronization, heartbeats, failover (docs/deployments.md).
//! - [`persist`]: a deployment that survives its enclaves: a root sealed
//!   by KMS with attestation, sealed snapshots in the host's store, the
//!   cold start (docs/persistence.md).

pub mod acme;
mod app;
pub mod attest;
pub mod config;
pub mod control;
pub mod egress;
pub mod fleet;
pub mod guests;
pub mod http;
pub mod metrics;
pub mod persist;
pub mod raft;
pub mod router;
pub mod server;
pub mod settings;
pub mod sockets;
pub mod sync;
pub mod tcp;
pub mod tls;
pub mod units;

pub use app::{Bound, Runtime, StartError};
pub use settings::Settings;
