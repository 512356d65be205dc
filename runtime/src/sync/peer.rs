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

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use nacre_attestation::{GuestBinding, RuntimeBinding};

    use super::*;
    use crate::attest::Dev;

    /// A dev CA in a fresh directory.
    fn root(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "nacre-peer-{}-{tag}-{}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir
    }

    /// An enclave of chosen PCRs under the dev CA in `dir`.
    fn enclave(dir: &std::path::Path, changes: &[(u32, u8)]) -> Arc<Dev> {
        let mut pcrs: BTreeMap<u32, Vec<u8>> = (0..16).map(|i| (i, vec![0x11; 48])).collect();
        for (index, byte) in changes {
            pcrs.insert(*index, vec![*byte; 48]);
        }
        Arc::new(Dev::with_pcrs(dir, pcrs).expect("dev CA"))
    }

    /// A document as `enclave`'s runtime would make it.
    fn document(
        enclave: &Dev,
        nonce: &[u8],
        user_data: Option<Vec<u8>>,
        key: Option<Vec<u8>>,
    ) -> Vec<u8> {
        enclave
            .attest(DocumentRequest {
                nonce: Some(nonce.to_vec()),
                user_data,
                public_key: key,
                ..DocumentRequest::default()
            })
            .expect("document")
    }

    const NONCE: [u8; 20] = [7; 20];

    fn receiver() -> Option<Vec<u8>> {
        Some(
            SyncBinding {
                role: SyncRole::Receiver,
                payload_sha256: None,
            }
            .to_bytes(),
        )
    }

    fn sender() -> Option<Vec<u8>> {
        Some(
            SyncBinding {
                role: SyncRole::Sender,
                payload_sha256: Some([3; 32]),
            }
            .to_bytes(),
        )
    }

    fn us(dir: &std::path::Path, accept: Vec<Vec<u8>>) -> Peers {
        Peers::new(enclave(dir, &[]), accept).expect("peers")
    }

    #[test]
    fn a_peer_of_this_image_passes_and_says_its_binding_and_key() {
        let dir = root("same");
        let peer = enclave(&dir, &[(INSTANCE_PCR, 0x44)]);
        let checked = us(&dir, vec![])
            .check(
                &document(&peer, &NONCE, receiver(), Some(vec![5; 32])),
                &NONCE,
                SyncRole::Receiver,
            )
            .expect("a peer of this image, another instance");
        assert_eq!(checked.public_key, Some(vec![5; 32]));
        assert_eq!(checked.binding.role, SyncRole::Receiver);
        let checked = us(&dir, vec![])
            .check(
                &document(&peer, &NONCE, sender(), None),
                &NONCE,
                SyncRole::Sender,
            )
            .expect("a sender");
        assert_eq!(checked.binding.payload_sha256, Some([3; 32]));
    }

    #[test]
    fn a_document_under_another_root_is_refused() {
        let stranger = enclave(&root("other"), &[]);
        let err = us(&root("ours"), vec![])
            .check(
                &document(&stranger, &NONCE, sender(), None),
                &NONCE,
                SyncRole::Sender,
            )
            .err()
            .expect("refused");
        assert!(
            matches!(err, Refusal::Document(VerifyError::ChainUntrusted { .. })),
            "{err:?}"
        );
    }

    #[test]
    fn a_document_without_this_exchanges_nonce_is_refused() {
        let dir = root("nonce");
        let peer = enclave(&dir, &[]);
        let replayed = document(&peer, &[8; 20], sender(), None);
        let err = us(&dir, vec![])
            .check(&replayed, &NONCE, SyncRole::Sender)
            .err()
            .expect("refused");
        assert!(
            matches!(err, Refusal::Document(VerifyError::NonceMismatch)),
            "{err:?}"
        );
    }

    #[test]
    fn another_image_is_refused_unless_its_pcr0_is_accepted() {
        let dir = root("pcr");
        let upgrade = enclave(&dir, &[(0, 0xa0), (1, 0xa1), (2, 0xa2)]);
        let doc = document(&upgrade, &NONCE, sender(), None);
        let err = us(&dir, vec![])
            .check(&doc, &NONCE, SyncRole::Sender)
            .err()
            .expect("refused");
        assert!(matches!(err, Refusal::Pcr { index: 0 }), "{err:?}");
        // Accepted for a rolling upgrade, PCR0-2 may differ…
        us(&dir, vec![vec![0xa0; 48]])
            .check(&doc, &NONCE, SyncRole::Sender)
            .expect("an accepted PCR0");
        // … but nothing else, and another PCR0 is still refused.
        let tampered = enclave(&dir, &[(0, 0xa0), (3, 0x33)]);
        let err = us(&dir, vec![vec![0xa0; 48]])
            .check(
                &document(&tampered, &NONCE, sender(), None),
                &NONCE,
                SyncRole::Sender,
            )
            .err()
            .expect("refused");
        assert!(matches!(err, Refusal::Pcr { index: 3 }), "{err:?}");
        let err = us(&dir, vec![vec![0xb0; 48]])
            .check(&doc, &NONCE, SyncRole::Sender)
            .err()
            .expect("refused");
        assert!(matches!(err, Refusal::Pcr { index: 0 }), "{err:?}");
        // The same PCR0 with another kernel is another image.
        let kernel = enclave(&dir, &[(1, 0x99)]);
        let err = us(&dir, vec![])
            .check(
                &document(&kernel, &NONCE, sender(), None),
                &NONCE,
                SyncRole::Sender,
            )
            .err()
            .expect("refused");
        assert!(matches!(err, Refusal::Pcr { index: 1 }), "{err:?}");
    }

    #[test]
    fn only_the_sync_layout_of_the_expected_role_passes() {
        let dir = root("layout");
        let peer = enclave(&dir, &[]);
        let ours = us(&dir, vec![]);
        let runtime = RuntimeBinding {
            tls_cert_sha256: [1; 32],
            manifest_sha256: [2; 32],
        }
        .to_bytes();
        let guest = GuestBinding {
            guest_sha256: [1; 32],
            data: Some(receiver().unwrap_or_default()),
        }
        .to_bytes();
        for (what, user_data) in [
            ("a runtime document", Some(runtime)),
            ("a guest's document", Some(guest)),
            ("no user data", None),
        ] {
            let err = ours
                .check(
                    &document(&peer, &NONCE, user_data, Some(vec![5; 32])),
                    &NONCE,
                    SyncRole::Receiver,
                )
                .err()
                .unwrap_or_else(|| panic!("{what} passed"));
            assert!(
                matches!(
                    &err,
                    Refusal::Layout { expected: SyncRole::Receiver, why }
                        if why.contains("user_data is not the sync layout")
                ),
                "{what}: {err:?}"
            );
        }
        // A sender's document where a receiver's is expected.
        let err = ours
            .check(
                &document(&peer, &NONCE, sender(), Some(vec![5; 32])),
                &NONCE,
                SyncRole::Receiver,
            )
            .err()
            .expect("refused");
        assert!(
            matches!(&err, Refusal::Layout { expected: SyncRole::Receiver, why } if why == "it says Sender"),
            "{err:?}"
        );
    }

    #[test]
    fn a_receiver_must_name_the_key_to_seal_to() {
        let dir = root("key");
        let peer = enclave(&dir, &[]);
        let err = us(&dir, vec![])
            .check(
                &document(&peer, &NONCE, receiver(), None),
                &NONCE,
                SyncRole::Receiver,
            )
            .err()
            .expect("refused");
        assert!(matches!(err, Refusal::NoPublicKey), "{err:?}");
    }

    #[tokio::test]
    async fn this_enclaves_documents_carry_the_nonce_binding_and_key_given() {
        let dir = root("own");
        let ours = us(&dir, vec![]);
        let binding = SyncBinding {
            role: SyncRole::Receiver,
            payload_sha256: None,
        };
        let doc = ours
            .document(&NONCE, binding.clone(), Some(vec![9; 32]))
            .await
            .expect("document");
        let checked = us(&dir, vec![])
            .check(&doc, &NONCE, SyncRole::Receiver)
            .expect("passes its own image's check");
        assert_eq!(checked.binding, binding);
        assert_eq!(checked.public_key, Some(vec![9; 32]));
    }
}
