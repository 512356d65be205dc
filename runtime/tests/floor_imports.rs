//! The benchmark's reference component, `guest-examples/testing/floor`,
//! must stay what BENCHMARKS.md says it is: `hello`'s answer with nothing
//! imported beyond `wasi:http` and `wasi:io`. If an edit made it panic or
//! print, std would bring `wasi:cli` back and (a₀)/(d₀) would stop being
//! the floor. `hello` is the control: it does import `wasi:cli`.

use std::path::Path;

use wasmtime::component::Component;
use wasmtime::{Config, Engine};

/// The names of the interfaces each of `crates`' components imports, in
/// the same order (one build, one engine).
fn imports<const N: usize>(crates: [&str; N]) -> [Vec<String>; N] {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest-examples/Cargo.toml");
    let built = nacre_cli::guest_build::build_guests(&manifest, &crates)
        .unwrap_or_else(|e| panic!("building {crates:?}: {e:#}"));
    let engine = Engine::new(Config::new().wasm_component_model(true)).expect("engine");
    let names = |wasm: &Path| -> Vec<String> {
        let component = Component::from_file(&engine, wasm).expect("component");
        component
            .component_type()
            .imports(&engine)
            .map(|(name, _)| name.to_string())
            .collect()
    };
    let lists: Vec<Vec<String>> = built.iter().map(|wasm| names(wasm)).collect();
    lists.try_into().expect("one component per crate")
}

#[test]
fn the_floor_component_imports_only_http_and_io() {
    let [floor, hello] = imports(["floor", "hello"]);
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
    assert!(
        hello.iter().any(|n| n.starts_with("wasi:cli/")),
        "the control, hello, imports {hello:?}"
    );
}
