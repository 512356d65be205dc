//! The image's configuration: a TOML file naming the kernel package, the
//! binaries, the runtime's flags, its boot guests and extra files. Paths in
//! it are relative to the file itself, so a configuration kept in the
//! repository builds the same from any clone.

use crate::ImageError;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageConfig {
    /// Name, version and the enclave's size.
    pub image: ImageSection,
    /// The kernel package and its command line.
    pub kernel: KernelSection,
    /// The init and the runtime to put in the image.
    pub binaries: Binaries,
    /// How the runtime starts.
    pub runtime: RuntimeSection,
    /// Guests deployed at start (`--guest`).
    #[serde(default, rename = "guest")]
    pub guests: Vec<GuestEntry>,
    /// Other files, under `/nacre/files/`.
    #[serde(default, rename = "file")]
    pub files: Vec<FileEntry>,
    /// One network interface: only for an image made to boot in a VM.
    pub network: Option<nacre_init::Interface>,
}

/// `[image]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageSection {
    /// Written into the EIF's metadata.
    pub name: String,
    /// Written into the EIF's metadata.
    pub version: String,
    /// The memory the docs tell the operator to give the enclave
    /// (`nitro-cli run-enclave --memory`); the build checks the image fits.
    pub memory_mib: u64,
    /// The CPUs to give it (`--cpu-count`).
    pub cpus: u32,
}

/// `[kernel]`: a Debian kernel package, pinned by version and SHA-256.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KernelSection {
    /// The package, for example `linux-image-6.12.118+deb12-cloud-amd64`.
    pub package: String,
    /// Its exact Debian version.
    pub version: String,
    /// The SHA-256 of the `.deb` file.
    pub sha256: String,
    /// The kernel's command line.
    pub cmdline: String,
    /// Modules to load at boot, in order, as paths under the package's
    /// `lib/modules/VERSION/kernel/` without the `.ko…` suffix.
    pub modules: Vec<String>,
    /// `[kernel.cmdline_devices]`: build the image's own module that
    /// registers the virtio-mmio devices the command line names (a Nitro
    /// Enclave's vsock and NSM), for a kernel built without
    /// `CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES`.
    pub cmdline_devices: Option<CmdlineDevices>,
}

impl KernelSection {
    /// The kernel package's pin.
    pub fn package(&self) -> Package {
        Package {
            package: self.package.clone(),
            version: self.version.clone(),
            sha256: self.sha256.clone(),
        }
    }
}

/// A Debian package pinned by version and SHA-256.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Package {
    /// Its name.
    pub package: String,
    /// Its exact Debian version.
    pub version: String,
    /// The SHA-256 of the `.deb` file.
    pub sha256: String,
}

/// `[kernel.cmdline_devices]`: what the module is built with.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CmdlineDevices {
    /// The kernel's headers and build scripts, pinned like the kernel:
    /// `linux-headers-RELEASE`, `linux-headers-VERSION-common` and
    /// `linux-kbuild-VERSION`, of the kernel package's version.
    pub headers: Vec<Package>,
}

/// `[binaries]`: statically linked, built by `scripts/image-binaries`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Binaries {
    /// `nacre-init`.
    pub init: PathBuf,
    /// `nacre-runtime`.
    pub runtime: PathBuf,
}

/// `[runtime]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeSection {
    /// Its flags, as on a command line (guests are added from `[[guest]]`).
    pub args: Vec<String>,
    /// Its environment (nothing else is passed).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

/// `[[guest]]`: one boot guest.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuestEntry {
    /// Its name (and route).
    pub name: String,
    /// The component file.
    pub file: PathBuf,
    /// Options as `--guest` takes them after the file (`route=/x;…`).
    #[serde(default)]
    pub options: Option<String>,
}

/// `[[file]]`: one more file in the image.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    /// Where it is on this machine.
    pub source: PathBuf,
    /// Where it goes, relative to `/nacre/files/`.
    pub path: String,
    /// Its permission bits, as octal digits (default `644`; `600` for a
    /// private key the runtime checks is not readable by others).
    #[serde(default)]
    pub mode: Option<String>,
}

impl FileEntry {
    /// The permission bits, or what is wrong with `mode`.
    pub fn mode_bits(&self) -> Result<u32, String> {
        match &self.mode {
            None => Ok(0o644),
            Some(m) => u32::from_str_radix(m, 8)
                .ok()
                .filter(|b| *b <= 0o777)
                .ok_or_else(|| {
                    format!(
                        "[[file]] {}: mode {m:?} is not octal permission bits such as \"600\"",
                        self.path
                    )
                }),
        }
    }
}

impl ImageConfig {
    /// Reads `path`, resolving the paths inside it against its directory.
    pub fn load(path: &Path) -> Result<ImageConfig, ImageError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ImageError::read("the image configuration", path, e))?;
        let mut config: ImageConfig = toml::from_str(&text).map_err(|e| ImageError::Config {
            path: path.to_owned(),
            why: e.to_string(),
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let at = |p: &mut PathBuf| *p = base.join(&*p);
        at(&mut config.binaries.init);
        at(&mut config.binaries.runtime);
        config.guests.iter_mut().for_each(|g| at(&mut g.file));
        config.files.iter_mut().for_each(|f| at(&mut f.source));
        config.check(path)?;
        Ok(config)
    }

    /// What TOML cannot say: names and paths that would escape the image's
    /// tree or collide.
    fn check(&self, path: &Path) -> Result<(), ImageError> {
        let bad = |why: String| ImageError::Config {
            path: path.to_owned(),
            why,
        };
        let mut seen = std::collections::BTreeSet::new();
        for g in &self.guests {
            let plain = !g.name.is_empty()
                && g.name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !plain || !seen.insert(&g.name) {
                return Err(bad(format!(
                    "guest name {:?} must be unique and made of letters, digits, '-' and '_'",
                    g.name
                )));
            }
        }
        for f in &self.files {
            if f.path.is_empty()
                || f.path.starts_with('/')
                || f.path
                    .split('/')
                    .any(|c| c.is_empty() || c == "." || c == "..")
            {
                return Err(bad(format!(
                    "[[file]] path {:?} must be relative to /nacre/files/, without '..' or empty parts",
                    f.path
                )));
            }
        }
        if let Some(e) = self.files.iter().find_map(|f| f.mode_bits().err()) {
            return Err(bad(e));
        }
        if self.image.memory_mib == 0 || self.image.cpus == 0 {
            return Err(bad("[image] memory_mib and cpus must be above zero".into()));
        }
        if hex::decode(&self.kernel.sha256).map(|h| h.len()) != Ok(32) {
            return Err(bad(format!(
                "[kernel] sha256 {:?} is not 64 hex digits",
                self.kernel.sha256
            )));
        }
        Ok(())
    }
}
