//! The benchmark's reference component, `guest-examples/testing/floor`,
//! must stay what BENCHMARKS.md says it is: `hello`'s answer with nothing
//! imported beyond `wasi:http` and `wasi:io`. If an edit made it panic or
//! print, std would bring `wasi:cli` back and (a₀)/(d₀) would stop being
//! the floor. `hello` is the control: it does import `wasi:cli`.

use std::path::Path;

use wasmtime::component::Component;
use wasmtime::{Config, Engine};

/// The names of the interfaces `crate_name`'s component imports.
fn imports(crate_name: &str) -> Vec<String> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest-examples/Cargo.toml");
    let wasm = nacre_cli::guest_build::build_guests(&manifest, &[crate_name])
        .unwrap_or_else(|e| panic!("building {crate_name}: {e:#}"))
        .pop()
        .expect("one component");
    let engine = Engine::new(Config::new().wasm_component_model(true)).expect("engine");
    let component = Component::from_file(&engine, &wasm).expect("component");
    component
        .component_type()
        .imports(&engine)
        .map(|(name, _)| name.to_string())
        .collect()
}

#[test]
fn the_floor_component_imports_only_http_and_io() {
    let floor = imports("floor");
    assert!(
        floor.iter().any(|n| n.starts_with("wasi:http/types@")),
        "floor imports {floor:?}"
    );
    let extra: Vec<&String> = floor
        .iter()
        .filter(|n| !n.starts_with("wasi:http/") && !n.starts_with("wasi:io/"))
        .collect();
    assert!(
        extra.is_empty(),
        "floor imports more than it should: {extra:?}"
    );

    let hello = imports("hello");
    assert!(
        hello.iter().any(|n| n.starts_with("wasi:cli/")),
        "the control, hello, imports {hello:?}"
    );
}
