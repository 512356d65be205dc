//! The real Nitro documents in testdata/nitro: accepted at their
//! own time, rejected with the named reason otherwise.

use std::path::PathBuf;

use ciborium::Value;
use nacre_attestation::{
    AWS_NITRO_ROOT_SHA256, CoseSign1, Document, Verifier, VerifyError, validity,
};
use sha2::{Digest, Sha256};

const DOCS: [&str; 4] = ["doc_1.bin", "doc_2.bin", "doc_7.bin", "doc_15.bin"];

fn testdata() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata/nitro")
}

fn load(name: &str) -> Vec<u8> {
    let path = testdata().join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The document, its payload and its leaf validity.
fn open(name: &str) -> (Vec<u8>, Document, i64, i64) {
    let bytes = load(name);
    let cose = CoseSign1::from_slice(&bytes).unwrap();
    let doc = Document::from_payload(&cose.payload).unwrap();
    let (nb, na) = validity(&doc.certificate).unwrap();
    (bytes, doc, nb, na)
}

#[test]
fn embedded_root_is_the_pinned_one_and_matches_testdata() {
    let der = nacre_attestation::aws_root_der();
    assert_eq!(hex::encode(Sha256::digest(&der)), AWS_NITRO_ROOT_SHA256);
    let from_testdata = Verifier::with_root_pem(&load("aws_nitro_root_g1.pem")).unwrap();
    let (bytes, doc, ..) = open("doc_7.bin");
    assert!(
        from_testdata
            .at(doc.timestamp as i64 / 1000)
            .verify(&bytes)
            .is_ok()
    );
}

#[test]
fn each_document_verifies_at_its_own_time() {
    for name in DOCS {
        let (bytes, doc, nb, na) = open(name);
        let at = doc.timestamp as i64 / 1000;
        assert!(nb <= at && at <= na, "{name}: timestamp outside its leaf");
        for t in [nb, at, na] {
            let v = Verifier::aws()
                .at(t)
                .verify(&bytes)
                .unwrap_or_else(|e| panic!("{name} at {t}: {e}"));
            assert!(!v.dev, "{name} is not a dev document");
            assert_eq!(v.document, doc);
        }
    }
}

#[test]
fn outside_the_leaf_validity_fails_with_the_named_reason() {
    for name in DOCS {
        let (bytes, _, nb, na) = open(name);
        match Verifier::aws().at(na + 1).verify(&bytes) {
            Err(VerifyError::CertExpired { not_after, .. }) => assert_eq!(not_after, na, "{name}"),
            other => panic!("{name} one second after notAfter: {other:?}"),
        }
        match Verifier::aws().at(nb - 1).verify(&bytes) {
            Err(VerifyError::CertNotYetValid { not_before, .. }) => {
                assert_eq!(not_before, nb, "{name}")
            }
            other => panic!("{name} one second before notBefore: {other:?}"),
        }
        // Leaf certificates live three hours: at the wall clock they are
        // long expired.
        assert!(
            matches!(
                Verifier::aws().verify(&bytes),
                Err(VerifyError::CertExpired { .. })
            ),
            "{name} at the wall clock"
        );
    }
}

#[test]
fn a_reused_verifier_still_checks_time_and_expectations() {
    for name in DOCS {
        let (bytes, doc, nb, na) = open(name);
        let warm = Verifier::aws().at(doc.timestamp as i64 / 1000);
        warm.verify(&bytes).unwrap();
        // Clones share the cache of checked signatures, never the checks.
        assert!(matches!(
            warm.clone().at(na + 1).verify(&bytes),
            Err(VerifyError::CertExpired { .. })
        ));
        assert!(matches!(
            warm.clone().at(nb - 1).verify(&bytes),
            Err(VerifyError::CertNotYetValid { .. })
        ));
        assert!(matches!(
            warm.clone().nonce(vec![1; 20]).verify(&bytes),
            Err(VerifyError::NonceMismatch)
        ));
        warm.verify(&bytes).unwrap();
    }
}

#[test]
fn any_flipped_byte_fails() {
    for name in DOCS {
        let (bytes, doc, ..) = open(name);
        let verifier = Verifier::aws().at(doc.timestamp as i64 / 1000);
        // Verified once first, so every link is in the verifier's cache: a
        // tampered copy must fail all the same.
        verifier.verify(&bytes).unwrap();
        // Every single byte: headers, payload, certificates, signature.
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x01;
            assert!(
                verifier.verify(&b).is_err(),
                "{name}: flipping byte {i} went unnoticed"
            );
        }
        // Specifically inside the leaf certificate and the cabundle.
        for der in std::iter::once(&doc.certificate).chain(&doc.cabundle) {
            let at = find(&bytes, der);
            for off in [0, der.len() / 3, der.len() / 2, der.len() - 1] {
                let mut b = bytes.clone();
                b[at + off] ^= 0x80;
                assert!(
                    verifier.verify(&b).is_err(),
                    "{name}: certificate byte {} went unnoticed",
                    at + off
                );
            }
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len())
        .position(|w| w == needle)
        .expect("certificate inside document")
}

#[test]
fn a_foreign_root_fails() {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let foreign = params.self_signed(&key).unwrap();
    for name in DOCS {
        let (bytes, doc, ..) = open(name);
        let r = Verifier::with_root_der(foreign.der().to_vec())
            .at(doc.timestamp as i64 / 1000)
            .verify(&bytes);
        assert!(
            matches!(r, Err(VerifyError::ChainUntrusted { .. })),
            "{name}: {r:?}"
        );
    }
}

#[test]
fn a_changed_algorithm_header_fails() {
    let (bytes, doc, ..) = open("doc_7.bin");
    let mut cose = CoseSign1::from_slice(&bytes).unwrap();
    let mut header = Vec::new();
    ciborium::into_writer(
        &Value::Map(vec![(
            Value::Integer(1.into()),
            Value::Integer((-7).into()),
        )]),
        &mut header,
    )
    .unwrap();
    cose.protected = header;
    let r = Verifier::aws()
        .at(doc.timestamp as i64 / 1000)
        .verify(&cose.to_vec());
    assert!(
        matches!(r, Err(VerifyError::Algorithm { ref found }) if found == "-7"),
        "{r:?}"
    );
}

#[test]
fn tagged_and_untagged_both_parse() {
    let (bytes, doc, ..) = open("doc_15.bin");
    let mut tagged = vec![0xd2]; // tag 18
    tagged.extend_from_slice(&bytes);
    assert!(
        Verifier::aws()
            .at(doc.timestamp as i64 / 1000)
            .verify(&tagged)
            .is_ok()
    );
    let mut trailing = bytes.clone();
    trailing.push(0);
    assert!(matches!(
        Verifier::aws()
            .at(doc.timestamp as i64 / 1000)
            .verify(&trailing),
        Err(VerifyError::Malformed { .. })
    ));
}

#[test]
fn nonce_and_pcr_expectations() {
    let (bytes, doc, ..) = open("doc_7.bin");
    let at = doc.timestamp as i64 / 1000;
    let nonce = doc.nonce.clone().expect("doc_7 has a nonce");
    assert_eq!(nonce.len(), 32);
    let pcr0 = doc.pcrs[&0].clone();
    assert!(
        Verifier::aws()
            .at(at)
            .nonce(nonce.clone())
            .pcr(0, pcr0.clone())
            .verify(&bytes)
            .is_ok()
    );

    let mut wrong = nonce.clone();
    wrong[0] ^= 1;
    assert_eq!(
        Verifier::aws()
            .at(at)
            .nonce(wrong)
            .verify(&bytes)
            .unwrap_err(),
        VerifyError::NonceMismatch
    );
    let mut bad_pcr = pcr0;
    bad_pcr[5] ^= 1;
    assert_eq!(
        Verifier::aws()
            .at(at)
            .pcr(0, bad_pcr)
            .verify(&bytes)
            .unwrap_err(),
        VerifyError::PcrMismatch { index: 0 }
    );
    assert_eq!(
        Verifier::aws()
            .at(at)
            .pcr(31, vec![0; 48])
            .verify(&bytes)
            .unwrap_err(),
        VerifyError::PcrMismatch { index: 31 },
        "an expected PCR the document lacks"
    );

    // doc_1 has no nonce: expecting one fails.
    let (b1, d1, ..) = open("doc_1.bin");
    assert!(d1.nonce.is_none());
    assert_eq!(
        Verifier::aws()
            .at(d1.timestamp as i64 / 1000)
            .nonce(vec![1; 20])
            .verify(&b1)
            .unwrap_err(),
        VerifyError::NonceMismatch
    );
}

#[test]
fn oversized_input_is_refused_before_decoding() {
    let big = vec![0u8; nacre_attestation::MAX_DOCUMENT + 1];
    assert!(matches!(
        Verifier::aws().verify(&big),
        Err(VerifyError::TooLarge {
            what: "document",
            ..
        })
    ));
}
