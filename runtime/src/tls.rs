//! The TLS identity the runtime serves, and the rustls server config.

use std::path::Path;
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};

/// The certificate chain and config for the public listener.
#[derive(Clone)]
pub struct TlsIdentity {
    /// rustls server configuration (ALPN h2 and http/1.1).
    pub config: Arc<ServerConfig>,
    /// DER of the leaf certificate.
    pub leaf: CertificateDer<'static>,
    /// SHA-256 of the leaf's DER: what attestation documents bind.
    pub leaf_sha256: [u8; 32],
    /// Where the certificate came from, for `/enclave/config`.
    pub source: &'static str,
}

/// Why no TLS identity could be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A PEM file held nothing usable.
    #[error("{path}: {why}")]
    Pem {
        /// The file.
        path: String,
        /// What is missing.
        why: &'static str,
    },
    /// rustls or rcgen rejected the key or certificate.
    #[error("TLS setup failed: {0}")]
    Setup(String),
}

impl TlsIdentity {
    /// Loads a PEM certificate chain and private key.
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<TlsIdentity, TlsError> {
        let read = |p: &Path| {
            std::fs::read(p).map_err(|source| TlsError::Read {
                path: p.display().to_string(),
                source,
            })
        };
        let cert_pem = read(cert)?;
        let chain: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut cert_pem.as_slice())
            .collect::<Result<_, _>>()
            .map_err(|_| TlsError::Pem {
                path: cert.display().to_string(),
                why: "not a PEM certificate file",
            })?;
        if chain.is_empty() {
            return Err(TlsError::Pem {
                path: cert.display().to_string(),
                why: "no CERTIFICATE block found",
            });
        }
        let key_pem = read(key)?;
        let key_der = rustls_pemfile::private_key(&mut key_pem.as_slice())
            .ok()
            .flatten()
            .ok_or_else(|| TlsError::Pem {
                path: key.display().to_string(),
                why: "no PRIVATE KEY block found (PKCS#8, PKCS#1 or SEC1)",
            })?;
        Self::build(chain, key_der, "file")
    }

    /// Makes a fresh self-signed P-256 certificate for `fqdn`; the key never
    /// leaves this process.
    pub fn self_signed(fqdn: &str) -> Result<TlsIdentity, TlsError> {
        let ck = rcgen::generate_simple_self_signed(vec![fqdn.to_string()])
            .map_err(|e| TlsError::Setup(format!("cannot make a certificate for {fqdn:?}: {e}")))?;
        let key = PrivateKeyDer::Pkcs8(ck.signing_key.serialize_der().into());
        Self::build(vec![ck.cert.der().clone()], key, "self-signed")
    }

    fn build(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        source: &'static str,
    ) -> Result<TlsIdentity, TlsError> {
        let leaf = chain[0].clone();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Setup(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| {
                TlsError::Setup(format!(
                    "certificate and key do not form a usable pair: {e}"
                ))
            })?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(TlsIdentity {
            config: Arc::new(config),
            leaf_sha256: Sha256::digest(&leaf).into(),
            leaf,
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_and_files() {
        let id = TlsIdentity::self_signed("app.test").unwrap();
        assert_eq!(id.config.alpn_protocols[0], b"h2");
        assert_eq!(id.leaf_sha256, <[u8; 32]>::from(Sha256::digest(&id.leaf)));

        let dir = std::env::temp_dir().join(format!("nacre-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ck = rcgen::generate_simple_self_signed(vec!["f.test".to_string()]).unwrap();
        std::fs::write(dir.join("c.pem"), ck.cert.pem()).unwrap();
        std::fs::write(dir.join("k.pem"), ck.signing_key.serialize_pem()).unwrap();
        let id = TlsIdentity::from_pem_files(&dir.join("c.pem"), &dir.join("k.pem")).unwrap();
        assert_eq!(id.leaf.as_ref(), ck.cert.der().as_ref());

        let e = TlsIdentity::from_pem_files(&dir.join("k.pem"), &dir.join("k.pem"))
            .err()
            .unwrap();
        assert!(e.to_string().contains("k.pem"), "{e}");
        let e = TlsIdentity::from_pem_files(&dir.join("missing.pem"), &dir.join("k.pem"))
            .err()
            .unwrap();
        assert!(e.to_string().contains("missing.pem"), "{e}");
    }
}
