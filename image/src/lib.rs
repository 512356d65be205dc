//! Nacre's enclave images: `nacre image build` and `nacre image describe`.
//!
//! An image is an EIF (the Nitro Enclaves image format) made of Debian's
//! cloud kernel, two deterministic ramdisks and a command line. Its PCR0
//! is the same from any clone with the same inputs, so a client can pin
//! the PCRs of an image it rebuilt from source.
//!
//! - [`config`]: the TOML configuration;
//! - [`deb`]: the kernel package (`apt-get download`, SHA-256 pin);
//! - [`ramdisk`]: deterministic cpio + gzip;
//! - [`checks`]: what is refused before anything is written;
//! - [`eif`]: writing and describing EIFs;
//! - [`assemble`]: the build, from configuration to EIF.

pub mod assemble;
pub mod checks;
pub mod config;
pub mod deb;
pub mod eif;
pub mod kmod;
pub mod ramdisk;
pub mod signing;

use std::fmt::Display;
use std::path::{Path, PathBuf};

/// Everything building or describing an image can refuse.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImageError {
    /// An input file cannot be read.
    #[error("cannot read {what} {}: {why}", path.display())]
    Read {
        /// What the file is for.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The system's reason.
        why: String,
    },
    /// An output cannot be written.
    #[error("cannot write {}: {why}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The system's reason.
        why: String,
    },
    /// The configuration file is wrong.
    #[error("image configuration {}: {why}", path.display())]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong and how to fix it.
        why: String,
    },
    /// The kernel package cannot be fetched or read.
    #[error("kernel package: {0}")]
    Kernel(String),
    /// An input the image cannot hold.
    #[error("{0}")]
    Invalid(String),
    /// A file that is not a sound EIF.
    #[error("{}: {why}", path.display())]
    Eif {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
}

impl ImageError {
    /// A file that could not be read: `what` it is for, where, and why.
    pub(crate) fn read(what: &'static str, path: impl Into<PathBuf>, why: impl Display) -> Self {
        ImageError::Read {
            what,
            path: path.into(),
            why: why.to_string(),
        }
    }

    /// An output that could not be written, and why.
    pub(crate) fn write(path: impl Into<PathBuf>, why: impl Display) -> Self {
        ImageError::Write {
            path: path.into(),
            why: why.to_string(),
        }
    }
}

/// Reads the file at `path`, naming it as `what` when it cannot.
pub(crate) fn read_file(what: &'static str, path: &Path) -> Result<Vec<u8>, ImageError> {
    std::fs::read(path).map_err(|e| ImageError::read(what, path, e))
}

/// The measurements as `nitro-cli build-enclave` and `describe-eif` print
/// them (`{"Measurements": {"HashAlgorithm": …, "PCR0": …}}`), which is
/// also what `nacre attest --pcrs` reads.
pub fn measurements_json(m: &eif::Measurements) -> serde_json::Value {
    let mut m = m.clone();
    // The EIF crate writes the hasher's Debug form, which newer sha2
    // releases print as "Sha512_48 { .. }"; nitro-cli prints this.
    m.insert("HashAlgorithm".into(), "Sha384 { ... }".into());
    serde_json::json!({ "Measurements": m })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_pcrs_print_as_nitro_cli_prints_them() {
        let m = [("HashAlgorithm", "Sha512_48 { .. }"), ("PCR0", "ab")]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .into();
        let json = super::measurements_json(&m);
        assert_eq!(json["Measurements"]["HashAlgorithm"], "Sha384 { ... }");
        assert_eq!(json["Measurements"]["PCR0"], "ab");
    }
}
