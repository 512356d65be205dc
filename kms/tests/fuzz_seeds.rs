//! The fuzz target's inputs as a test: each seed in `fuzz/seeds` (KMS's
//! own `CiphertextForRecipient` sample, a `Decrypt` and a
//! `GenerateDataKey` answer carrying it, an error body), every truncation
//! of each, and every one with one byte flipped, read as the enclave reads
//! KMS's answers (`nacre_kms::fuzzing::exercise`): each returns, none
//! panics. The corpus `cargo fuzz run kms_answers` grows is not kept in
//! the repository (docs/development.md).

#[test]
fn seeds_and_their_mutations_are_read_without_panics() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds");
    let seeds: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    assert_eq!(seeds.len(), 4, "the seeds in {}", dir.display());
    let mut inputs = 0;
    for seed in &seeds {
        for cut in 0..=seed.len() {
            nacre_kms::fuzzing::exercise(&seed[..cut]);
            inputs += 1;
        }
        for i in 0..seed.len() {
            let mut flipped = seed.clone();
            flipped[i] ^= 0x41;
            nacre_kms::fuzzing::exercise(&flipped);
            inputs += 1;
        }
    }
    assert!(inputs > 4000, "{inputs} inputs");
}
