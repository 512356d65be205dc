//! Replays the corpus `cargo fuzz run control_frames` found: every input
//! must return, never panic; and the seed (`fuzz/seeds/all-kinds`: a
//! Hello, a log record, a guest line, a drop count) still reads as frames.

#[test]
fn fuzz_corpus_replays_without_panics() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/control_frames");
    let entries: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    assert!(
        entries.len() >= 100,
        "the corpus in {} is missing or tiny",
        dir.display()
    );
    for path in entries {
        nacre_control::fuzzing::exercise(&std::fs::read(&path).unwrap());
    }
}

#[tokio::test]
async fn the_seeds_read_as_frames() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds");
    let all = std::fs::read(dir.join("all-kinds")).unwrap();
    let mut reader = all.as_slice();
    let mut kinds = Vec::new();
    while !reader.is_empty() {
        let frame = nacre_control::read_frame(&mut reader).await.unwrap();
        kinds.push(
            format!("{:?}", frame.body.unwrap())
                .split('(')
                .next()
                .unwrap()
                .to_string(),
        );
    }
    assert_eq!(kinds, ["Hello", "Log", "GuestOutput", "Dropped"]);
}
