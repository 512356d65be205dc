//! The stand-in's HTTPS identity: the operator's PEM files, or else a CA
//! of its own kept in the state directory (so clients trust it once, with
//! the runtime's `--kms-ca`) and a fresh `localhost`/`127.0.0.1` leaf
//! issued by it at every start.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::error::StandInError;
use crate::keys::{make_private_dir, write_private};

/// How long the stand-in's own CA lives: a dev CA, kept across restarts.
const CA_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// How long a leaf lives; a new one is issued at every start anyway.
const LEAF_LIFETIME: Duration = Duration::from_secs(90 * 24 * 3600);

/// A server TLS configuration and, when the stand-in made its own CA,
/// that CA for clients to trust.
pub struct Tls {
    /// The rustls configuration (HTTP/2 and HTTP/1.1 by ALPN).
    pub config: Arc<ServerConfig>,
    /// PEM of the CA the stand-in made, if it made one.
    pub ca_pem: Option<String>,
    /// Where that CA's certificate is kept.
    pub ca_path: Option<PathBuf>,
}

/// The one crypto provider, named where the config is built (as the
/// runtime does) so another provider compiled in never changes it.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn setup(what: impl std::fmt::Display) -> impl FnOnce(String) -> StandInError {
    move |e| StandInError::Tls(format!("{what}: {e}"))
}

/// A server config for a certificate chain and key read from PEM files.
pub fn from_pem_files(cert: &Path, key: &Path) -> Result<Tls, StandInError> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| setup(cert.display())(e.to_string()))?;
    if chain.is_empty() {
        return Err(StandInError::Tls(format!(
            "{}: no certificate in it",
            cert.display()
        )));
    }
    let key_der =
        PrivateKeyDer::from_pem_file(key).map_err(|e| setup(key.display())(e.to_string()))?;
    Ok(Tls {
        config: server_config(chain, key_der)?,
        ca_pem: None,
        ca_path: None,
    })
}

/// The stand-in's own CA under `state/tls` (made on first start) and a
/// new leaf for `localhost` and `127.0.0.1` signed by it.
pub fn self_issued(state: &Path) -> Result<Tls, StandInError> {
    let dir = state.join("tls");
    make_private_dir(&dir)?;
    let ca_path = dir.join("ca.pem");
    let ca_key_path = dir.join("ca.key");
    if !ca_path.exists() {
        make_ca(&ca_path, &ca_key_path)?;
    }
    let ca_pem = std::fs::read_to_string(&ca_path).map_err(StandInError::io(&ca_path))?;
    let ca_key_pem =
        std::fs::read_to_string(&ca_key_path).map_err(StandInError::io(&ca_key_path))?;
    let rc = |e: rcgen::Error| e.to_string();
    let ca_key = KeyPair::from_pem(&ca_key_pem).map_err(|e| setup(ca_key_path.display())(rc(e)))?;
    let issuer =
        Issuer::from_ca_cert_pem(&ca_pem, ca_key).map_err(|e| setup(ca_path.display())(rc(e)))?;

    let mut params =
        CertificateParams::new(vec!["localhost".to_string()]).map_err(|e| setup("leaf")(rc(e)))?;
    params
        .subject_alt_names
        .push(SanType::IpAddress([127, 0, 0, 1].into()));
    params
        .distinguished_name
        .push(DnType::CommonName, "nacre-kms-dev");
    let now = SystemTime::now();
    params.not_before = (now - Duration::from_secs(3600)).into();
    params.not_after = (now + LEAF_LIFETIME).into();
    let leaf_key = KeyPair::generate().map_err(|e| setup("leaf key")(rc(e)))?;
    let leaf = params
        .signed_by(&leaf_key, &issuer)
        .map_err(|e| setup("leaf")(rc(e)))?;
    let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
    Ok(Tls {
        config: server_config(vec![leaf.der().clone()], key_der)?,
        ca_pem: Some(ca_pem),
        ca_path: Some(ca_path),
    })
}

fn make_ca(cert_path: &Path, key_path: &Path) -> Result<(), StandInError> {
    let rc = |e: rcgen::Error| e.to_string();
    let key = KeyPair::generate().map_err(|e| setup("CA key")(rc(e)))?;
    let mut params =
        CertificateParams::new(Vec::<String>::new()).map_err(|e| setup("CA")(rc(e)))?;
    params
        .distinguished_name
        .push(DnType::CommonName, "nacre-kms-dev CA (not AWS)");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let now = SystemTime::now();
    params.not_before = (now - Duration::from_secs(3600)).into();
    params.not_after = (now + CA_LIFETIME).into();
    let cert = params.self_signed(&key).map_err(|e| setup("CA")(rc(e)))?;
    // The key first: a crash between the two leaves no CA without a key,
    // and `ca.pem` existing is what says the CA is whole.
    write_private(key_path, key.serialize_pem().as_bytes())?;
    std::fs::write(cert_path, cert.pem()).map_err(StandInError::io(cert_path))
}

fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<ServerConfig>, StandInError> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| StandInError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| StandInError::Tls(format!("certificate and key: {e}")))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ca_is_kept_and_the_leaf_is_new() {
        let dir = std::env::temp_dir().join(format!("nacre-kms-dev-tls-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let a = self_issued(&dir).expect("first start");
        let b = self_issued(&dir).expect("restart");
        assert_eq!(a.ca_pem, b.ca_pem);
        assert!(
            a.ca_pem
                .as_deref()
                .is_some_and(|p| p.contains("BEGIN CERTIFICATE"))
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join("tls/ca.key"))
            .expect("key")
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0);
        // The operator's files work too (the CA's own pair stands in).
        let files = from_pem_files(&dir.join("tls/ca.pem"), &dir.join("tls/ca.key"));
        assert!(files.is_ok());
        assert!(from_pem_files(&dir.join("tls/ca.key"), &dir.join("tls/ca.key")).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
