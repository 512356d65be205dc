//! End-to-end tests: the real `nacre-runtime` and `nacre` binaries, real
//! guests built for wasm32-wasip2, a real HTTPS client. One binary, so the
//! builds happen once.

mod acme;
mod admin;
mod attestation;
mod cli;
mod connections;
mod egress;
mod faults;
mod hostproxy;
mod keyvalue;
mod limits;
mod load;
mod operations;
mod origins;
mod serving;
mod sync;
mod sync_cost;
mod sync_hostile;
mod token;
mod transport;
