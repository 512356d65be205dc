//! The image's own kernel module, `nacre_virtio_mmio` (its C source is
//! `image/kmod/`, compiled into this program). A Nitro Enclave has no ACPI
//! and no PCI: its kernel learns where the vsock and NSM devices are from
//! `virtio_mmio.device=…` words on the command line, which only a kernel
//! built with `CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES` reads. Debian's is not,
//! so the image carries this module, which registers those devices for
//! Debian's `virtio_mmio` driver; the init hands it the words.
//!
//! It is compiled here, against the kernel's own headers packages (pinned
//! like the kernel) with the kernel's own compiler, in a temporary
//! directory whose path is mapped away, and stripped of debug information:
//! the same inputs give the same bytes on any machine.

use crate::config::CmdlineDevices;
use crate::{ImageError, deb};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The module's name, as the kernel and the boot plan know it.
pub const NAME: &str = "nacre_virtio_mmio";
/// Whose command-line words it takes (`virtio_mmio.device=…`).
pub const PARAMS_FROM: &str = "virtio_mmio";
const SOURCE: &str = include_str!("../kmod/nacre_virtio_mmio.c");

const PINNED_IN: &str = "[kernel.cmdline_devices] headers";

/// Builds the module for the kernel `release`; its file's bytes.
pub fn build(devices: &CmdlineDevices, release: &str, cache: &Path) -> Result<Vec<u8>, ImageError> {
    let debs = devices
        .headers
        .iter()
        .map(|pin| deb::obtain(pin, PINNED_IN, None, cache))
        .collect::<Result<Vec<_>, _>>()?;
    // make runs in another directory: the tree's path must be absolute.
    std::fs::create_dir_all(cache).map_err(|e| ImageError::write(cache, e))?;
    let cache = &cache
        .canonicalize()
        .map_err(|e| ImageError::read("the cache directory", cache, e))?;
    let key: String = devices.headers.iter().map(|p| p.sha256.as_str()).collect();
    let tree = cache.join(format!(
        "headers-{}",
        &hex::encode(Sha256::digest(key.as_bytes()))[..16]
    ));
    if !tree.join(".complete").exists() {
        unpack_headers(&debs, &tree)?;
    }
    let kbuild = tree
        .join("usr/src")
        .join(format!("linux-headers-{release}"));
    if !kbuild.join("Makefile").exists() {
        return Err(ImageError::Kernel(format!(
            "{PINNED_IN} are not the headers of the kernel {release}: no usr/src/linux-headers-{release} in them; pin linux-headers-{release} and its -common and linux-kbuild packages"
        )));
    }
    point_into(&kbuild, &tree)?;
    let compiler = kernel_compiler(&kbuild)?;
    compile(&kbuild, &compiler)
}

/// Unpacks the packages into `tree` (through a temporary directory, so a
/// failure leaves no half tree).
fn unpack_headers(debs: &[PathBuf], tree: &Path) -> Result<(), ImageError> {
    let partial = tree.with_extension("partial");
    let _ = std::fs::remove_dir_all(&partial);
    std::fs::create_dir_all(&partial).map_err(|e| ImageError::write(&partial, e))?;
    for deb in debs {
        deb::unpack(deb, &partial)?;
    }
    let _ = std::fs::remove_dir_all(tree);
    std::fs::rename(&partial, tree).map_err(|e| ImageError::write(tree, e))?;
    std::fs::write(tree.join(".complete"), b"").map_err(|e| ImageError::write(tree, e))
}

/// The headers' Makefile includes its `-common` part by absolute path
/// (`/usr/src/…`): it is pointed into `tree`, wherever the cache is now.
fn point_into(kbuild: &Path, tree: &Path) -> Result<(), ImageError> {
    let makefile = kbuild.join("Makefile");
    let text = std::fs::read_to_string(&makefile)
        .map_err(|e| ImageError::read("the headers' Makefile", &makefile, e))?;
    let fixed: Vec<String> = text
        .lines()
        .map(
            |line| match (line.strip_prefix("include "), line.find("/usr/src/")) {
                (Some(_), Some(at)) => format!("include {}{}", tree.display(), &line[at..]),
                _ => line.to_owned(),
            },
        )
        .collect();
    let fixed = fixed.join("\n") + "\n";
    if fixed != text {
        std::fs::write(&makefile, fixed).map_err(|e| ImageError::write(makefile, e))?;
    }
    Ok(())
}

/// The compiler the kernel was built with (`CONFIG_CC_VERSION_TEXT`),
/// checked present and of that exact version: another gcc would compile
/// the module differently, and a client's rebuild would not give the
/// same PCR1.
fn kernel_compiler(kbuild: &Path) -> Result<String, ImageError> {
    let config_path = kbuild.join(".config");
    let config = std::fs::read_to_string(&config_path)
        .map_err(|e| ImageError::read("the kernel's configuration", &config_path, e))?;
    let text = config
        .lines()
        .find_map(|l| l.strip_prefix("CONFIG_CC_VERSION_TEXT=\""))
        .and_then(|l| l.strip_suffix('"'))
        .ok_or_else(|| {
            ImageError::Kernel(format!("{} names no compiler", config_path.display()))
        })?;
    let program = text.split_whitespace().next().unwrap_or(text).to_owned();
    let package = program
        .rsplit('-')
        .next()
        .map_or("gcc".to_owned(), |v| format!("gcc-{v}"));
    let found = Command::new(&program)
        .arg("--version")
        .output()
        .map_err(|e| {
            ImageError::Kernel(format!(
                "the module is compiled with the kernel's own compiler, {text}, and {program} cannot run ({e}): apt-get install {package} make binutils"
            ))
        })?;
    let first = String::from_utf8_lossy(&found.stdout)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned();
    if first != text {
        return Err(ImageError::Kernel(format!(
            "the module is compiled with the kernel's own compiler, {text}, but {program} is {first}: install that version of {package}, or pin a kernel built with this one"
        )));
    }
    Ok(program)
}

fn compile(kbuild: &Path, compiler: &str) -> Result<Vec<u8>, ImageError> {
    let dir = tempfile::tempdir().map_err(|e| ImageError::write(std::env::temp_dir(), e))?;
    let at = dir.path();
    let put = |name: &str, text: &str| {
        std::fs::write(at.join(name), text).map_err(|e| ImageError::write(at.join(name), e))
    };
    put(&format!("{NAME}.c"), SOURCE)?;
    put("Kbuild", &format!("obj-m := {NAME}.o\n"))?;
    // BTF for modules needs pahole and serves only BPF: off. The build
    // directory's path is mapped away; debug information is stripped.
    let out = Command::new("make")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("LC_ALL", "C")
        .arg("-s")
        .arg("-C")
        .arg(kbuild)
        .arg(format!("M={}", at.display()))
        .arg(format!("CC={compiler}"))
        .arg("CONFIG_DEBUG_INFO_BTF_MODULES=")
        .arg(format!("KCFLAGS=-ffile-prefix-map={}=.", at.display()))
        .arg("modules")
        .output()
        .map_err(|e| {
            ImageError::Kernel(format!(
                "cannot run make for the image's module ({e}): apt-get install make"
            ))
        })?;
    if !out.status.success() {
        return Err(ImageError::Kernel(format!(
            "compiling the image's module {NAME} failed:\n{}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let ko = at.join(format!("{NAME}.ko"));
    let stripped = at.join(format!("{NAME}.stripped.ko"));
    let status = Command::new("strip")
        .arg("--strip-debug")
        .arg("-o")
        .arg(&stripped)
        .arg(&ko)
        .status()
        .map_err(|e| {
            ImageError::Kernel(format!("cannot run strip ({e}): apt-get install binutils"))
        })?;
    if !status.success() {
        return Err(ImageError::Kernel(format!(
            "strip failed on {}",
            ko.display()
        )));
    }
    std::fs::read(&stripped).map_err(|e| ImageError::read("the compiled module", stripped, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_headers_makefile_is_pointed_into_the_tree_wherever_it_moves() {
        let dir = tempfile::tempdir().unwrap();
        let makefile = dir.path().join("Makefile");
        std::fs::write(
            &makefile,
            "include /usr/src/linux-headers-6.12-common/Makefile\n",
        )
        .unwrap();
        for tree in ["/cache/a", "/cache/b"] {
            point_into(dir.path(), Path::new(tree)).unwrap();
            assert_eq!(
                std::fs::read_to_string(&makefile).unwrap(),
                format!("include {tree}/usr/src/linux-headers-6.12-common/Makefile\n")
            );
        }
    }

    #[test]
    fn another_compiler_than_the_kernels_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join(".config");
        std::fs::write(
            &config,
            "CONFIG_CC_VERSION_TEXT=\"nacre-no-such-gcc-99 (Debian 99.0) 99.0\"\n",
        )
        .unwrap();
        let e = kernel_compiler(dir.path()).unwrap_err().to_string();
        assert!(
            e.contains("nacre-no-such-gcc-99") && e.contains("apt-get install gcc-99"),
            "{e}"
        );
        std::fs::write(
            &config,
            "CONFIG_CC_VERSION_TEXT=\"sh (Debian 99.0) 99.0\"\n",
        )
        .unwrap();
        let e = kernel_compiler(dir.path()).unwrap_err().to_string();
        assert!(e.contains("but sh is"), "{e}");
    }
}
