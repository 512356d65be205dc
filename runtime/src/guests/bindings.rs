//! Rust types for the WIT of `nacre:enclave` and `wasi:keyvalue`: the
//! variants and records guests exchange with the host. The functions are
//! linked by hand in [`super::enclave`] and [`super::kv`], which measure
//! every list in guest memory before copying it; bindgen's own host traits
//! and `add_to_linker` go unused.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "nacre:enclave/imports",
});
