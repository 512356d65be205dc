//! The two operations, in the order KMS checks things: the parameters,
//! the key, the attestation document, the key policy, `DryRun`, then the
//! work itself.

use std::time::SystemTime;

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use nacre_kms::wire::{
    DecryptRequest, DecryptResponse, EncryptionContext, ErrorCode, GenerateDataKeyRequest,
    GenerateDataKeyResponse, Operation, Recipient, SecretBytes,
};
use zeroize::Zeroizing;

use crate::blob::{ParsedBlob, seal};
use crate::error::KmsError;
use crate::keys::{Key, KeyStore};
use crate::policy::{Decision, RequestContext};
use crate::recipient::{Attested, RecipientError, RecipientVerifier, check_parameter};

/// The only encryption algorithm of a symmetric key.
const SYMMETRIC_DEFAULT: &str = "SYMMETRIC_DEFAULT";
/// Algorithms KMS knows but a symmetric key cannot use.
const ASYMMETRIC_ALGORITHMS: [&str; 3] = ["RSAES_OAEP_SHA_1", "RSAES_OAEP_SHA_256", "SM2PKE"];
/// Largest data key `NumberOfBytes` allows.
const MAX_DATA_KEY: u32 = 1024;

/// What a successful call did, for the log.
pub struct Done {
    /// The key's ARN.
    pub key: String,
    /// The attested module id, when a Recipient was given.
    pub recipient: Option<String>,
}

/// The keys and the attestation verifier: everything a call needs besides
/// the caller's identity.
pub struct Kms {
    /// The configured keys.
    pub keys: KeyStore,
    /// Checks `Recipient` documents.
    pub recipients: RecipientVerifier,
}

impl Kms {
    /// `GenerateDataKey`.
    pub fn generate_data_key(
        &self,
        req: &GenerateDataKeyRequest,
        caller: &str,
        now: SystemTime,
    ) -> Result<(GenerateDataKeyResponse, Done), KmsError> {
        let op = Operation::GenerateDataKey;
        let length = data_key_length(req.key_spec.as_deref(), req.number_of_bytes)?;
        check_recipient(req.recipient.as_ref())?;
        let key = self.find(&req.key_id)?;
        let attested = self.attest(op, key, caller, req.recipient.as_ref(), now)?;
        authorize(op, key, caller, &req.encryption_context, attested.as_ref())?;
        dry_run(req.dry_run)?;

        let mut data_key = Zeroizing::new(vec![0u8; length]);
        SystemRandom::new()
            .fill(&mut data_key)
            .map_err(|_| internal("no random numbers for the data key"))?;
        let arn = key.arn.as_str();
        let ciphertext_blob = seal(arn, &key.material, &req.encryption_context, &data_key)
            .map_err(|e| internal(&format!("sealing the data key: {e}")))?;
        let (plaintext, ciphertext_for_recipient) = answer(attested.as_ref(), data_key)?;
        let done = Done {
            key: arn.to_string(),
            recipient: attested.map(|a| a.module_id),
        };
        Ok((
            GenerateDataKeyResponse {
                key_id: Some(arn.to_string()),
                ciphertext_blob,
                plaintext,
                ciphertext_for_recipient,
            },
            done,
        ))
    }

    /// `Decrypt`.
    pub fn decrypt(
        &self,
        req: &DecryptRequest,
        caller: &str,
        now: SystemTime,
    ) -> Result<(DecryptResponse, Done), KmsError> {
        let op = Operation::Decrypt;
        if req.ciphertext_blob.is_empty() {
            return Err(KmsError::new(
                ErrorCode::Validation,
                "1 validation error detected: Value at 'ciphertextBlob' failed to satisfy \
                 constraint: Member must have length greater than or equal to 1",
            ));
        }
        check_algorithm(req.encryption_algorithm.as_deref())?;
        check_recipient(req.recipient.as_ref())?;
        let blob = ParsedBlob::parse(&req.ciphertext_blob).map_err(|e| invalid_ciphertext(&e))?;
        if let Some(key_id) = &req.key_id {
            let named = self.find(key_id)?;
            if named.arn.as_str() != blob.key_arn() {
                return Err(KmsError::new(
                    ErrorCode::IncorrectKey,
                    "The key ID in the request does not identify a CMK that can perform \
                     this operation.",
                )
                .on_key(named.arn.as_str())
                .because(format!("the ciphertext was made under {}", blob.key_arn())));
            }
        }
        let key = self
            .keys
            .find(blob.key_arn())
            .filter(|k| k.arn.as_str() == blob.key_arn())
            .ok_or_else(|| {
                invalid_ciphertext(&"the blob names a key this stand-in does not have")
            })?;
        let attested = self.attest(op, key, caller, req.recipient.as_ref(), now)?;
        authorize(op, key, caller, &req.encryption_context, attested.as_ref())?;
        dry_run(req.dry_run)?;

        let plaintext = blob
            .open(&key.material, &req.encryption_context)
            .map_err(|e| invalid_ciphertext(&e).on_key(key.arn.as_str()))?;
        let (plaintext, ciphertext_for_recipient) = answer(attested.as_ref(), plaintext)?;
        let arn = key.arn.as_str().to_string();
        Ok((
            DecryptResponse {
                key_id: Some(arn.clone()),
                plaintext,
                ciphertext_for_recipient,
                encryption_algorithm: Some(SYMMETRIC_DEFAULT.to_string()),
            },
            Done {
                key: arn,
                recipient: attested.map(|a| a.module_id),
            },
        ))
    }

    /// The key `key_id` names (ARN or bare id).
    fn find(&self, key_id: &str) -> Result<&Key, KmsError> {
        if key_id.is_empty() {
            return Err(KmsError::new(
                ErrorCode::Validation,
                "1 validation error detected: Value at 'keyId' failed to satisfy constraint: \
                 Member must have length greater than or equal to 1",
            ));
        }
        self.keys.find(key_id).ok_or_else(|| {
            KmsError::new(
                ErrorCode::NotFound,
                format!("Key '{key_id}' does not exist"),
            )
            .on_key(key_id)
        })
    }

    /// Verifies the Recipient's document, if there is one. A document
    /// that does not verify is an `AccessDeniedException` (see
    /// `recipient.rs` for why that name).
    fn attest(
        &self,
        op: Operation,
        key: &Key,
        caller: &str,
        recipient: Option<&Recipient>,
        now: SystemTime,
    ) -> Result<Option<Attested>, KmsError> {
        let Some(r) = recipient else {
            return Ok(None);
        };
        let algorithm = Some(r.key_encryption_algorithm.as_str());
        match self
            .recipients
            .verify(algorithm, &r.attestation_document, now)
        {
            Ok(a) => Ok(Some(a)),
            Err(RecipientError::Invalid(m)) => {
                Err(KmsError::new(ErrorCode::Validation, m).on_key(key.arn.as_str()))
            }
            Err(RecipientError::Untrusted(why)) => Err(denied(op, key, caller, false).because(why)),
        }
    }
}

/// Evaluates the key policy for this call.
fn authorize(
    op: Operation,
    key: &Key,
    caller: &str,
    context: &EncryptionContext,
    attested: Option<&Attested>,
) -> Result<(), KmsError> {
    let mut ctx = RequestContext::new();
    ctx.add_encryption_context(context);
    if let Some(a) = attested {
        ctx.add_attestation(&a.pcrs);
    }
    match key.policy.evaluate(op.action(), key.arn.as_str(), &ctx) {
        Decision::Allow => Ok(()),
        Decision::ExplicitDeny { statement } => Err(denied(op, key, caller, true)
            .because(format!("statement {statement} denies {}", op.action()))),
        Decision::ImplicitDeny { reasons } => {
            Err(denied(op, key, caller, false).because(reasons.join("; ")))
        }
    }
}

/// KMS's wording for a refusal by policy (as its users quote it:
/// aws/aws-nitro-enclaves-sdk-c #127, #157), naming action and key.
fn denied(op: Operation, key: &Key, caller: &str, explicit: bool) -> KmsError {
    let action = op.action();
    let arn = key.arn.as_str();
    let why = if explicit {
        "with an explicit deny in a resource-based policy".to_string()
    } else {
        format!("because no resource-based policy allows the {action} action")
    };
    let message =
        format!("User: {caller} is not authorized to perform: {action} on resource: {arn} {why}");
    KmsError::new(ErrorCode::AccessDenied, message).on_key(arn)
}

/// `KeySpec` or `NumberOfBytes`, exactly one, within KMS's bounds.
fn data_key_length(spec: Option<&str>, bytes: Option<u32>) -> Result<usize, KmsError> {
    let validation = |m: String| KmsError::new(ErrorCode::Validation, m);
    match (spec, bytes) {
        (Some("AES_256"), None) => Ok(32),
        (Some("AES_128"), None) => Ok(16),
        (Some(other), None) => Err(validation(format!(
            "1 validation error detected: Value '{other}' at 'keySpec' failed to satisfy \
             constraint: Member must satisfy enum value set: [AES_256, AES_128]"
        ))),
        (None, Some(n)) if (1..=MAX_DATA_KEY).contains(&n) => {
            usize::try_from(n).map_err(|_| internal("data key length"))
        }
        (None, Some(n)) => Err(validation(format!(
            "1 validation error detected: Value '{n}' at 'numberOfBytes' failed to satisfy \
             constraint: Member must have value between 1 and {MAX_DATA_KEY}"
        ))),
        _ => Err(validation(
            "Please specify either number of bytes or key spec.".into(),
        )),
    }
}

/// `EncryptionAlgorithm` of a Decrypt: only `SYMMETRIC_DEFAULT` fits the
/// stand-in's (symmetric) keys.
fn check_algorithm(algorithm: Option<&str>) -> Result<(), KmsError> {
    match algorithm {
        None | Some(SYMMETRIC_DEFAULT) => Ok(()),
        Some(a) if ASYMMETRIC_ALGORITHMS.contains(&a) => Err(KmsError::new(
            ErrorCode::Other("InvalidKeyUsageException".into()),
            format!("{a} is not a valid encryption algorithm for a symmetric key"),
        )),
        Some(a) => Err(KmsError::new(
            ErrorCode::Validation,
            format!(
                "1 validation error detected: Value '{a}' at 'encryptionAlgorithm' failed to \
                 satisfy constraint: Member must satisfy enum value set: [SYMMETRIC_DEFAULT, \
                 RSAES_OAEP_SHA_1, RSAES_OAEP_SHA_256, SM2PKE]"
            ),
        )),
    }
}

/// The Recipient's parameter checks, done with the other parameters.
fn check_recipient(recipient: Option<&Recipient>) -> Result<(), KmsError> {
    let Some(r) = recipient else {
        return Ok(());
    };
    check_parameter(Some(&r.key_encryption_algorithm), &r.attestation_document).map_err(|e| {
        let (RecipientError::Invalid(m) | RecipientError::Untrusted(m)) = e;
        KmsError::new(ErrorCode::Validation, m)
    })
}

/// `DryRun`: every check passed, so KMS says it would have succeeded.
fn dry_run(flag: Option<bool>) -> Result<(), KmsError> {
    if flag == Some(true) {
        return Err(KmsError::new(
            ErrorCode::Other("DryRunOperationException".into()),
            "The request would have succeeded, but the DryRun option is set.",
        ));
    }
    Ok(())
}

/// `Plaintext`, or with a Recipient `CiphertextForRecipient` instead (the
/// plaintext then never appears in the answer).
fn answer(
    attested: Option<&Attested>,
    plaintext: Zeroizing<Vec<u8>>,
) -> Result<(Option<SecretBytes>, Option<Vec<u8>>), KmsError> {
    match attested {
        None => Ok((Some(SecretBytes::new(plaintext.to_vec())), None)),
        Some(a) => {
            let sealed = nacre_kms::envelope::seal(&a.public_key, &plaintext).map_err(|e| {
                KmsError::new(
                    ErrorCode::Validation,
                    format!(
                        "the public_key of the attestation document in Recipient is not a \
                         usable RSA public key (DER SubjectPublicKeyInfo): {e}"
                    ),
                )
            })?;
            Ok((None, Some(sealed)))
        }
    }
}

fn invalid_ciphertext(why: &dyn std::fmt::Display) -> KmsError {
    // The client learns which input to look at; the log says which check.
    KmsError::new(
        ErrorCode::InvalidCiphertext,
        "The CiphertextBlob is not one this KMS made, was changed, or was made with \
         another EncryptionContext",
    )
    .because(why.to_string())
}

fn internal(why: &str) -> KmsError {
    KmsError::new(ErrorCode::KmsInternal, "KMS stand-in internal error").because(why)
}
