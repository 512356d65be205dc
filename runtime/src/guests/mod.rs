//! Guest hosting: compiling components, the guest table, and running one
//! request in a fresh instance.
//!
//! - [`engine`]: the wasmtime engine, linker and epoch ticker (one each per
//!   process).
//! - [`host`]: the per-request store data guests see through WASI.
//! - [`registry`]: deployed guests, the compile cache and the manifest.
//! - [`mod@invoke`]: one HTTP request through one fresh instance, in
//!   steps; [`mod@decide`]: its outcome, decided once from what its task
//!   heard; [`ended`]: how a request ends (the [`Outcome`], how the
//!   guest's run ended, where its failures are counted and logged);
//!   [`bodies`]: the request and response bodies between it and the
//!   server; [`record`]: what happened to a request, as the epoch
//!   callback, the bodies and the head callback record it, decoded in one
//!   place.
//! - [`kv`]: `wasi:keyvalue`, one namespace per guest name.
//! - [`stats`]: counters per guest name.

// Generated from the WIT, whose comments are the documentation.
#[allow(missing_docs)]
mod bindings;
mod bodies;
mod decide;
mod enclave;
mod ended;
mod engine;
mod host;
mod invoke;
pub mod kv;
mod listing;
mod log;
mod record;
mod refused;
mod registry;
mod share;
mod spec;
pub mod state;
pub mod stats;
mod tcp;
mod view;

pub use ended::Outcome;
pub use engine::{EngineError, GuestEngine, Limits, check_component};
pub use invoke::{GuestBody, invoke};
pub use kv::KvLimits;
pub use refused::DeployError;
pub use registry::{Deployed, Guest, Registry, Snapshot};
pub use share::Share;
pub use spec::{BootGuest, GuestConfig, GuestName, Route, TcpService, TcpTls, tcp_options};
pub(crate) use tcp::{TcpExit, run_tcp};
pub use view::{Caller, EnclaveCtx, EnclaveCtxView, EnclaveView};
