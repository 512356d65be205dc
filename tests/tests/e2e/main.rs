//! End-to-end tests: the real `nacre-runtime`, `nacre-host-proxy` and
//! `nacre` binaries, real guests built for wasm32-wasip2, a real HTTPS
//! client; what needs processes: the host proxy, unix transports, network
//! namespaces, the runtime's own process (its memory, descriptors, exit),
//! the `nacre` CLI, curl, openssl, nginx, Pebble, promtool. Everything else
//! runs in process, in `tests/app`. One binary, so the builds happen once.

mod acme;
mod attestation;
mod cli;
mod connections;
mod egress;
mod hostproxy;
mod keyvalue;
mod limits;
mod load;
mod operations;
mod origins;
mod raft;
mod raft_hostile;
mod sealed;
mod sync;
mod sync_cost;
mod sync_hostile;
mod sync_input;
mod tcp_guests;
mod token;
mod transport;
