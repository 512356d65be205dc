//! Verification: signature, chain, time and the caller's expectations.

use std::collections::BTreeMap;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::cose::CoseSign1;
use crate::document::{Document, MAX_DOCUMENT};
use crate::error::VerifyError;
use crate::{AWS_NITRO_ROOT_PEM, AWS_NITRO_ROOT_SHA256, chain};

/// What a verifier trusts and expects. Build one, then call
/// [`Verifier::verify`] for each document.
///
/// Keep the verifier (or a clone: clones share it) for later documents: it
/// remembers which certificate signatures it has already checked, so later
/// documents with the same chain cost one signature check instead of five.
///
/// ```no_run
/// use nacre_attestation::Verifier;
/// let bytes = std::fs::read("doc.bin").unwrap();
/// let verified = Verifier::aws()
///     .at(1_695_899_307)
///     .nonce(vec![0u8; 32])
///     .pcr(0, vec![0u8; 48])
///     .verify(&bytes)
///     .unwrap();
/// println!("{}", verified.document.module_id);
/// ```
#[derive(Debug, Clone)]
pub struct Verifier {
    root_der: Vec<u8>,
    at: Option<i64>,
    nonce: Option<Vec<u8>>,
    pcrs: BTreeMap<u32, Vec<u8>>,
    links: Arc<chain::LinkCache>,
}

/// A document whose every check passed. Only [`Verifier::verify`] makes
/// one, so holding it is proof of verification.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Verified {
    /// The decoded payload.
    pub document: Document,
    /// True when the chain ends in a root other than AWS's and the module
    /// id says `nacre-dev`: a document from Nacre's dev stand-in.
    pub dev: bool,
}

impl Verifier {
    /// Trusts only the pinned AWS Nitro root.
    pub fn aws() -> Verifier {
        Verifier::with_root_der(aws_root_der())
    }

    /// Trusts only this root certificate (DER).
    pub fn with_root_der(root_der: Vec<u8>) -> Verifier {
        Verifier {
            root_der,
            at: None,
            nonce: None,
            pcrs: BTreeMap::new(),
            links: Arc::default(),
        }
    }

    /// Trusts only the first certificate of this PEM file's text.
    pub fn with_root_pem(pem: &[u8]) -> Result<Verifier, VerifyError> {
        Ok(Verifier::with_root_der(pem_to_der(pem)?))
    }

    /// Checks certificate validity at this Unix time (default: now).
    pub fn at(mut self, unix_seconds: i64) -> Verifier {
        self.at = Some(unix_seconds);
        self
    }

    /// Requires this nonce.
    pub fn nonce(mut self, nonce: Vec<u8>) -> Verifier {
        self.nonce = Some(nonce);
        self
    }

    /// Requires PCR `index` to hold `value`.
    pub fn pcr(mut self, index: u32, value: Vec<u8>) -> Verifier {
        self.pcrs.insert(index, value);
        self
    }

    /// Runs every check on a raw document.
    pub fn verify(&self, bytes: &[u8]) -> Result<Verified, VerifyError> {
        if bytes.len() > MAX_DOCUMENT {
            return Err(VerifyError::TooLarge {
                what: "document",
                limit: MAX_DOCUMENT,
            });
        }
        let cose = CoseSign1::from_slice(bytes)?;
        cose.check_algorithm()?;
        let document = Document::from_payload(&cose.payload)?;
        let at = self.at.unwrap_or_else(now);
        let message = cose.to_be_signed();
        chain::verify(
            &self.root_der,
            &document.cabundle,
            &document.certificate,
            at,
            &self.links,
            chain::DocSignature {
                message: &message,
                signature: &cose.signature,
            },
        )?;

        if self
            .nonce
            .as_ref()
            .is_some_and(|n| document.nonce.as_ref() != Some(n))
        {
            return Err(VerifyError::NonceMismatch);
        }
        for (index, expected) in &self.pcrs {
            if document.pcrs.get(index) != Some(expected) {
                return Err(VerifyError::PcrMismatch { index: *index });
            }
        }
        let aws = hex::encode(Sha256::digest(&self.root_der)) == AWS_NITRO_ROOT_SHA256;
        let dev = !aws && document.module_id.starts_with("nacre-dev");
        Ok(Verified { document, dev })
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// DER of the AWS Nitro Enclaves root (G1) embedded in this crate.
pub fn aws_root_der() -> Vec<u8> {
    // The embedded PEM is fixed at build time and checked by a test.
    pem_to_der(AWS_NITRO_ROOT_PEM.as_bytes()).unwrap_or_default()
}

fn pem_to_der(pem: &[u8]) -> Result<Vec<u8>, VerifyError> {
    match x509_parser::pem::parse_x509_pem(pem) {
        Ok((_, p)) if p.label == "CERTIFICATE" => Ok(p.contents),
        Ok((_, p)) => Err(VerifyError::malformed(format!(
            "PEM block is {}, not CERTIFICATE",
            p.label
        ))),
        Err(e) => Err(VerifyError::malformed(format!(
            "not a PEM certificate: {e}"
        ))),
    }
}
