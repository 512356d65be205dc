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
//!
//! It also answers TLS-ALPN-01 validation (RFC 8737): a client that offers
//! `acme-tls/1` alone gets the challenge certificate for the name it asks,
//! and the server closes such a connection after the handshake.

mod certs;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use sha2::{Digest, Sha256};
use tokio::sync::watch;

pub use self::certs::{Pair, SELF_SIGNED_LIFETIME, challenge_pair, request_for, self_signed_pair};

/// The ALPN protocol of TLS-ALPN-01 validation (RFC 8737).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

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
    /// When this process started serving it.
    since: std::time::SystemTime,
}

/// A TLS-ALPN-01 challenge certificate and the name it answers for.
#[derive(Debug)]
pub struct Challenge {
    name: String,
    key: Arc<CertifiedKey>,
    chain: Vec<CertificateDer<'static>>,
    secret: PrivateKeyDer<'static>,
}

impl Challenge {
    /// The name (SNI) this challenge answers for.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The certificate and key, for key synchronization only.
    pub(crate) fn export(&self) -> Pair {
        (self.chain.clone(), self.secret.clone_key())
    }
}

/// The TLS identity of the runtime's listeners: the certificate served,
/// the TLS-ALPN-01 challenges open now, and the ACME account the
/// certificate is renewed with. Not `Debug` by derive: the account holds
/// its private key.
pub struct Identity {
    provider: Arc<CryptoProvider>,
    current: ArcSwap<Served>,
    challenges: ArcSwap<Vec<Arc<Challenge>>>,
    /// The ACME account, as the `acme` module stores it: it moves with the
    /// certificate, so any enclave of a deployment renews under it.
    account: std::sync::Mutex<Option<String>>,
    /// Bumped at every change of the three above; key sync sends them on.
    changes: watch::Sender<u64>,
}

/// What names the identity, none of its secrets.
impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let account = self.account.lock().map(|a| a.is_some()).unwrap_or(false);
        f.debug_struct("Identity")
            .field("leaf_sha256", &hex::encode(self.leaf_sha256()))
            .field("source", &self.source())
            .field(
                "challenges",
                &self
                    .challenges()
                    .iter()
                    .map(|c| c.name().to_string())
                    .collect::<Vec<_>>(),
            )
            .field("acme_account", &if account { "held" } else { "none" })
            .finish_non_exhaustive()
    }
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

    /// A fresh self-signed P-256 certificate for `fqdn` (see
    /// [`self_signed_pair`]); the key never leaves this process.
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
            challenges: ArcSwap::from_pointee(Vec::new()),
            account: std::sync::Mutex::new(None),
            changes: watch::channel(0).0,
        }))
    }

    fn changed(&self) {
        self.changes.send_modify(|n| *n += 1);
    }

    /// How many times the certificate, the challenges or the account
    /// changed so far.
    pub fn version(&self) -> u64 {
        *self.changes.borrow()
    }

    /// Signals every change of the certificate, the challenges or the
    /// account.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
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
        self.changed();
        Ok(())
    }

    /// When this process started serving the certificate it serves now.
    pub fn since(&self) -> std::time::SystemTime {
        self.current.load().since
    }

    /// The DER of the leaf served now.
    pub fn leaf(&self) -> CertificateDer<'static> {
        self.current.load().chain[0].clone()
    }

    /// Answers TLS-ALPN-01 validation for `name` with `pair` (see
    /// [`challenge_pair`]) from the next handshake on, next to the
    /// challenges already open.
    pub fn open_challenge(&self, name: &str, pair: Pair) -> Result<(), TlsError> {
        let challenge = self.challenge(name, pair)?;
        let mut all: Vec<Arc<Challenge>> = (**self.challenges.load())
            .iter()
            .filter(|c| !c.name.eq_ignore_ascii_case(name))
            .cloned()
            .collect();
        all.push(Arc::new(challenge));
        self.challenges.store(Arc::new(all));
        self.changed();
        Ok(())
    }

    /// Closes every challenge.
    pub fn close_challenges(&self) {
        if !self.challenges.load().is_empty() {
            self.challenges.store(Arc::new(Vec::new()));
            self.changed();
        }
    }

    /// The challenges open now.
    pub fn challenges(&self) -> Arc<Vec<Arc<Challenge>>> {
        self.challenges.load_full()
    }

    /// Makes `challenges` the open ones, as a leader sent them.
    pub(crate) fn set_challenges(&self, challenges: Vec<(String, Pair)>) -> Result<(), TlsError> {
        if challenges.is_empty() {
            self.close_challenges();
            return Ok(());
        }
        let all = challenges
            .into_iter()
            .map(|(name, pair)| self.challenge(&name, pair).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()?;
        self.challenges.store(Arc::new(all));
        self.changed();
        Ok(())
    }

    fn challenge(&self, name: &str, (chain, key): Pair) -> Result<Challenge, TlsError> {
        // Not `served`: rustls' pair check parses the certificate with
        // webpki, which rightly refuses the critical acmeIdentifier
        // extension that makes this certificate a challenge answer.
        let signer = self
            .provider
            .key_provider
            .load_private_key(key.clone_key())
            .map_err(|e| TlsError::Setup(format!("the challenge key is not usable: {e}")))?;
        if chain.is_empty() {
            return Err(TlsError::Setup(
                "the challenge certificate is missing".into(),
            ));
        }
        Ok(Challenge {
            name: name.to_string(),
            key: Arc::new(CertifiedKey::new(chain.clone(), signer)),
            chain,
            secret: key,
        })
    }

    /// The ACME account, as stored with [`Identity::set_account`].
    pub fn account(&self) -> Option<String> {
        self.account.lock().ok()?.clone()
    }

    /// Stores the ACME account (a secret: its key signs for the
    /// certificate's names).
    pub fn set_account(&self, account: Option<String>) {
        let changed = match self.account.lock() {
            Ok(mut held) if *held != account => {
                *held = account;
                true
            }
            _ => false,
        };
        if changed {
            self.changed();
        }
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
    /// and HTTP/1.1 offered by ALPN (and `acme-tls/1`, last, for
    /// validation).
    pub fn server_config(self: &Arc<Self>) -> Result<Arc<ServerConfig>, TlsError> {
        self.config_with(Arc::new(Gated {
            identity: self.clone(),
            open: Arc::new(AtomicBool::new(true)),
        }))
    }

    /// Like [`Identity::server_config`], but while `open` is false only
    /// TLS-ALPN-01 validation gets a certificate (`--wait-for-app` with
    /// ACME: the listener is up for the CA before it is for clients).
    pub fn gated_server_config(
        self: &Arc<Self>,
        open: Arc<AtomicBool>,
    ) -> Result<Arc<ServerConfig>, TlsError> {
        self.config_with(Arc::new(Gated {
            identity: self.clone(),
            open,
        }))
    }

    /// The rustls config of a TCP guest's listener: this identity, no
    /// ALPN (clients of raw TCP services offer none, or their own, which
    /// must not fail the handshake).
    pub fn tcp_server_config(self: &Arc<Self>) -> Result<Arc<ServerConfig>, TlsError> {
        let config = self.config_with(Arc::new(Gated {
            identity: self.clone(),
            open: Arc::new(AtomicBool::new(true)),
        }))?;
        let mut config = Arc::unwrap_or_clone(config);
        config.alpn_protocols.clear();
        Ok(Arc::new(config))
    }

    fn config_with(&self, resolver: Arc<Gated>) -> Result<Arc<ServerConfig>, TlsError> {
        let mut config = ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Setup(e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(resolver);
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec(), ACME_TLS_ALPN.to_vec()];
        Ok(Arc::new(config))
    }

    fn resolve_for(&self, hello: &ClientHello<'_>, open: bool) -> Option<Arc<CertifiedKey>> {
        // RFC 8737 §3: the validating client offers acme-tls/1 and nothing
        // else; only it sees a challenge certificate, and never the real one.
        let mut alpn = hello.alpn().into_iter().flatten();
        if alpn.next() == Some(ACME_TLS_ALPN) && alpn.next().is_none() {
            let name = hello.server_name()?;
            return self
                .challenges
                .load()
                .iter()
                .find(|c| c.name.eq_ignore_ascii_case(name))
                .map(|c| c.key.clone());
        }
        open.then(|| self.current.load().key.clone())
    }
}

/// The certificate resolver of a listener: the identity, and whether the
/// listener is open to clients yet.
#[derive(Debug)]
struct Gated {
    identity: Arc<Identity>,
    open: Arc<AtomicBool>,
}

impl ResolvesServerCert for Gated {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.identity
            .resolve_for(&hello, self.open.load(Ordering::Acquire))
    }
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
        since: std::time::SystemTime::now(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_no_secret() {
        let id = Identity::self_signed("app.test").unwrap();
        id.set_account(Some("{\"secret\":\"ACCOUNT-KEY-7f3a\"}".into()));
        let (_, key) = id.export();
        let shown = format!("{id:?}");
        assert!(!shown.contains("ACCOUNT-KEY-7f3a"), "{shown}");
        assert!(shown.contains("held"), "{shown}");
        let der = hex::encode(&key.secret_der()[..16]);
        assert!(!shown.contains(&der), "{shown}");
    }

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
