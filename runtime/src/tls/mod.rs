//! The certificate the runtime serves, replaceable while it serves, and the
//! rustls server config built on it.
//!
//! rustls asks [`Identity`] for the certificate at every handshake, so a
//! replacement (an ACME renewal, a certificate synchronized from the
//! leader) takes effect for the next connection while open ones keep the
//! one they started with. Everything that states which certificate the
//! enclave holds (`/enclave/config`, the user data of attestation
//! documents) reads it here, so what is attested and what is served never
//! drift apart.

use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use sha2::{Digest, Sha256};

/// Why no TLS identity could be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or held nothing usable.
    #[error(transparent)]
    Pem(#[from] nacre_transport::pem::PemError),
    /// rustls or rcgen rejected the key or certificate.
    #[error("TLS setup failed: {0}")]
    Setup(String),
}

/// The certificate and key served now.
#[derive(Debug)]
struct Served {
    key: Arc<CertifiedKey>,
    /// The chain and key as given: what an enclave of the same deployment
    /// receives, encrypted to it, when keys are synchronized.
    chain: Vec<CertificateDer<'static>>,
    secret: PrivateKeyDer<'static>,
    leaf_sha256: [u8; 32],
    source: &'static str,
}

/// The TLS identity of the runtime's listeners.
#[derive(Debug)]
pub struct Identity {
    provider: Arc<CryptoProvider>,
    current: ArcSwap<Served>,
}

/// The one crypto provider of the runtime's TLS, named wherever a config is
/// built: a second provider compiled in by some dependency must never make
/// rustls guess.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl Identity {
    /// Loads a PEM certificate chain and private key.
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<Arc<Identity>, TlsError> {
        let chain = nacre_transport::pem::certificates(cert)?;
        let key = nacre_transport::pem::private_key(key)?;
        Identity::new(chain, key, "file")
    }

    /// A fresh self-signed P-256 certificate for `fqdn`; the key never
    /// leaves this process.
    pub fn self_signed(fqdn: &str) -> Result<Arc<Identity>, TlsError> {
        let (chain, key) = self_signed_pair(fqdn)?;
        Identity::new(chain, key, "self-signed")
    }

    fn new(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        source: &'static str,
    ) -> Result<Arc<Identity>, TlsError> {
        let provider = provider();
        let served = served(&provider, chain, key, source)?;
        Ok(Arc::new(Identity {
            provider,
            current: ArcSwap::from_pointee(served),
        }))
    }

    /// Serves `chain` with `key` from the next handshake on. Connections
    /// already open keep the certificate they have.
    pub fn replace(
        &self,
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        source: &'static str,
    ) -> Result<(), TlsError> {
        let served = served(&self.provider, chain, key, source)?;
        self.current.store(Arc::new(served));
        tracing::info!(source, sha256 = %hex::encode(self.leaf_sha256()), "TLS certificate replaced");
        Ok(())
    }

    /// SHA-256 of the DER of the leaf served now: what documents bind.
    pub fn leaf_sha256(&self) -> [u8; 32] {
        self.current.load().leaf_sha256
    }

    /// Where the certificate served now came from, for `/enclave/config`.
    pub fn source(&self) -> &'static str {
        self.current.load().source
    }

    /// The chain and private key served now, for key synchronization only:
    /// they leave this process HPKE-encrypted to an attested peer.
    pub(crate) fn export(&self) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        let current = self.current.load();
        (current.chain.clone(), current.secret.clone_key())
    }

    /// The rustls config of a listener serving this identity, with HTTP/2
    /// and HTTP/1.1 offered by ALPN.
    pub fn server_config(self: &Arc<Self>) -> Result<Arc<ServerConfig>, TlsError> {
        let mut config = ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Setup(e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

impl ResolvesServerCert for Identity {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load().key.clone())
    }
}

/// A self-signed P-256 certificate for `fqdn` and its key.
pub fn self_signed_pair(
    fqdn: &str,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let ck = rcgen::generate_simple_self_signed(vec![fqdn.to_string()])
        .map_err(|e| TlsError::Setup(format!("cannot make a certificate for {fqdn:?}: {e}")))?;
    let key = PrivateKeyDer::Pkcs8(ck.signing_key.serialize_der().into());
    Ok((vec![ck.cert.der().clone()], key))
}

fn served(
    provider: &CryptoProvider,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    source: &'static str,
) -> Result<Served, TlsError> {
    let leaf_sha256 = match chain.first() {
        Some(leaf) => Sha256::digest(leaf).into(),
        None => return Err(TlsError::Setup("the certificate chain is empty".into())),
    };
    let signer = provider
        .key_provider
        .load_private_key(key.clone_key())
        .map_err(|e| TlsError::Setup(format!("the private key is not usable: {e}")))?;
    let certified = CertifiedKey::new(chain.clone(), signer);
    certified.keys_match().map_err(|e| {
        TlsError::Setup(format!(
            "certificate and key do not form a usable pair: {e}"
        ))
    })?;
    Ok(Served {
        key: Arc::new(certified),
        chain,
        secret: key,
        leaf_sha256,
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_files_and_replacement() {
        let id = Identity::self_signed("app.test").unwrap();
        assert_eq!(id.server_config().unwrap().alpn_protocols[0], b"h2");
        assert_eq!(id.source(), "self-signed");
        let first = id.leaf_sha256();

        let dir = std::env::temp_dir().join(format!("nacre-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ck = rcgen::generate_simple_self_signed(vec!["f.test".to_string()]).unwrap();
        std::fs::write(dir.join("c.pem"), ck.cert.pem()).unwrap();
        std::fs::write(dir.join("k.pem"), ck.signing_key.serialize_pem()).unwrap();
        let from_files = Identity::from_pem_files(&dir.join("c.pem"), &dir.join("k.pem")).unwrap();
        assert_eq!(
            from_files.leaf_sha256(),
            <[u8; 32]>::from(Sha256::digest(ck.cert.der()))
        );

        // A replacement changes what is served and attested.
        let (chain, key) = self_signed_pair("app.test").unwrap();
        id.replace(chain, key, "replaced").unwrap();
        assert_ne!(id.leaf_sha256(), first);
        assert_eq!(id.source(), "replaced");
        // A key that is not the certificate's is refused; nothing changes.
        let (chain, _) = self_signed_pair("app.test").unwrap();
        let (_, other_key) = self_signed_pair("app.test").unwrap();
        let now = id.leaf_sha256();
        let e = id.replace(chain, other_key, "bad").unwrap_err();
        assert!(e.to_string().contains("do not form a usable pair"), "{e}");
        assert_eq!(id.leaf_sha256(), now);

        let e = Identity::from_pem_files(&dir.join("k.pem"), &dir.join("k.pem")).unwrap_err();
        assert!(e.to_string().contains("k.pem"), "{e}");
        let e = Identity::from_pem_files(&dir.join("missing.pem"), &dir.join("k.pem")).unwrap_err();
        assert!(e.to_string().contains("missing.pem"), "{e}");
    }
}
