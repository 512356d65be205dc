//! Building guest crates into components, and finding the runtime binaries
//! of this source checkout.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

/// The rustup target guests are built for.
pub const WASM_TARGET: &str = "wasm32-wasip2";

/// The `cargo` that is running us, or the one on PATH, without the
/// per-package variables `cargo run`/`cargo test` set for us: build
/// scripts (ring's) track `CARGO_MANIFEST_DIR`, and inheriting ours would
/// make every nested build look dirty and recompile half the tree.
pub fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if key.starts_with("CARGO_PKG_")
            || matches!(
                &*key,
                "CARGO_MANIFEST_DIR"
                    | "CARGO_MANIFEST_PATH"
                    | "CARGO_BIN_NAME"
                    | "CARGO_CRATE_NAME"
                    | "CARGO_PRIMARY_PACKAGE"
            )
        {
            cmd.env_remove(&*key);
        }
    }
    cmd
}

/// The Nacre source checkout this binary was built from, if it is still
/// there: `nacre dev` builds the examples and the runtime from it.
pub fn source_root() -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()?
        .to_path_buf();
    root.join("guest-examples/Cargo.toml")
        .is_file()
        .then_some(root)
}

/// Installs the wasm32-wasip2 target with rustup when it is missing.
pub fn ensure_wasm_target() -> anyhow::Result<()> {
    let out = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .context("cannot run rustup: install Rust with rustup (https://rustup.rs), or add the wasm32-wasip2 target to your toolchain")?;
    if String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.trim() == WASM_TARGET)
    {
        return Ok(());
    }
    eprintln!("installing the {WASM_TARGET} target with rustup");
    let status = Command::new("rustup")
        .args(["target", "add", WASM_TARGET])
        .status()?;
    if !status.success() {
        bail!("`rustup target add {WASM_TARGET}` failed");
    }
    Ok(())
}

/// `cargo build --release --target wasm32-wasip2 --manifest-path
/// MANIFEST`, with the target installed first: the one guest build that
/// `nacre dev`, `nacre build` and the tests all run.
pub fn wasm_build(manifest: &Path) -> anyhow::Result<Command> {
    ensure_wasm_target()?;
    let mut cmd = cargo();
    cmd.args([
        "build",
        "--release",
        "--target",
        WASM_TARGET,
        "--manifest-path",
    ])
    .arg(manifest)
    // The host build's target dir must not leak into the guest build.
    .env_remove("CARGO_TARGET_DIR");
    Ok(cmd)
}

/// Builds `packages` of the guest workspace at `manifest` in release mode
/// and returns each component's path, in the same order.
pub fn build_guests(manifest: &Path, packages: &[&str]) -> anyhow::Result<Vec<PathBuf>> {
    let mut cmd = wasm_build(manifest)?;
    for p in packages {
        cmd.args(["-p", p]);
    }
    let status = cmd.status().context("cannot run cargo")?;
    if !status.success() {
        bail!("building guests {packages:?} failed (see cargo's output above)");
    }
    let dir = manifest
        .parent()
        .unwrap_or(Path::new("."))
        .join("target")
        .join(WASM_TARGET)
        .join("release");
    packages
        .iter()
        .map(|p| {
            // cdylib artifacts use '_' for '-'; bin artifacts keep the name.
            let lib = dir.join(format!("{}.wasm", p.replace('-', "_")));
            let bin = dir.join(format!("{p}.wasm"));
            match (lib.is_file(), bin.is_file()) {
                (true, _) => Ok(lib),
                (false, true) => Ok(bin),
                _ => bail!("{} was not produced: is {p} a cdylib crate?", lib.display()),
            }
        })
        .collect()
}

/// Paths of sibling binaries of this one (same target directory and
/// profile), `(package, bin)` each, built first from the source checkout
/// when there is one. It builds every binary of the workspace, as the
/// tests do (`nacre_tests::bin`): cargo picks dependency features from the
/// packages it is asked for, so building only these two would compile
/// wasmtime, hyper and the rest a second time with another feature set
/// (about six minutes on 2 cores, and more disk).
pub fn sibling_binaries(
    root: Option<&Path>,
    bins: &[(&str, &str)],
) -> anyhow::Result<Vec<PathBuf>> {
    let exe = std::env::current_exe().context("cannot locate the nacre binary")?;
    let dir = exe
        .parent()
        .context("nacre binary has no directory")?
        .to_path_buf();
    if let Some(root) = root {
        let mut cmd = cargo();
        cmd.args(["build", "--workspace", "--bins"]);
        cmd.arg("--manifest-path").arg(root.join("Cargo.toml"));
        if !cfg!(debug_assertions) {
            cmd.arg("--release");
        }
        // Build into the directory this binary lives in.
        if let Some(target_dir) = dir.parent() {
            cmd.arg("--target-dir").arg(target_dir);
        }
        let status = cmd.status().context("cannot run cargo")?;
        if !status.success() {
            bail!("building the Nacre binaries failed (see cargo's output above)");
        }
    }
    bins.iter()
        .map(|(package, bin)| {
            let path = dir.join(bin);
            if !path.is_file() {
                bail!(
                    "{} not found: build it with `cargo build -p {package}`",
                    path.display()
                );
            }
            Ok(path)
        })
        .collect()
}
