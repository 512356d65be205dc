//! Where attestation documents come from: the Nitro Security Module in an
//! enclave, or the dev stand-in elsewhere (docs/attestation.md).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use aws_nitro_enclaves_nsm_api::api::{Request, Response};
use aws_nitro_enclaves_nsm_api::driver;
use nacre_attestation::{DevSigner, DocumentRequest, Verifier};
use serde_bytes::ByteBuf;
use sha2::{Digest, Sha384};

/// Why no document could be made.
#[derive(Debug, thiserror::Error)]
pub enum AttestError {
    /// The provider could not be started.
    #[error("{0}")]
    Unavailable(String),
    /// The provider refused or failed one request.
    #[error("attestation failed: {0}")]
    Failed(String),
}

/// A source of signed attestation documents.
pub trait Attester: Send + Sync {
    /// A COSE_Sign1 document carrying these fields.
    fn attest(&self, req: DocumentRequest) -> Result<Vec<u8>, AttestError>;
    /// `nsm` or `dev`, for `/enclave/config`.
    fn kind(&self) -> &'static str;
    /// A verifier for other enclaves' documents, pinned to the root this
    /// provider's own documents chain to: the AWS Nitro root, or the dev
    /// CA in dev mode (so a dev fleet must share one `--dev-root`).
    fn peer_verifier(&self) -> Verifier;
}

/// The Nitro Security Module behind `/dev/nsm`.
pub struct Nsm {
    fd: Mutex<i32>,
}

impl Nsm {
    /// Opens `/dev/nsm`; fails outside a Nitro Enclave.
    pub fn open() -> Result<Nsm, AttestError> {
        let fd = driver::nsm_init();
        if fd < 0 {
            return Err(AttestError::Unavailable(
                "cannot open /dev/nsm: not inside a Nitro Enclave (use --attestation dev --dev-root DIR elsewhere)".into(),
            ));
        }
        Ok(Nsm { fd: Mutex::new(fd) })
    }
}

impl Attester for Nsm {
    fn attest(&self, req: DocumentRequest) -> Result<Vec<u8>, AttestError> {
        let fd = self
            .fd
            .lock()
            .map_err(|_| AttestError::Failed("NSM lock poisoned".into()))?;
        let request = Request::Attestation {
            user_data: req.user_data.map(ByteBuf::from),
            nonce: req.nonce.map(ByteBuf::from),
            public_key: req.public_key.map(ByteBuf::from),
        };
        match driver::nsm_process_request(*fd, request) {
            Response::Attestation { document } => Ok(document),
            Response::Error(code) => Err(AttestError::Failed(format!("NSM error {code:?}"))),
            other => Err(AttestError::Failed(format!(
                "unexpected NSM response {other:?}"
            ))),
        }
    }

    fn kind(&self) -> &'static str {
        "nsm"
    }

    fn peer_verifier(&self) -> Verifier {
        Verifier::aws()
    }
}

impl Drop for Nsm {
    fn drop(&mut self) {
        if let Ok(fd) = self.fd.lock() {
            driver::nsm_exit(*fd);
        }
    }
}

/// The dev stand-in: PCR0 is the SHA-384 of this executable, PCRs 1-15 are
/// zero, signed by the dev CA in `--dev-root`.
pub struct Dev {
    signer: DevSigner,
    pcrs: BTreeMap<u32, Vec<u8>>,
}

impl Dev {
    /// Opens (or creates) the dev CA in `dir` and measures this executable;
    /// `pcr8` stands for the image's signer (zeros: unsigned).
    pub fn open(dir: &Path, pcr8: Option<Vec<u8>>) -> Result<Dev, AttestError> {
        let signer = DevSigner::open(dir).map_err(|e| AttestError::Unavailable(e.to_string()))?;
        let pcr0 = measure_self().map_err(|e| {
            AttestError::Unavailable(format!("cannot read this executable to measure PCR0: {e}"))
        })?;
        let mut pcrs: BTreeMap<u32, Vec<u8>> = (1..16).map(|i| (i, vec![0u8; 48])).collect();
        pcrs.insert(0, pcr0);
        if let Some(pcr8) = pcr8 {
            pcrs.insert(8, pcr8);
        }
        Ok(Dev { signer, pcrs })
    }
}

impl Dev {
    /// A stand-in with chosen PCRs, under the dev CA in `dir`: how tests
    /// make enclaves of other images or instances.
    pub fn with_pcrs(dir: &Path, pcrs: BTreeMap<u32, Vec<u8>>) -> Result<Dev, AttestError> {
        let signer = DevSigner::open(dir).map_err(|e| AttestError::Unavailable(e.to_string()))?;
        Ok(Dev { signer, pcrs })
    }
}

/// The SHA-384 of the running executable, measured once per process (a
/// process's code does not change; several runtimes in one process, as in
/// the in-process tests, share it). `/proc/self/exe` is the image that
/// runs even if its file has been replaced since.
fn measure_self() -> Result<Vec<u8>, String> {
    static PCR0: OnceLock<Result<Vec<u8>, String>> = OnceLock::new();
    PCR0.get_or_init(|| {
        std::fs::read("/proc/self/exe")
            .or_else(|_| std::env::current_exe().and_then(std::fs::read))
            .map(|exe| Sha384::digest(&exe).to_vec())
            .map_err(|e| e.to_string())
    })
    .clone()
}

impl Attester for Dev {
    fn attest(&self, mut req: DocumentRequest) -> Result<Vec<u8>, AttestError> {
        req.pcrs = self.pcrs.clone();
        self.signer
            .sign(req)
            .map_err(|e| AttestError::Failed(e.to_string()))
    }

    fn kind(&self) -> &'static str {
        "dev"
    }

    fn peer_verifier(&self) -> Verifier {
        Verifier::with_root_der(self.signer.root_der().to_vec())
    }
}

/// An attester that counts the documents it makes, for metrics.
pub struct Counted {
    inner: Arc<dyn Attester>,
    documents: Arc<AtomicU64>,
}

impl Counted {
    /// Counts `inner`'s documents into `documents`.
    pub fn new(inner: Arc<dyn Attester>, documents: Arc<AtomicU64>) -> Counted {
        Counted { inner, documents }
    }
}

impl Attester for Counted {
    fn attest(&self, req: DocumentRequest) -> Result<Vec<u8>, AttestError> {
        let doc = self.inner.attest(req)?;
        self.documents.fetch_add(1, Ordering::Relaxed);
        Ok(doc)
    }

    fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    fn peer_verifier(&self) -> Verifier {
        self.inner.peer_verifier()
    }
}
