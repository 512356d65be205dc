//! No crate of the workspace has an import circle among its files (see
//! `nacre_tests::layout` for what counts as an arrow). `NACRE_LAYOUT_ROOT`
//! checks another checkout instead, to show the check fails on one that
//! has a circle.

use std::path::PathBuf;

#[test]
fn no_crate_has_an_import_circle() {
    let root = std::env::var_os("NACRE_LAYOUT_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(nacre_tests::root);
    let mut sources: Vec<PathBuf> = Vec::new();
    for dir in ["", "guest-examples", "guest-examples/testing"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
            continue;
        };
        for entry in entries.flatten() {
            let src = entry.path().join("src");
            if entry.path().join("Cargo.toml").is_file() && src.is_dir() {
                sources.push(src);
            }
        }
    }
    assert!(
        sources.len() >= 10,
        "found only {sources:?} under {}",
        root.display()
    );
    let found: Vec<String> = sources
        .iter()
        .flat_map(|src| nacre_tests::layout::circles(src))
        .map(|c| {
            c.iter()
                .map(|f| f.strip_prefix(&root).unwrap_or(f).display().to_string())
                .collect::<Vec<_>>()
                .join(" -> ")
        })
        .collect();
    assert!(
        found.is_empty(),
        "import circles (break each with a narrow trait or by moving the shared type down):\n{}",
        found.join("\n")
    );
}
