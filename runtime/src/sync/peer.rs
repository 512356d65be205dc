//! Attestation between the enclaves of a deployment: the documents this
//! enclave makes for an exchange, and the checks a peer's document must
//! pass before anything moves.
//!
//! Neither the TLS of the sync link nor the addresses are trusted; the
//! documents are. A peer's document must chain to the same root as this
//! enclave's own (the AWS Nitro root, or the shared dev CA), carry this
//! enclave's fresh nonce, show the same PCRs (all but PCR4, the instance;
//! or a PCR0 from `--sync-accept-pcr0` for a rolling upgrade, when PCR0-2
//! may differ), and use the sync layout for the role expected. A guest's
//! document never has that layout.

use std::collections::BTreeMap;
use std::sync::Arc;

use nacre_attestation::{
    CoseSign1, Document, DocumentRequest, SyncBinding, SyncRole, Verifier, VerifyError,
};

use super::SyncError;
use crate::attest::Attester;

/// The PCR that differs between instances of one image.
const INSTANCE_PCR: u32 = 4;
/// PCRs that measure the image (EIF, kernel, application): an accepted
/// PCR0 from a rolling upgrade may bring its own values for these.
const IMAGE_PCRS: [u32; 3] = [0, 1, 2];

/// Why a peer's document was refused: the check that failed.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// Signature, chain, validity or nonce.
    #[error("attestation: {0}")]
    Document(#[from] VerifyError),
    /// A PCR differs from this enclave's own.
    #[error(
        "PCR{index} differs from this enclave's (another image; accept it with --sync-accept-pcr0 if it is a rolling upgrade)"
    )]
    Pcr {
        /// The PCR.
        index: u32,
    },
    /// Not a sync document of the role expected (a guest's document, a
    /// runtime document, or the other side's role).
    #[error("not a sync document of a {expected:?}: {why}")]
    Layout {
        /// The role the exchange expects.
        expected: SyncRole,
        /// What is wrong.
        why: String,
    },
    /// A receiver's document without a usable public key.
    #[error("the receiver's document names no public key")]
    NoPublicKey,
}

/// What a verified peer document says.
pub(crate) struct Checked {
    /// Its sync binding.
    pub binding: SyncBinding,
    /// Its public key (receivers').
    pub public_key: Option<Vec<u8>>,
}

/// This enclave's attestation for sync, and its checks of peers.
pub(crate) struct Peers {
    attester: Arc<dyn Attester>,
    verifier: Verifier,
    own_pcrs: BTreeMap<u32, Vec<u8>>,
    accept_pcr0: Vec<Vec<u8>>,
}

impl Peers {
    /// Learns this enclave's own PCRs from a document of its own.
    pub fn new(attester: Arc<dyn Attester>, accept_pcr0: Vec<Vec<u8>>) -> Result<Peers, SyncError> {
        let own = attester
            .attest(DocumentRequest::default())
            .map_err(|e| SyncError::Attestation(e.to_string()))?;
        let cose =
            CoseSign1::from_slice(&own).map_err(|e| SyncError::Attestation(e.to_string()))?;
        let own_pcrs = Document::from_payload(&cose.payload)
            .map_err(|e| SyncError::Attestation(e.to_string()))?
            .pcrs;
        if own_pcrs.get(&0).is_some_and(|p| p.iter().all(|b| *b == 0)) {
            tracing::error!(
                "THIS ENCLAVE RUNS IN DEBUG MODE (PCR0 is all zeros): the host can read its memory, and every debug enclave of any image has this PCR0. It syncs only with other debug enclaves; never give it a production deployment's keys"
            );
        }
        Ok(Peers {
            verifier: attester.peer_verifier(),
            attester,
            own_pcrs,
            accept_pcr0,
        })
    }

    /// A document of this enclave for one exchange, carrying the other
    /// side's `nonce`.
    pub async fn document(
        &self,
        nonce: &[u8],
        binding: SyncBinding,
        public_key: Option<Vec<u8>>,
    ) -> Result<Vec<u8>, SyncError> {
        let request = DocumentRequest {
            nonce: Some(nonce.to_vec()),
            public_key,
            user_data: Some(binding.to_bytes()),
            ..DocumentRequest::default()
        };
        let attester = self.attester.clone();
        tokio::task::spawn_blocking(move || attester.attest(request))
            .await
            .map_err(|e| SyncError::Attestation(e.to_string()))?
            .map_err(|e| SyncError::Attestation(e.to_string()))
    }

    /// Checks a peer's document for an exchange in which it plays `role`
    /// and this enclave gave `nonce`.
    pub fn check(&self, document: &[u8], nonce: &[u8], role: SyncRole) -> Result<Checked, Refusal> {
        let verified = self
            .verifier
            .clone()
            .nonce(nonce.to_vec())
            .verify(document)?;
        let doc = verified.document;
        let upgrade = doc
            .pcrs
            .get(&0)
            .is_some_and(|pcr0| self.accept_pcr0.iter().any(|a| a == pcr0));
        for (index, own) in &self.own_pcrs {
            if *index == INSTANCE_PCR || (upgrade && IMAGE_PCRS.contains(index)) {
                continue;
            }
            if doc.pcrs.get(index) != Some(own) {
                return Err(Refusal::Pcr { index: *index });
            }
        }
        let layout = |why: String| Refusal::Layout {
            expected: role,
            why,
        };
        let binding = SyncBinding::from_bytes(doc.user_data.as_deref().unwrap_or_default())
            .map_err(|e| layout(e.to_string()))?;
        if binding.role != role {
            return Err(layout(format!("it says {:?}", binding.role)));
        }
        if role == SyncRole::Receiver && doc.public_key.is_none() {
            return Err(Refusal::NoPublicKey);
        }
        Ok(Checked {
            binding,
            public_key: doc.public_key,
        })
    }
}
