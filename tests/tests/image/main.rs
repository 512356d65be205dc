//! The enclave image: `nacre image build` from the static binaries and
//! Debian's kernel package, its PCRs checked against an independent
//! reader (Python), then the image's own kernel, command line and
//! ramdisks booted in QEMU, where the runtime serves the system's curl
//! over TLS and `nacre attest` verifies it. And every input the build
//! must refuse before it writes anything.
//!
//! A test binary of its own, not part of `e2e`: cargo runs test binaries
//! one after another, so building images and booting QEMU (CPU-heavy under
//! TCG) never starve the timing-sensitive end-to-end tests of CPU.

mod qemu;
mod refusals;
mod reproducible;
mod signed;

use nacre_tests::{bin, guest, nacre, root};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Static nacre-init and nacre-runtime, linked once per test process
/// from the test build's own objects (`-C target-feature=+crt-static` on
/// the final link only: seconds, where `scripts/image-binaries`' release
/// build takes ten minutes on two cores). The same code; the release
/// build's reproducibility is `scripts/reproduce`'s to check.
pub(crate) fn image_binaries() -> &'static (PathBuf, PathBuf) {
    static BUILT: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    BUILT.get_or_init(|| {
        let target = bin("nacre")
            .parent()
            .unwrap()
            .parent()
            .unwrap()
            .to_path_buf();
        let dir = target.join("image-test");
        std::fs::create_dir_all(&dir).unwrap();
        let link = |package: &str| {
            let out = dir.join(package);
            let status = nacre_cli::guest_build::cargo()
                .args(["rustc", "--quiet", "-p", package, "--bin", package])
                .arg("--manifest-path")
                .arg(root().join("Cargo.toml"))
                .arg("--target-dir")
                .arg(&target)
                .args([
                    "--",
                    "-C",
                    "target-feature=+crt-static",
                    "-C",
                    "strip=debuginfo",
                    "--emit",
                ])
                .arg(format!("link={}", out.display()))
                .status()
                .expect("run cargo rustc");
            assert!(status.success(), "linking {package} statically failed");
            out
        };
        // nacre-image is a workspace of its own (image/Cargo.toml says
        // why); built into this target directory, `nacre image` finds it
        // beside `nacre`.
        let status = nacre_cli::guest_build::cargo()
            .args(["build", "--quiet", "--locked", "--manifest-path"])
            .arg(root().join("image/Cargo.toml"))
            .arg("--target-dir")
            .arg(&target)
            .status()
            .expect("run cargo build");
        assert!(status.success(), "building nacre-image failed");
        (link("nacre-init"), link("nacre-runtime"))
    })
}

/// deploy/image.toml, the configuration the docs give operators: the
/// kernel's pin lives there only.
pub(crate) fn deploy_config() -> toml::Table {
    let text = std::fs::read_to_string(root().join("deploy/image.toml")).unwrap();
    text.parse().unwrap()
}

/// An image configuration in `dir`: deploy/image.toml with the test's
/// static binaries, then `edit` applied.
pub(crate) fn config(dir: &Path, edit: impl FnOnce(&mut toml::Table)) -> PathBuf {
    let (init, runtime) = image_binaries();
    let mut c = deploy_config();
    c.insert(
        "binaries".into(),
        toml::toml! { init = (init.display().to_string()) runtime = (runtime.display().to_string()) }.into(),
    );
    // deploy/image.toml's guests, with their paths made absolute (the
    // copy lives elsewhere; paths are relative to the file).
    guest("hello");
    if let Some(toml::Value::Array(guests)) = c.get_mut("guest") {
        for g in guests {
            let file = root().join("deploy").join(g["file"].as_str().unwrap());
            g.as_table_mut()
                .unwrap()
                .insert("file".into(), file.display().to_string().into());
        }
    }
    edit(&mut c);
    let path = dir.join("image.toml");
    std::fs::write(&path, toml::to_string(&c).unwrap()).unwrap();
    path
}

/// `nacre image build` (through `nacre`, as an operator runs it).
pub(crate) fn build(config: &Path, out: &Path, extra: &[&str]) -> (bool, String, String) {
    image_binaries();
    // One image build at a time: each keeps a core busy compressing the
    // runtime, and the suite's other tests share the machine's two cores.
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let cache = root().join("target/nacre-image/kernels");
    let mut args = vec![
        "image",
        "build",
        "--config",
        config.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    if !extra.contains(&"--cache") {
        args.extend(["--cache", cache.to_str().unwrap()]);
    }
    args.extend(extra);
    nacre(&args)
}

pub(crate) fn python_pcrs(eif: &Path) -> serde_json::Value {
    let out = Command::new("python3")
        .arg(root().join("tests/clients/eif.py"))
        .arg("pcrs")
        .arg(eif)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}
