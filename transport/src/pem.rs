//! Certificates and keys from PEM files, with errors that name the file and
//! what it lacks: the one place every binary (the runtime's certificate and
//! `--extra-ca`, the CLI's `--root`) and the tests read them.

use std::path::{Path, PathBuf};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Why a PEM file gave nothing usable.
#[derive(Debug, thiserror::Error)]
#[error("{}: {why}", path.display())]
pub struct PemError {
    /// The file.
    pub path: PathBuf,
    /// What is wrong with it.
    pub why: String,
}

fn read(path: &Path) -> Result<Vec<u8>, PemError> {
    std::fs::read(path).map_err(|e| PemError {
        path: path.to_path_buf(),
        why: format!("cannot read: {e}"),
    })
}

/// Every `CERTIFICATE` block of the file at `path`; at least one.
pub fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let pem = read(path)?;
    let err = |why: &str| PemError {
        path: path.to_path_buf(),
        why: why.into(),
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|_| err("not a PEM certificate file"))?;
    if certs.is_empty() {
        return Err(err("no CERTIFICATE block found"));
    }
    Ok(certs)
}

/// The first private key (PKCS#8, PKCS#1 or SEC1) of the file at `path`.
pub fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, PemError> {
    let pem = read(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|_| PemError {
        path: path.to_path_buf(),
        why: "no PRIVATE KEY block found (PKCS#8, PKCS#1 or SEC1)".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_file_and_what_it_lacks() {
        let dir = std::env::temp_dir().join(format!("nacre-pem-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "nothing here").unwrap();
        let e = certificates(&empty).unwrap_err().to_string();
        assert!(
            e.contains("empty.pem") && e.contains("no CERTIFICATE"),
            "{e}"
        );
        let e = private_key(&empty).unwrap_err().to_string();
        assert!(e.contains("empty.pem") && e.contains("PRIVATE KEY"), "{e}");
        let e = certificates(&dir.join("missing.pem"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("missing.pem") && e.contains("cannot read"),
            "{e}"
        );
    }
}
