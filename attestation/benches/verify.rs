//! Verifying one real Nitro document: parse, ES384 signature, chain of
//! four certificates, expectations. Target: median under 1 ms.

use criterion::{Criterion, criterion_group, criterion_main};
use nacre_attestation::{CoseSign1, Document, Verifier};

fn verify_real_document(c: &mut Criterion) {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/testdata/nitro/doc_7.bin"
    );
    let bytes = std::fs::read(path).expect("doc_7.bin from ../shared/testdata");
    let cose = CoseSign1::from_slice(&bytes).unwrap();
    let doc = Document::from_payload(&cose.payload).unwrap();
    let verifier = Verifier::aws()
        .at(doc.timestamp as i64 / 1000)
        .nonce(doc.nonce.clone().unwrap())
        .pcr(0, doc.pcrs[&0].clone());
    c.bench_function("verify doc_7 (real Nitro document)", |b| {
        b.iter(|| verifier.verify(std::hint::black_box(&bytes)).unwrap())
    });
}

criterion_group!(benches, verify_real_document);
criterion_main!(benches);
