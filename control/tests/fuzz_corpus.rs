//! Replays the corpus `cargo fuzz run control_frames` found: every input
//! must return, never panic; and the seeds still read as frames:
//! `fuzz/seeds/all-kinds` (a Hello, a log record, a guest line, a drop
//! count), `store-requests` (a store Hello and each request) and
//! `store-answers` (the host's Hello and each answer); `store-put-new-request`
//! (a store Hello and a create-only put) and `store-put-new-answers` (the
//! host's Hello, `exists` and `done`).

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

/// The kinds of the frames in the seed `name`, each as its `Debug` names
/// it, the store's down to the request or answer.
async fn kinds(name: &str) -> Vec<String> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds");
    let all = std::fs::read(dir.join(name)).unwrap();
    let mut reader = all.as_slice();
    let mut kinds = Vec::new();
    while !reader.is_empty() {
        let frame = nacre_control::read_frame(&mut reader).await.unwrap();
        let shown = format!("{:?}", frame.body.unwrap());
        // `StoreRequest(StoreRequest { op: Some(Get(...`: the outer kind,
        // and for the store the op or result too.
        let words: Vec<&str> = shown
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .collect();
        kinds.push(match words.as_slice() {
            ["StoreRequest", _, "op", "Some", op, ..] => format!("StoreRequest/{op}"),
            ["StoreResponse", _, "result", "Some", r, ..] => format!("StoreResponse/{r}"),
            [kind, ..] => kind.to_string(),
            [] => String::new(),
        });
    }
    kinds
}

#[tokio::test]
async fn the_seeds_read_as_frames() {
    assert_eq!(
        kinds("all-kinds").await,
        ["Hello", "Log", "GuestOutput", "Dropped"]
    );
    assert_eq!(
        kinds("store-requests").await,
        [
            "Hello",
            "StoreRequest/Get",
            "StoreRequest/Put",
            "StoreRequest/List",
            "StoreRequest/Delete",
            "StoreRequest/Credentials"
        ]
    );
    assert_eq!(
        kinds("store-answers").await,
        [
            "Hello",
            "StoreResponse/Object",
            "StoreResponse/Absent",
            "StoreResponse/Names",
            "StoreResponse/Done",
            "StoreResponse/Failed",
            "StoreResponse/Credentials"
        ]
    );
    assert_eq!(
        kinds("store-put-new-request").await,
        ["Hello", "StoreRequest/Put"]
    );
    assert_eq!(
        kinds("store-put-new-answers").await,
        ["Hello", "StoreResponse/Exists", "StoreResponse/Done"]
    );
    // The put is a create-only one.
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds");
    let all = std::fs::read(dir.join("store-put-new-request")).unwrap();
    let mut reader = all.as_slice();
    nacre_control::read_frame(&mut reader).await.unwrap();
    let frame = nacre_control::read_frame(&mut reader).await.unwrap();
    let Some(nacre_control::Body::StoreRequest(nacre_control::v1::StoreRequest {
        op: Some(nacre_control::v1::store_request::Op::Put(put)),
    })) = frame.body
    else {
        panic!("{frame:?}");
    };
    assert!(put.if_absent, "{put:?}");
}
