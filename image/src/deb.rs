//! The kernel (and, for the image's own module, its headers): Debian
//! packages fetched with `apt-get download` (never from anywhere else),
//! checked against the configuration's SHA-256, and read without dpkg:
//! `ar` for the package, `tar` and `xz2` for its data.

use crate::ImageError;
use crate::config::{KernelSection, Package};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The kernel image and the modules the configuration asked for.
pub struct Kernel {
    /// `boot/vmlinuz-*` (a bzImage).
    pub image: Vec<u8>,
    /// The kernel's release (`6.12.118+deb12-cloud-amd64`).
    pub release: String,
    /// Each asked module: its file name as shipped, and its bytes.
    pub modules: Vec<(String, Vec<u8>)>,
}

/// The package's file, from `given` or the cache (`apt-get download` into
/// `cache` when it is not there yet), checked against the pin that
/// `pinned_in` names (`[kernel]`, …).
pub fn obtain(
    pin: &Package,
    pinned_in: &str,
    given: Option<&Path>,
    cache: &Path,
) -> Result<PathBuf, ImageError> {
    let path = match given {
        Some(p) => p.to_owned(),
        None => match cached(pin, cache) {
            Some(path) => path,
            None => {
                download(pin, cache)?;
                cached(pin, cache).ok_or_else(|| {
                    ImageError::Kernel(format!(
                        "apt-get fetched {}={} but no {}_*.deb is in {}",
                        pin.package,
                        pin.version,
                        pin.package,
                        cache.display()
                    ))
                })?
            }
        },
    };
    let bytes = std::fs::read(&path).map_err(|e| ImageError::read("a Debian package", &path, e))?;
    let found = hex::encode(Sha256::digest(&bytes));
    if !found.eq_ignore_ascii_case(&pin.sha256) {
        return Err(ImageError::Kernel(format!(
            "{} has SHA-256 {found}, but {pinned_in} sha256 pins {}: it is another build of the package; fetch the pinned one or update the pin after checking the new package",
            path.display(),
            pin.sha256
        )));
    }
    Ok(path)
}

/// apt-get names the file `package_version_arch.deb`, with ':' (an epoch)
/// written `%3a`; the architecture is `amd64` or `all`.
fn cached(pin: &Package, cache: &Path) -> Option<PathBuf> {
    let prefix = format!("{}_{}_", pin.package, pin.version.replace(':', "%3a"));
    ["amd64", "all"]
        .iter()
        .map(|arch| cache.join(format!("{prefix}{arch}.deb")))
        .find(|path| path.exists())
}

fn download(pin: &Package, cache: &Path) -> Result<(), ImageError> {
    std::fs::create_dir_all(cache).map_err(|e| ImageError::write(cache, e))?;
    let wanted = format!("{}={}", pin.package, pin.version);
    let out = Command::new("apt-get")
        .args(["download", "-q", &wanted])
        .current_dir(cache)
        .output()
        .map_err(|e| {
            ImageError::Kernel(format!(
                "cannot run apt-get to fetch {wanted} ({e}): on a machine without apt, download the package into --cache (or pass the kernel with --kernel-deb FILE)"
            ))
        })?;
    if !out.status.success() {
        return Err(ImageError::Kernel(format!(
            "apt-get cannot fetch the package {wanted}: {}; run `apt-get update`, or fix the package and version (Debian keeps only current kernels: `apt-cache madison {}` lists them)",
            String::from_utf8_lossy(&out.stderr).trim(),
            pin.package
        )));
    }
    Ok(())
}

/// Reads the kernel image and the asked modules out of the package.
pub fn extract(deb: &Path, section: &KernelSection) -> Result<Kernel, ImageError> {
    let bad = |why: String| ImageError::Kernel(format!("{}: {why}", deb.display()));
    let file = std::fs::File::open(deb).map_err(|e| bad(e.to_string()))?;
    let mut archive = ar::Archive::new(file);
    while let Some(entry) = archive.next_entry() {
        let entry = entry.map_err(|e| bad(format!("not a Debian package: {e}")))?;
        let name = String::from_utf8_lossy(entry.header().identifier()).into_owned();
        if name == "data.tar.xz" {
            return read_data(xz2::read::XzDecoder::new(entry), section).map_err(bad);
        }
        if name.starts_with("data.tar") {
            return Err(bad(format!(
                "its {name} is not xz-compressed, which Debian's kernel packages are"
            )));
        }
    }
    Err(bad("no data.tar.xz in it: not a Debian package".into()))
}

fn read_data(data: impl Read, section: &KernelSection) -> Result<Kernel, String> {
    let mut image = None;
    let mut modules: Vec<Option<(String, Vec<u8>)>> = vec![None; section.modules.len()];
    let mut tar = tar::Archive::new(data);
    for entry in tar.entries().map_err(|e| e.to_string())? {
        let mut entry = entry.map_err(|e| e.to_string())?;
        let path = entry
            .path()
            .map_err(|e| e.to_string())?
            .to_string_lossy()
            .into_owned();
        let path = path.trim_start_matches("./").trim_start_matches("usr/");
        if let Some(release) = path.strip_prefix("boot/vmlinuz-") {
            let release = release.to_owned();
            image = Some((release, read_all(&mut entry)?));
        } else if let Some(rest) = path.strip_prefix("lib/modules/") {
            let Some((_, in_kernel)) = rest.split_once("/kernel/") else {
                continue;
            };
            let Some((stem, suffix)) = in_kernel.split_once(".ko") else {
                continue;
            };
            if !["", ".xz", ".zst", ".gz"].contains(&suffix) {
                continue;
            }
            if let Some(i) = section.modules.iter().position(|m| m == stem) {
                let file = in_kernel.rsplit('/').next().unwrap_or(in_kernel).to_owned();
                modules[i] = Some((file, read_all(&mut entry)?));
            }
        }
    }
    let (release, image) = image.ok_or("no boot/vmlinuz-* in it: not a kernel image package")?;
    let modules = modules
        .into_iter()
        .zip(&section.modules)
        .map(|(m, name)| {
            m.ok_or_else(|| {
                format!("no module {name} in it (looked for lib/modules/{release}/kernel/{name}.ko*); fix [kernel] modules")
            })
        })
        .collect::<Result<_, _>>()?;
    Ok(Kernel {
        image,
        release,
        modules,
    })
}

fn read_all(entry: &mut impl Read) -> Result<Vec<u8>, String> {
    let mut bytes = Vec::new();
    entry.read_to_end(&mut bytes).map_err(|e| e.to_string())?;
    Ok(bytes)
}

/// Unpacks a whole package's data into `dest` (the headers, for the
/// image's own module).
pub fn unpack(deb: &Path, dest: &Path) -> Result<(), ImageError> {
    let bad = |why: String| ImageError::Kernel(format!("{}: {why}", deb.display()));
    let file = std::fs::File::open(deb).map_err(|e| bad(e.to_string()))?;
    let mut archive = ar::Archive::new(file);
    while let Some(entry) = archive.next_entry() {
        let entry = entry.map_err(|e| bad(format!("not a Debian package: {e}")))?;
        if entry.header().identifier() == b"data.tar.xz" {
            let mut tar = tar::Archive::new(xz2::read::XzDecoder::new(entry));
            return tar
                .unpack(dest)
                .map_err(|e| bad(format!("cannot unpack it into {}: {e}", dest.display())));
        }
    }
    Err(bad("no data.tar.xz in it".into()))
}
