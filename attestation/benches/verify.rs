//! Verifying one real Nitro document: parse, ES384 signature, chain of
//! four certificates, expectations. Target: median under 1 ms.
//!
//! Two cases: "cold" builds a new verifier for every document, so all five
//! ECDSA checks run (split over two threads on a multi-core machine);
//! "warm" reuses one verifier, as a client checking an enclave repeatedly
//! does, so the chain's signatures come from its cache and only the
//! document's own signature is checked.

// criterion_group! defines a public function it gives no doc comment.
#![allow(missing_docs)]

use criterion::{Criterion, criterion_group, criterion_main};
use nacre_attestation::{CoseSign1, Document, Verifier, aws_root_der};

fn verify_real_document(c: &mut Criterion) {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/nitro/doc_7.bin");
    let bytes = std::fs::read(path).expect("doc_7.bin from attestation/testdata/nitro");
    let cose = CoseSign1::from_slice(&bytes).unwrap();
    let doc = Document::from_payload(&cose.payload).unwrap();
    let root = aws_root_der();
    let verifier = || {
        Verifier::with_root_der(root.clone())
            .at(doc.timestamp as i64 / 1000)
            .nonce(doc.nonce.clone().unwrap())
            .pcr(0, doc.pcrs[&0].clone())
    };
    c.bench_function("verify doc_7 cold (new verifier)", |b| {
        b.iter(|| verifier().verify(std::hint::black_box(&bytes)).unwrap())
    });
    let warm = verifier();
    c.bench_function("verify doc_7 warm (verifier reused)", |b| {
        b.iter(|| warm.verify(std::hint::black_box(&bytes)).unwrap())
    });
}

criterion_group!(benches, verify_real_document);
criterion_main!(benches);
