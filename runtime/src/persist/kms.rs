//! The enclave's own calls to AWS KMS: TLS from inside the enclave through
//! the host proxy's `CONNECT`, signed with the parent's credentials, each
//! with a fresh RSA key pair whose public half rides in an attestation
//! document (`Recipient`). KMS answers with the key sealed to that public
//! key (`CiphertextForRecipient`, a CMS envelope), which only this
//! enclave can open, and only if the key policy's attestation conditions
//! name this image.
//!
//! The host relays ciphertext only: it cannot read the answer, and cannot
//! forge one (it would need KMS's certificate). The protocol itself
//! (JSON, SigV4, CMS) is `nacre-kms`'s, shared with the dev stand-in.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::Full;
use nacre_attestation::DocumentRequest;
use nacre_kms::call::{self, CallError, Endpoint};
use nacre_kms::envelope;
use nacre_kms::recipient::RecipientKey;
use nacre_kms::sigv4::Credentials;
use nacre_kms::wire::{
    DecryptRequest, DecryptResponse, EncryptionContext, GenerateDataKeyRequest,
    GenerateDataKeyResponse, KEY_ENCRYPTION_ALGORITHM, Operation, Recipient,
};
use nacre_transport::tunnel::Target;

use super::host::{HostError, HostStore};
use super::keys::Root;
use crate::attest::Attester;
use crate::egress::Outbound;

/// The subjects of the roots KMS's certificates chain to: Amazon Trust
/// Services, cross-signed by Starfield Services. KMS is trusted on these
/// alone (or on `--kms-ca`), not on every web root nor `--extra-ca`: a CA
/// that can issue for `kms.*.amazonaws.com` could otherwise answer for KMS
/// and choose the root the enclave seals under.
const KMS_ROOT_SUBJECTS: [&[u8]; 2] = [
    b"Amazon Root CA",
    b"Starfield Services Root Certificate Authority - G2",
];

/// The TLS client KMS is called with: the roots in `ca` (`--kms-ca`: a
/// VPC endpoint's private CA, the dev stand-in's), or else Amazon's roots
/// from the built-in web roots.
pub fn tls(ca: Option<&std::path::Path>) -> Result<rustls::ClientConfig, KmsError> {
    let local = |why: String| KmsError::Local(why);
    let mut roots = rustls::RootCertStore::empty();
    match ca {
        Some(path) => {
            let certs = nacre_transport::pem::certificates(path)
                .map_err(|e| local(format!("--kms-ca {}: {}", path.display(), e.why)))?;
            for cert in certs {
                roots.add(cert).map_err(|e| {
                    local(format!(
                        "--kms-ca {}: not a usable CA certificate: {e}",
                        path.display()
                    ))
                })?;
            }
        }
        None => roots.extend(
            webpki_roots::TLS_SERVER_ROOTS
                .iter()
                .filter(|anchor| {
                    KMS_ROOT_SUBJECTS
                        .iter()
                        .any(|name| anchor.subject.windows(name.len()).any(|w| w == *name))
                })
                .cloned(),
        ),
    }
    if roots.is_empty() {
        return Err(local("no root certificate to trust KMS with".into()));
    }
    Ok(
        rustls::ClientConfig::builder_with_provider(crate::tls::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| local(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// Bytes of a KMS answer at most.
const MAX_ANSWER: usize = 64 * 1024;
/// How long one KMS call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(15);
/// What the recipient document's `user_data` says: it is neither a
/// guest's nor a sync peer's, so no verifier of those takes it.
const USER_DATA: &[u8] = b"{\"nacre-kms-recipient\":1}";

/// Why a KMS call failed.
#[derive(Debug, thiserror::Error)]
pub enum KmsError {
    /// KMS could not be reached (the proxy, the tunnel, TLS, no answer).
    #[error("KMS at {endpoint} could not be reached: {why}")]
    Unreachable {
        /// The endpoint.
        endpoint: String,
        /// Why.
        why: String,
    },
    /// KMS answered with a refusal (the key policy, the encryption
    /// context, the credentials).
    #[error("KMS refused {operation}: {why}")]
    Refused {
        /// `Decrypt` or `GenerateDataKey`.
        operation: &'static str,
        /// KMS's error name and message.
        why: String,
    },
    /// The host gave no credentials.
    #[error("no AWS credentials from the host: {0}")]
    Credentials(HostError),
    /// This enclave could not make its part (key pair, document).
    #[error("{0}")]
    Local(String),
    /// KMS's answer did not open or was not what was asked.
    #[error("KMS's answer to {operation}: {why}")]
    Malformed {
        /// The operation.
        operation: &'static str,
        /// Why.
        why: String,
    },
}

/// The enclave's KMS client for one key.
pub struct Kms {
    outbound: Outbound,
    endpoint: Endpoint,
    key: String,
    attester: Arc<dyn Attester>,
    host: Arc<HostStore>,
}

fn op_name(op: Operation) -> &'static str {
    match op {
        Operation::Decrypt => "Decrypt",
        Operation::GenerateDataKey => "GenerateDataKey",
    }
}

impl Kms {
    /// Calls to `endpoint` about `key`, through `outbound` (made with
    /// [`tls`]), with documents
    /// from `attester` and credentials from `host`.
    pub fn new(
        outbound: Outbound,
        endpoint: Endpoint,
        key: String,
        attester: Arc<dyn Attester>,
        host: Arc<HostStore>,
    ) -> Kms {
        Kms {
            outbound,
            endpoint,
            key,
            attester,
            host,
        }
    }

    /// The endpoint, for messages.
    pub fn endpoint(&self) -> String {
        format!("https://{}", self.endpoint.authority())
    }

    /// A new root: KMS's `CiphertextBlob` (to keep) and the root itself.
    pub async fn generate_root(
        &self,
        context: &EncryptionContext,
    ) -> Result<(Vec<u8>, Root), KmsError> {
        let op = Operation::GenerateDataKey;
        let (key, recipient) = self.recipient().await?;
        let answer: GenerateDataKeyResponse = self
            .call(
                op,
                &GenerateDataKeyRequest {
                    key_id: self.key.clone(),
                    encryption_context: context.clone(),
                    key_spec: Some("AES_256".into()),
                    number_of_bytes: None,
                    recipient: Some(recipient),
                    grant_tokens: None,
                    dry_run: None,
                },
            )
            .await?;
        let root = open(op, &key, answer.ciphertext_for_recipient.as_deref())?;
        if answer.ciphertext_blob.is_empty() {
            return Err(malformed(op, "no CiphertextBlob"));
        }
        Ok((answer.ciphertext_blob, root))
    }

    /// The root `blob` wraps, if the key policy lets this enclave have it
    /// and `context` is the one it was wrapped with.
    pub async fn unwrap_root(
        &self,
        blob: &[u8],
        context: &EncryptionContext,
    ) -> Result<Root, KmsError> {
        let op = Operation::Decrypt;
        let (key, recipient) = self.recipient().await?;
        let answer: DecryptResponse = self
            .call(
                op,
                &DecryptRequest {
                    ciphertext_blob: blob.to_vec(),
                    encryption_context: context.clone(),
                    key_id: Some(self.key.clone()),
                    encryption_algorithm: None,
                    recipient: Some(recipient),
                    grant_tokens: None,
                    dry_run: None,
                },
            )
            .await?;
        open(op, &key, answer.ciphertext_for_recipient.as_deref())
    }

    /// A fresh key pair, and the document that carries its public half.
    async fn recipient(&self) -> Result<(RecipientKey, Recipient), KmsError> {
        let attester = self.attester.clone();
        let made = tokio::task::spawn_blocking(move || {
            let key = RecipientKey::generate().map_err(|e| e.to_string())?;
            let document = attester
                .attest(DocumentRequest {
                    public_key: Some(key.public_key_der()),
                    user_data: Some(USER_DATA.to_vec()),
                    ..DocumentRequest::default()
                })
                .map_err(|e| e.to_string())?;
            Ok::<_, String>((key, document))
        })
        .await
        .map_err(|e| KmsError::Local(format!("the key pair task failed: {e}")))?
        .map_err(|e| KmsError::Local(format!("the recipient key and document: {e}")))?;
        let (key, document) = made;
        Ok((
            key,
            Recipient {
                key_encryption_algorithm: KEY_ENCRYPTION_ALGORITHM.into(),
                attestation_document: document,
            },
        ))
    }

    async fn call<Q: serde::Serialize, A: serde::de::DeserializeOwned>(
        &self,
        op: Operation,
        body: &Q,
    ) -> Result<A, KmsError> {
        let creds = self
            .host
            .credentials()
            .await
            .map_err(KmsError::Credentials)?;
        let creds_kms = Credentials::new(
            creds.access_key_id.clone(),
            creds.secret_access_key.clone(),
            creds.session_token.clone(),
            // The host's number: an expiry past what a clock holds is
            // taken as none, never an overflow.
            creds
                .expires_unix
                .and_then(|s| SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(s))),
        );
        let request = call::request(&self.endpoint, op, body, &creds_kms, SystemTime::now())
            .map_err(|e| KmsError::Local(e.to_string()))?;
        let target = Target {
            host: self.endpoint.host().to_string(),
            port: self.endpoint.port(),
        };
        let (parts, body) = request.into_parts();
        let request = http::Request::from_parts(parts, Full::new(body));
        let answer = self
            .outbound
            .request(&target, request, MAX_ANSWER, CALL_TIMEOUT)
            .await
            .map_err(|e| KmsError::Unreachable {
                endpoint: self.endpoint(),
                why: e.to_string(),
            })?;
        let (parts, body): (_, Bytes) = answer.into_parts();
        call::response(parts.status, &body).map_err(|e| match e {
            CallError::Kms { .. } => KmsError::Refused {
                operation: op_name(op),
                why: e.to_string(),
            },
            other => malformed(op, &other.to_string()),
        })
    }
}

fn malformed(op: Operation, why: &str) -> KmsError {
    KmsError::Malformed {
        operation: op_name(op),
        why: why.to_string(),
    }
}

/// The root in `cms`, opened with `key`.
fn open(op: Operation, key: &RecipientKey, cms: Option<&[u8]>) -> Result<Root, KmsError> {
    let cms = cms.ok_or_else(|| malformed(op, "no CiphertextForRecipient"))?;
    let plain = envelope::open(cms, key).map_err(|e| malformed(op, &e.to_string()))?;
    Root::from_bytes(plain.expose()).ok_or_else(|| {
        malformed(
            op,
            &format!("a key of {} bytes, not 32", plain.expose().len()),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kms_is_trusted_on_amazons_roots_only() {
        let amazon = webpki_roots::TLS_SERVER_ROOTS
            .iter()
            .filter(|a| {
                KMS_ROOT_SUBJECTS
                    .iter()
                    .any(|n| a.subject.windows(n.len()).any(|w| w == *n))
            })
            .count();
        // Amazon Root CA 1 to 4 and Starfield Services G2.
        assert!((4..=6).contains(&amazon), "{amazon} roots");
        assert!(amazon < webpki_roots::TLS_SERVER_ROOTS.len() / 10);
        assert!(tls(None).is_ok());
        let e = tls(Some(std::path::Path::new("/nonexistent/kms-ca.pem")))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("--kms-ca /nonexistent/kms-ca.pem"), "{e}");
    }
}
