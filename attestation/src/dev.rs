//! The dev stand-in for the Nitro Security Module (docs/attestation.md): a P-384 root
//! CA kept in a directory, a fresh leaf per process, documents in exactly
//! the AWS format. Verifiers reject them unless given that root.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    PKCS_ECDSA_P384_SHA384,
};
use time::{Duration, OffsetDateTime};

use crate::cose::{CoseSign1, ES384};
use crate::document::Document;

/// How long a dev leaf lives, like a real NSM leaf.
const LEAF_LIFETIME: Duration = Duration::hours(3);
/// A leaf this close to expiry is replaced before signing.
const LEAF_RENEW: Duration = Duration::minutes(10);

/// Why the dev signer failed.
#[derive(Debug, thiserror::Error)]
pub enum DevError {
    /// Reading or writing the dev-root directory failed.
    #[error("dev root {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Making or loading a certificate or key failed.
    #[error("dev root: {0}")]
    Crypto(String),
}

/// What a caller puts into a document.
#[derive(Debug, Clone, Default)]
pub struct DocumentRequest {
    /// PCR index to value (48 bytes each).
    pub pcrs: BTreeMap<u32, Vec<u8>>,
    /// Optional public key.
    pub public_key: Option<Vec<u8>>,
    /// Optional user data.
    pub user_data: Option<Vec<u8>>,
    /// Optional nonce.
    pub nonce: Option<Vec<u8>>,
}

struct Leaf {
    der: Vec<u8>,
    key: EcdsaKeyPair,
    not_after: OffsetDateTime,
}

/// Signs AWS-format documents with a dev CA.
pub struct DevSigner {
    root_der: Vec<u8>,
    root: Issuer<'static, KeyPair>,
    leaf: Mutex<Leaf>,
    rng: SystemRandom,
    module_id: String,
}

impl DevSigner {
    /// Opens the dev CA in `dir` (`root.pem`, `root.key`), creating it when
    /// missing, and issues this process's leaf.
    pub fn open(dir: &Path) -> Result<DevSigner, DevError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| DevError::Io { path, source }
        };
        let crypto = |e: rcgen::Error| DevError::Crypto(e.to_string());
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let cert_path = dir.join("root.pem");
        let key_path = dir.join("root.key");
        if !cert_path.exists() {
            let key = KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384).map_err(crypto)?;
            let mut params = params_named("nacre dev root (not AWS)")?;
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.key_usages = vec![
                KeyUsagePurpose::KeyCertSign,
                KeyUsagePurpose::CrlSign,
                KeyUsagePurpose::DigitalSignature,
            ];
            let now = OffsetDateTime::now_utc();
            params.not_before = now - Duration::days(1);
            params.not_after = now + Duration::days(3650);
            let cert = params.self_signed(&key).map_err(crypto)?;
            write_private(&key_path, key.serialize_pem().as_bytes()).map_err(io(&key_path))?;
            std::fs::write(&cert_path, cert.pem()).map_err(io(&cert_path))?;
        }
        let pem = std::fs::read_to_string(&cert_path).map_err(io(&cert_path))?;
        let key_pem = std::fs::read_to_string(&key_path).map_err(io(&key_path))?;
        let key = KeyPair::from_pem(&key_pem).map_err(crypto)?;
        let root_der = x509_parser::pem::parse_x509_pem(pem.as_bytes())
            .map_err(|e| DevError::Crypto(format!("{}: {e}", cert_path.display())))?
            .1
            .contents;
        let root = Issuer::from_ca_cert_pem(&pem, key).map_err(crypto)?;
        let leaf = issue_leaf(&root)?;
        Ok(DevSigner {
            root_der,
            root,
            leaf: Mutex::new(leaf),
            rng: SystemRandom::new(),
            module_id: format!("nacre-dev-{:016x}", rand_u64()),
        })
    }

    /// DER of the dev root: what a verifier must be given to accept.
    pub fn root_der(&self) -> &[u8] {
        &self.root_der
    }

    /// Signs a document holding `req`, timestamped now.
    pub fn sign(&self, req: DocumentRequest) -> Result<Vec<u8>, DevError> {
        let now = OffsetDateTime::now_utc();
        let mut leaf = self
            .leaf
            .lock()
            .map_err(|_| DevError::Crypto("leaf lock poisoned".into()))?;
        if leaf.not_after - now < LEAF_RENEW {
            *leaf = issue_leaf(&self.root)?;
        }
        let doc = Document {
            module_id: self.module_id.clone(),
            digest: "SHA384".into(),
            timestamp: (now.unix_timestamp_nanos() / 1_000_000) as u64,
            pcrs: req.pcrs,
            certificate: leaf.der.clone(),
            cabundle: vec![self.root_der.clone()],
            public_key: req.public_key,
            user_data: req.user_data,
            nonce: req.nonce,
        };
        let mut protected = Vec::new();
        let header = ciborium::Value::Map(vec![(
            ciborium::Value::Integer(1.into()),
            ciborium::Value::Integer(ES384.into()),
        )]);
        let _ = ciborium::into_writer(&header, &mut protected);
        let mut cose = CoseSign1 {
            protected,
            payload: doc.to_payload(),
            signature: Vec::new(),
        };
        let sig = leaf
            .key
            .sign(&self.rng, &cose.to_be_signed())
            .map_err(|_| DevError::Crypto("signing failed".into()))?;
        cose.signature = sig.as_ref().to_vec();
        Ok(cose.to_vec())
    }
}

/// Certificate parameters with subject `O=Nacre, CN=common_name`.
fn params_named(common_name: &str) -> Result<CertificateParams, DevError> {
    let mut params = CertificateParams::new(Vec::<String>::new())
        .map_err(|e| DevError::Crypto(e.to_string()))?;
    params
        .distinguished_name
        .push(DnType::OrganizationName, "Nacre");
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    Ok(params)
}

fn issue_leaf(root: &Issuer<'static, KeyPair>) -> Result<Leaf, DevError> {
    let crypto = |e: rcgen::Error| DevError::Crypto(e.to_string());
    let key = KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384).map_err(crypto)?;
    let mut params = params_named("nacre dev enclave")?;
    params.is_ca = IsCa::ExplicitNoCa;
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::minutes(1);
    params.not_after = now + LEAF_LIFETIME;
    let cert = params.signed_by(&key, root).map_err(crypto)?;
    let signing = EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, &key.serialize_der())
        .map_err(|e| DevError::Crypto(format!("leaf key: {e}")))?;
    Ok(Leaf {
        der: cert.der().to_vec(),
        key: signing,
        not_after: params.not_after,
    })
}

fn rand_u64() -> u64 {
    let mut b = [0u8; 8];
    let _ = aws_lc_rs::rand::SecureRandom::fill(&SystemRandom::new(), &mut b);
    u64::from_le_bytes(b)
}

/// Writes a private key readable by its owner only.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Verifier, VerifyError};

    #[test]
    fn dev_documents_round_trip_and_need_the_dev_root() {
        let dir = std::env::temp_dir().join(format!("nacre-devroot-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let signer = DevSigner::open(&dir).unwrap();
        let mut pcrs = BTreeMap::new();
        pcrs.insert(0, vec![7u8; 48]);
        pcrs.insert(1, vec![0u8; 48]);
        let doc = signer
            .sign(DocumentRequest {
                pcrs,
                public_key: Some(b"pk".to_vec()),
                user_data: Some(b"ud".to_vec()),
                nonce: Some(vec![9; 20]),
            })
            .unwrap();

        // Without the dev root: the AWS root does not chain.
        assert!(matches!(
            Verifier::aws().verify(&doc),
            Err(VerifyError::ChainUntrusted { .. })
        ));
        // With it: every check passes and it says "dev".
        let root_pem = std::fs::read(dir.join("root.pem")).unwrap();
        let v = Verifier::with_root_pem(&root_pem)
            .unwrap()
            .nonce(vec![9; 20])
            .pcr(0, vec![7u8; 48])
            .verify(&doc)
            .unwrap();
        assert!(v.dev);
        assert!(v.document.module_id.starts_with("nacre-dev"));
        assert_eq!(v.document.user_data.as_deref(), Some(&b"ud"[..]));
        assert_eq!(v.document.public_key.as_deref(), Some(&b"pk"[..]));

        // The same root is reused by a second signer (a restart), with a
        // new leaf; the key file is private.
        let again = DevSigner::open(&dir).unwrap();
        assert_eq!(again.root_der(), signer.root_der());
        let doc2 = again.sign(DocumentRequest::default()).unwrap();
        assert!(
            Verifier::with_root_pem(&root_pem)
                .unwrap()
                .verify(&doc2)
                .is_ok()
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join("root.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "root.key is readable by others");

        // A dev document is checked like any other: a flipped byte fails.
        let mut bad = doc.clone();
        let i = bad.len() - 10;
        bad[i] ^= 1;
        assert_eq!(
            Verifier::with_root_pem(&root_pem)
                .unwrap()
                .verify(&bad)
                .unwrap_err(),
            VerifyError::Signature
        );
    }
}
