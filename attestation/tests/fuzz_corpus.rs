//! Replays the corpus `cargo fuzz run parse_verify` found: every input must
//! come back as Ok or a named error, never a panic.

use nacre_attestation::{CoseSign1, Document, GuestBinding, RuntimeBinding, Verifier};

#[test]
fn fuzz_corpus_replays_without_panics() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/parse_verify");
    let entries: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    assert!(
        entries.len() >= 100,
        "the corpus in {} is missing or tiny",
        dir.display()
    );
    // The signed parts of the real documents the fuzzer was seeded with.
    let seeds = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/nitro");
    let signed: Vec<CoseSign1> = ["doc_1.bin", "doc_2.bin", "doc_7.bin", "doc_15.bin"]
        .iter()
        .map(|n| CoseSign1::from_slice(&std::fs::read(seeds.join(n)).unwrap()).unwrap())
        .collect();
    for path in entries {
        let data = std::fs::read(&path).unwrap();
        if Verifier::aws().at(1_695_899_307).verify(&data).is_ok() {
            // Only the unsigned envelope (tag, unprotected header) may
            // differ from a real document; nothing signed was altered.
            let cose = CoseSign1::from_slice(&data).unwrap();
            assert!(
                signed.contains(&cose),
                "{} verified with altered signed content",
                path.display()
            );
        }
        let _ = Document::from_payload(&data);
        let _ = RuntimeBinding::from_bytes(&data);
        let _ = GuestBinding::from_bytes(&data);
    }
}
