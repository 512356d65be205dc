//! In-process tests: the library's runtime, assembled by its composition
//! root from the same flags `nacre-runtime` takes, on threads of this test
//! process ([`nacre_tests::Runtime::in_process`]), with real guests built
//! for wasm32-wasip2 and a real HTTPS client. Everything that needs no
//! process of its own, no namespace and no third-party program runs here;
//! the host proxy, unix and vsock transports, namespaces, the `nacre` CLI,
//! curl, openssl, nginx, Pebble and promtool stay in `tests/e2e`.

mod admin;
mod attestation;
mod connections;
mod faults;
mod keyvalue;
mod limits;
mod router;
mod serving;
