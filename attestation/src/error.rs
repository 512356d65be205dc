//! The one error type of verification; each variant names the failed check.

/// Why a document was rejected. Variants name the check that failed, so a
/// caller (or `nacre verify`) can say exactly what was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The bytes are not a well-formed attestation document.
    #[error("malformed document: {why}")]
    Malformed {
        /// What is wrong.
        why: String,
    },
    /// The document or one of its parts is over a size bound.
    #[error("too large: {what} is over the limit of {limit}")]
    TooLarge {
        /// Which part.
        what: &'static str,
        /// The bound.
        limit: usize,
    },
    /// The protected header names an algorithm other than ES384.
    #[error("unsupported algorithm {found}: attestation documents are signed with ES384 (-35)")]
    Algorithm {
        /// The algorithm found.
        found: String,
    },
    /// The COSE signature does not verify with the leaf certificate's key.
    #[error("signature check failed: the document was not signed by its certificate's key")]
    Signature,
    /// The certificate chain does not lead to the pinned root.
    #[error("certificate chain untrusted: {why}")]
    ChainUntrusted {
        /// Which link failed.
        why: String,
    },
    /// A certificate had expired at the check time.
    #[error("certificate {subject} expired at {not_after} (Unix seconds)")]
    CertExpired {
        /// The certificate's subject.
        subject: String,
        /// Its notAfter, Unix seconds.
        not_after: i64,
    },
    /// A certificate was not yet valid at the check time.
    #[error("certificate {subject} is not valid before {not_before} (Unix seconds)")]
    CertNotYetValid {
        /// The certificate's subject.
        subject: String,
        /// Its notBefore, Unix seconds.
        not_before: i64,
    },
    /// The nonce is not the one expected.
    #[error("nonce mismatch: the document does not carry the expected nonce")]
    NonceMismatch,
    /// A PCR differs from its expected value (or is absent).
    #[error("PCR{index} mismatch")]
    PcrMismatch {
        /// The PCR index.
        index: u32,
    },
    /// The user-data binding does not match what was expected.
    #[error("binding mismatch: {what}")]
    BindingMismatch {
        /// Which binding.
        what: String,
    },
}

impl VerifyError {
    pub(crate) fn malformed(why: impl Into<String>) -> Self {
        VerifyError::Malformed { why: why.into() }
    }
}
