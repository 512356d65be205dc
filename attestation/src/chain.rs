//! The certificate chain: pinned root → `cabundle` → leaf.
//!
//! Checked by hand with x509-parser and aws-lc-rs rather than a
//! path-building library: real Nitro intermediates and leaves lack key
//! identifiers that such libraries insist on, and the chain here is given in
//! order anyway.

use std::collections::HashSet;
use std::sync::{Mutex, OnceLock};

use aws_lc_rs::signature::{ECDSA_P384_SHA384_ASN1, ECDSA_P384_SHA384_FIXED, UnparsedPublicKey};
use sha2::{Digest, Sha256};
use x509_parser::certificate::X509Certificate;
use x509_parser::oid_registry::OID_SIG_ECDSA_WITH_SHA384;
use x509_parser::prelude::FromDer;
use x509_parser::x509::X509Name;

use crate::error::VerifyError;

fn parse(der: &[u8]) -> Result<X509Certificate<'_>, VerifyError> {
    match X509Certificate::from_der(der) {
        Ok(([], cert)) => Ok(cert),
        Ok(_) => Err(VerifyError::malformed("certificate has trailing bytes")),
        Err(e) => Err(VerifyError::malformed(format!(
            "certificate is not X.509 DER: {e}"
        ))),
    }
}

/// `(notBefore, notAfter)` of a DER certificate, Unix seconds.
pub fn validity(der: &[u8]) -> Result<(i64, i64), VerifyError> {
    let cert = parse(der)?;
    let v = cert.validity();
    Ok((v.not_before.timestamp(), v.not_after.timestamp()))
}

/// The uncompressed P-384 point of a certificate's key.
fn p384_point<'a>(cert: &'a X509Certificate<'_>) -> Option<&'a [u8]> {
    let point: &[u8] = &cert.public_key().subject_public_key.data;
    (point.len() == 97 && point[0] == 0x04).then_some(point)
}

/// `(SHA-256 of the issuer's DER, SHA-256 of the subject's DER)`.
type LinkKey = ([u8; 32], [u8; 32]);

/// Certificate signatures already checked, as `(SHA-256 of the issuer's
/// DER, SHA-256 of the subject's DER)`.
///
/// A certificate's signature by a given issuer is a fact about those two
/// exact byte strings: it does not depend on the time or on any expectation,
/// so once checked it need not be checked again. Every other check (validity
/// at the check time, CA constraints, names, algorithm) still runs on every
/// document, and the document's own signature is never cached. Successive
/// documents from one enclave share their whole chain, and enclaves of one
/// region share all but the last links, so a client that keeps its
/// [`Verifier`](crate::Verifier) spends one ECDSA check per document instead
/// of five.
#[derive(Debug, Default)]
pub(crate) struct LinkCache {
    links: Mutex<HashSet<LinkKey>>,
}

impl LinkCache {
    /// Enough for every region's intermediates and many enclaves' leaves;
    /// past it the cache starts over rather than grow without bound.
    const CAPACITY: usize = 4096;

    fn contains(&self, link: &LinkKey) -> bool {
        self.links.lock().is_ok_and(|links| links.contains(link))
    }

    fn insert(&self, link: LinkKey) {
        if let Ok(mut links) = self.links.lock() {
            if links.len() >= Self::CAPACITY {
                links.clear();
            }
            links.insert(link);
        }
    }
}

/// The document's own COSE ES384 signature (`r || s`), made by the leaf.
pub(crate) struct DocSignature<'a> {
    /// The COSE Sig_structure.
    pub message: &'a [u8],
    /// The signature as received.
    pub signature: &'a [u8],
}

/// Checks the document's signature by `leaf_der`, and every link from
/// `root_der` (which `cabundle[0]` must equal) to `leaf_der` at Unix time
/// `at`. A bad document signature is reported as such before any chain
/// signature failure.
///
/// The steps, in this order: the pinned root, every certificate's
/// validity at `at`, the leaf's key, each link's structure, and only then
/// the signatures.
pub(crate) fn verify(
    root_der: &[u8],
    cabundle: &[Vec<u8>],
    leaf_der: &[u8],
    at: i64,
    cache: &LinkCache,
    doc: DocSignature<'_>,
) -> Result<(), VerifyError> {
    check_pinned_root(root_der, cabundle)?;
    let ders: Vec<&[u8]> = cabundle
        .iter()
        .map(Vec::as_slice)
        .chain(std::iter::once(leaf_der))
        .collect();
    let chain = ders
        .iter()
        .map(|der| parse(der))
        .collect::<Result<Vec<_>, _>>()?;
    for cert in &chain {
        check_validity(cert, at)?;
    }
    let n = chain.len();
    let leaf = &chain[n - 1];
    let mut pending = Vec::with_capacity(n);
    pending.push(Check {
        alg: &ECDSA_P384_SHA384_FIXED,
        point: p384_point(leaf).ok_or(VerifyError::Signature)?,
        message: doc.message,
        signature: doc.signature,
        link: None,
    });
    for i in 1..n {
        let (issuer, cert) = (&chain[i - 1], &chain[i]);
        // CA certificates below this one, not counting the leaf.
        let below = (n - 1 - i) as u32;
        check_link(issuer, cert, below)?;
        let link = (
            Sha256::digest(ders[i - 1]).into(),
            Sha256::digest(ders[i]).into(),
        );
        if cache.contains(&link) {
            continue;
        }
        pending.push(link_signature(issuer, cert, link)?);
    }
    // Every structural check passed; now the signatures, which are
    // independent of each other. The document's own comes first.
    settle_signatures(&pending, cache)
}

/// `cabundle[0]` must be the pinned root, byte for byte.
fn check_pinned_root(root_der: &[u8], cabundle: &[Vec<u8>]) -> Result<(), VerifyError> {
    if cabundle.first().map(Vec::as_slice) != Some(root_der) {
        return Err(VerifyError::ChainUntrusted {
            why: "the first cabundle certificate is not the pinned root".into(),
        });
    }
    Ok(())
}

/// `cert` must be valid at Unix time `at`: not before its `notBefore`, not
/// after its `notAfter`.
fn check_validity(cert: &X509Certificate<'_>, at: i64) -> Result<(), VerifyError> {
    let v = cert.validity();
    if at < v.not_before.timestamp() {
        return Err(VerifyError::CertNotYetValid {
            subject: cert.subject().to_string(),
            not_before: v.not_before.timestamp(),
        });
    }
    if at > v.not_after.timestamp() {
        return Err(VerifyError::CertExpired {
            subject: cert.subject().to_string(),
            not_after: v.not_after.timestamp(),
        });
    }
    Ok(())
}

/// The chain is not trusted, for the reason given.
fn untrusted(why: String) -> VerifyError {
    VerifyError::ChainUntrusted { why }
}

/// The structure of one link, everything but its signature: `issuer` is a
/// CA whose path length allows the `below` CA certificates under it (the
/// leaf not counted), it is the issuer `cert` names, and `cert` is signed
/// with ecdsa-with-SHA384. Checked on every document, cached link or not.
fn check_link(
    issuer: &X509Certificate<'_>,
    cert: &X509Certificate<'_>,
    below: u32,
) -> Result<(), VerifyError> {
    let constraints = issuer
        .basic_constraints()
        .map_err(|_| {
            untrusted(format!(
                "{} has malformed basic constraints",
                issuer.subject()
            ))
        })?
        .map(|b| b.value.clone());
    let Some(constraints) = constraints.filter(|b| b.ca) else {
        return Err(untrusted(format!(
            "{} is not a CA but issues {}",
            issuer.subject(),
            cert.subject()
        )));
    };
    if constraints
        .path_len_constraint
        .is_some_and(|max| below > max)
    {
        return Err(untrusted(format!(
            "{} allows a shorter chain",
            issuer.subject()
        )));
    }
    if cert.issuer() != issuer.subject() {
        return Err(untrusted(format!(
            "{} is not issued by {}",
            cert.subject(),
            issuer.subject()
        )));
    }
    if cert.signature_algorithm.algorithm != OID_SIG_ECDSA_WITH_SHA384 {
        return Err(untrusted(format!(
            "{} is not signed with ecdsa-with-SHA384",
            cert.subject()
        )));
    }
    Ok(())
}

/// The check of `issuer`'s signature on `cert`, to be made later with the
/// others; `issuer` must hold a P-384 key.
fn link_signature<'a>(
    issuer: &'a X509Certificate<'a>,
    cert: &'a X509Certificate<'a>,
    link: LinkKey,
) -> Result<Check<'a>, VerifyError> {
    let point = p384_point(issuer).ok_or_else(|| {
        untrusted(format!(
            "{} does not hold a P-384 public key",
            issuer.subject()
        ))
    })?;
    Ok(Check {
        alg: &ECDSA_P384_SHA384_ASN1,
        point,
        message: cert.tbs_certificate.as_ref(),
        signature: &cert.signature_value.data,
        link: Some((link, cert.subject())),
    })
}

/// Checks every pending signature, then reports: the document's own
/// (`pending[0]`) first, then each link's in chain order. Only links whose
/// signature verified are cached, and only once the document's has.
fn settle_signatures(pending: &[Check<'_>], cache: &LinkCache) -> Result<(), VerifyError> {
    let results = check_signatures(pending);
    if results.first() != Some(&true) {
        return Err(VerifyError::Signature);
    }
    for (check, ok) in pending.iter().zip(results).skip(1) {
        let Some((link, subject)) = &check.link else {
            continue;
        };
        if !ok {
            return Err(VerifyError::ChainUntrusted {
                why: format!("the signature on {subject} does not verify"),
            });
        }
        cache.insert(*link);
    }
    Ok(())
}

/// One signature still to check: the document's, or a certificate's (with
/// its cache key and subject).
struct Check<'a> {
    alg: &'static aws_lc_rs::signature::EcdsaVerificationAlgorithm,
    point: &'a [u8],
    message: &'a [u8],
    signature: &'a [u8],
    link: Option<(LinkKey, &'a X509Name<'a>)>,
}

impl Check<'_> {
    fn verifies(&self) -> bool {
        UnparsedPublicKey::new(self.alg, self.point)
            .verify(self.message, self.signature)
            .is_ok()
    }
}

/// Checks each signature, part of them on a second core when there is
/// one: a cold document is five P-384 verifications of about 0.2 ms each,
/// and splitting them is what keeps a first verification under a
/// millisecond. A warm verifier (links cached) has only the document's.
fn check_signatures(checks: &[Check<'_>]) -> Vec<bool> {
    static CORES: OnceLock<usize> = OnceLock::new();
    let cores = *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    if checks.len() < 2 || cores < 2 {
        return checks.iter().map(Check::verifies).collect();
    }
    // The spawned thread starts late: give it the smaller share.
    let (first, second) = checks.split_at(checks.len() / 2);
    std::thread::scope(|s| {
        // No thread to be had (resource limits): check everything here.
        let Ok(other) = std::thread::Builder::new()
            .spawn_scoped(s, || first.iter().map(Check::verifies).collect::<Vec<_>>())
        else {
            return checks.iter().map(Check::verifies).collect();
        };
        let mine: Vec<bool> = second.iter().map(Check::verifies).collect();
        // A thread that died proves nothing: fail closed.
        let mut all = other.join().unwrap_or_else(|_| vec![false; first.len()]);
        all.extend(mine);
        all
    })
}
