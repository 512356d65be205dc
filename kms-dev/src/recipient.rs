//! The `Recipient` parameter: an attestation document that must verify
//! against the configured root, be fresh, and carry the public key the
//! answer is sealed to.
//!
//! Error names. AWS documents no error specific to a bad attestation
//! document for `Decrypt` or `GenerateDataKey`. Its developer guide,
//! "Condition keys for Nitro Enclaves" (docs.aws.amazon.com/kms/latest/
//! developerguide/conditions-nitro-enclave.html), says that when a request
//! does not include a valid attestation document "permission is denied
//! because this condition is not satisfied": an `AccessDeniedException`,
//! which is what KMS users report for attestation refusals
//! (aws/aws-nitro-enclaves-sdk-c issues #127 and #157). So a document that
//! does not verify (another root, a bad signature, older than five
//! minutes) is refused with `AccessDeniedException`. What is wrong with the
//! parameter itself (a `KeyEncryptionAlgorithm` other than
//! `RSAES_OAEP_SHA_256`, no document, no public key in it) is a
//! `ValidationException`, KMS's answer to a value outside a parameter's
//! constraints (API reference, RecipientInfo: the only valid algorithm is
//! `RSAES_OAEP_SHA_256`; the Nitro Enclaves SDK's KMS API notes: the
//! document must include an RSA public key).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nacre_attestation::Verifier;
use nacre_kms::wire::KEY_ENCRYPTION_ALGORITHM;

use crate::error::StandInError;

/// Oldest a document may be (its `timestamp` against now), and how far in
/// the future a clock may put it.
pub const MAX_AGE: Duration = Duration::from_secs(5 * 60);

/// What a verified document gives a call.
pub struct Attested {
    /// PCR index to value.
    pub pcrs: BTreeMap<u32, Vec<u8>>,
    /// DER SubjectPublicKeyInfo the answer is sealed to.
    pub public_key: Vec<u8>,
    /// The enclave's module id, for the log.
    pub module_id: String,
}

/// Why a `Recipient` was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecipientError {
    /// The parameter is malformed: a `ValidationException` with this message.
    Invalid(String),
    /// The document is not a valid attestation: an `AccessDeniedException`;
    /// this says why, for the log.
    Untrusted(String),
}

/// Verifies documents against one root.
#[derive(Clone)]
pub struct RecipientVerifier {
    verifier: Verifier,
}

impl RecipientVerifier {
    /// Trusts the root certificate in `root_pem`, or AWS's Nitro root.
    pub fn new(root_pem: Option<&[u8]>) -> Result<RecipientVerifier, StandInError> {
        let verifier = match root_pem {
            Some(pem) => Verifier::with_root_pem(pem)
                .map_err(|e| StandInError::Config(format!("--attestation-root: {e}")))?,
            None => Verifier::aws(),
        };
        Ok(RecipientVerifier { verifier })
    }

    /// Checks a `Recipient` at time `now`: the parameter (see
    /// [`check_parameter`]), then the document.
    pub fn verify(
        &self,
        algorithm: Option<&str>,
        document: &[u8],
        now: SystemTime,
    ) -> Result<Attested, RecipientError> {
        check_parameter(algorithm, document)?;
        let since_epoch = now.duration_since(UNIX_EPOCH).unwrap_or_default();
        let at = i64::try_from(since_epoch.as_secs()).unwrap_or(i64::MAX);
        let verified = self
            .verifier
            .clone()
            .at(at)
            .verify(document)
            .map_err(|e| RecipientError::Untrusted(format!("attestation document: {e}")))?;
        let doc = verified.document;
        check_fresh(doc.timestamp, since_epoch)?;
        let Some(public_key) = doc.public_key.filter(|k| !k.is_empty()) else {
            return Err(RecipientError::Invalid(
                "the attestation document in Recipient has no public_key; \
                 request it with an RSA public key (DER SubjectPublicKeyInfo)"
                    .into(),
            ));
        };
        Ok(Attested {
            pcrs: doc.pcrs,
            public_key,
            module_id: doc.module_id,
        })
    }
}

/// What KMS checks of the parameter before reading the document: the
/// algorithm (absent means the only one there is) and a non-empty document.
pub fn check_parameter(algorithm: Option<&str>, document: &[u8]) -> Result<(), RecipientError> {
    let algorithm = algorithm.unwrap_or(KEY_ENCRYPTION_ALGORITHM);
    if algorithm != KEY_ENCRYPTION_ALGORITHM {
        return Err(RecipientError::Invalid(format!(
            "1 validation error detected: Value '{algorithm}' at \
             'recipient.keyEncryptionAlgorithm' failed to satisfy constraint: Member \
             must satisfy enum value set: [{KEY_ENCRYPTION_ALGORITHM}]"
        )));
    }
    if document.is_empty() {
        return Err(RecipientError::Invalid(
            "Recipient has no AttestationDocument".into(),
        ));
    }
    Ok(())
}

/// A document's `timestamp` (milliseconds) must be within [`MAX_AGE`] of
/// now, either way.
fn check_fresh(timestamp_ms: u64, now: Duration) -> Result<(), RecipientError> {
    let made = Duration::from_millis(timestamp_ms);
    if let Some(age) = now.checked_sub(made) {
        if age > MAX_AGE {
            return Err(RecipientError::Untrusted(format!(
                "attestation document is {}s old; at most {}s is accepted",
                age.as_secs(),
                MAX_AGE.as_secs()
            )));
        }
    } else if made - now > MAX_AGE {
        return Err(RecipientError::Untrusted(format!(
            "attestation document is dated {}s in the future",
            (made - now).as_secs()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn freshness_bounds() {
        let now = Duration::from_secs(1_700_000_000);
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        assert!(check_fresh(ms(now), now).is_ok());
        assert!(check_fresh(ms(now - MAX_AGE), now).is_ok());
        assert!(check_fresh(ms(now - MAX_AGE - Duration::from_secs(1)), now).is_err());
        assert!(check_fresh(ms(now + Duration::from_secs(30)), now).is_ok());
        assert!(check_fresh(ms(now + MAX_AGE + Duration::from_secs(1)), now).is_err());
        assert!(check_fresh(u64::MAX, now).is_err());
    }

    #[test]
    fn wrong_algorithm_and_missing_document_are_validation_errors() {
        let v = RecipientVerifier::new(None).expect("aws root");
        let now = SystemTime::now();
        let wrong = v.verify(Some("RSAES_OAEP_SHA_1"), b"x", now);
        assert!(matches!(wrong, Err(RecipientError::Invalid(m)) if m.contains("RSAES_OAEP_SHA_1")));
        assert!(matches!(
            v.verify(None, b"", now),
            Err(RecipientError::Invalid(_))
        ));
        assert!(matches!(
            v.verify(Some("RSAES_OAEP_SHA_256"), b"garbage", now),
            Err(RecipientError::Untrusted(_))
        ));
    }
}
