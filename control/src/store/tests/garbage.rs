//! What a client sends that [`StoreClient`] would not: requests that skip
//! its checks, which [`serve`] answers and stays in step, and garbage,
//! which ends that link only.

use super::*;

#[tokio::test]
async fn the_server_answers_create_only_puts_in_step() {
    // From a client that skips the checks: a create-only put written,
    // one that finds the name taken, one with a bad name, then a plain
    // put. Each one's bytes are read, whatever the answer.
    let store = Arc::new(MemoryStore::new());
    let (mut a, mut b) = duplex(1 << 16);
    let served = store.clone();
    let server = tokio::spawn(async move { serve(&mut b, &*served).await });
    let put = |name: &str, data: &[u8], if_absent| {
        let mut wire = request_frame(Op::Put(v1::StorePut {
            name: name.into(),
            length: data.len() as u64,
            if_absent,
        }));
        wire.extend(data);
        wire
    };
    let mut wire = put("x", b"ab", true);
    wire.extend(put("x", b"cde", true));
    wire.extend(put("/bad", b"zz", true));
    wire.extend(put("x", b"f", false));
    a.write_all(&wire).await.unwrap();
    let mut answers = Vec::new();
    for _ in 0..4 {
        let f = read_frame(&mut a).await.unwrap();
        let Some(Body::StoreResponse(v1::StoreResponse {
            result: Some(answer),
        })) = f.body
        else {
            panic!("{f:?}");
        };
        answers.push(answer);
    }
    assert!(matches!(answers[0], Answer::Done(_)), "{answers:?}");
    assert!(matches!(answers[1], Answer::Exists(_)), "{answers:?}");
    assert!(
        matches!(&answers[2], Answer::Failed(f) if f.why.contains("not an object name")),
        "{answers:?}"
    );
    assert!(matches!(answers[3], Answer::Done(_)), "{answers:?}");
    assert_eq!(store.get(&name("x")).await.unwrap().unwrap(), b"f");
    assert_eq!(store.names(), [name("x")]);
    drop(a);
    server.await.unwrap().unwrap();
}

#[tokio::test]
async fn bad_names_and_prefixes_are_refused_on_both_sides() {
    // The client side: they cannot be made, or are refused before sending.
    let (mut client, _server) = pair(Arc::new(MemoryStore::new())).await;
    assert!("../etc/passwd".parse::<ObjectName>().is_err());
    let e = client.list("../").await.unwrap_err();
    assert!(protocol(&e, "not a name prefix"), "{e}");
    // …and the link is still good.
    assert!(client.list("").await.unwrap().is_empty());

    // The server side, from a client that skips the checks: each refused
    // with a failure answer, and the link goes on, even after a put
    // whose bytes had to be skipped.
    let store = Arc::new(MemoryStore::new());
    let (mut a, mut b) = duplex(1 << 16);
    let served = store.clone();
    let server = tokio::spawn(async move { serve(&mut b, &*served).await });
    let mut wire = Vec::new();
    wire.extend(request_frame(Op::Get(v1::StoreGet {
        name: "../../etc/passwd".into(),
    })));
    wire.extend(request_frame(Op::Put(v1::StorePut {
        name: "/abs".into(),
        length: 5,
        if_absent: false,
    })));
    wire.extend(b"EVIL!");
    wire.extend(request_frame(Op::Delete(v1::StoreDelete {
        name: "a//b".into(),
    })));
    wire.extend(request_frame(Op::List(v1::StoreList {
        prefix: "../".into(),
    })));
    wire.extend(request_frame(Op::Put(v1::StorePut {
        name: "fine".into(),
        length: 2,
        if_absent: false,
    })));
    wire.extend(b"ok");
    a.write_all(&wire).await.unwrap();
    for why in [
        "not an object name",
        "not an object name",
        "not an object name",
        "not a name prefix",
    ] {
        let f = read_frame(&mut a).await.unwrap();
        let Some(Body::StoreResponse(v1::StoreResponse {
            result: Some(Answer::Failed(failed)),
        })) = f.body
        else {
            panic!("{f:?}");
        };
        assert!(failed.why.contains(why), "{}", failed.why);
    }
    let f = read_frame(&mut a).await.unwrap();
    assert!(
        matches!(
            f.body,
            Some(Body::StoreResponse(v1::StoreResponse {
                result: Some(Answer::Done(_))
            }))
        ),
        "{f:?}"
    );
    assert_eq!(store.names(), [name("fine")]);
    drop(a);
    server.await.unwrap().unwrap();
}

/// Runs `serve` on `wire` as what a client sent; what it answered, and
/// how it ended.
async fn served(wire: Vec<u8>) -> (Vec<u8>, Result<(), StoreError>) {
    let (mut a, mut b) = duplex(1 << 20);
    let store = MemoryStore::new();
    let server = tokio::spawn(async move { serve(&mut b, &store).await });
    a.write_all(&wire).await.unwrap();
    a.shutdown().await.unwrap();
    let ended = tokio::time::timeout(std::time::Duration::from_secs(5), server)
        .await
        .expect("the server ends the link")
        .unwrap();
    let mut answered = Vec::new();
    a.read_to_end(&mut answered).await.unwrap();
    (answered, ended)
}

#[tokio::test]
async fn garbage_from_a_client_ends_that_link() {
    let log = crate::encode_frame(&Frame {
        body: Some(Body::Log(crate::LogRecord::default())),
    })
    .unwrap();
    let mut cut_put = request_frame(Op::Put(v1::StorePut {
        name: "a".into(),
        length: 100,
        if_absent: false,
    }));
    cut_put.extend([1u8; 10]);
    let huge_put = request_frame(Op::Put(v1::StorePut {
        name: "a".into(),
        length: MAX_OBJECT + 1,
        if_absent: false,
    }));
    let cases: [(&str, Vec<u8>, &str); 6] = [
        (
            "http",
            b"GET / HTTP/1.1\r\n\r\n".to_vec(),
            "over the 65536-byte limit",
        ),
        (
            "oversized",
            (1u32 << 31).to_be_bytes().to_vec(),
            "over the 65536-byte limit",
        ),
        (
            "not protobuf",
            vec![0, 0, 0, 3, 0xff, 0xff, 0xff],
            "not protobuf",
        ),
        ("cut frame", vec![0, 0, 0, 9, 1, 2], "truncated"),
        ("a log record", log, "a log record frame on a store link"),
        (
            "put over the limit",
            huge_put,
            "over the 536870912-byte limit",
        ),
    ];
    for (what, wire, words) in cases {
        let (answered, ended) = served(wire).await;
        let e = ended.expect_err(what);
        assert!(e.to_string().contains(words), "{what}: {e}");
        // The parting answer says why.
        let f = read_frame(&mut answered.as_slice()).await.unwrap();
        assert!(format!("{f:?}").contains(words), "{what}: {f:?}");
    }
    // A put cut short: the object is never stored.
    let (mut a, mut b) = duplex(1 << 16);
    let store = Arc::new(MemoryStore::new());
    let s = store.clone();
    let server = tokio::spawn(async move { serve(&mut b, &*s).await });
    a.write_all(&cut_put).await.unwrap();
    drop(a);
    let e = server.await.unwrap().unwrap_err();
    assert!(matches!(e, StoreError::Frame(FrameError::Truncated)), "{e}");
    assert!(store.names().is_empty());

    // Frames of kinds a later version adds are skipped; requests with
    // an op this build does not know get a failure.
    let mut wire = vec![0, 0, 0, 2, 0x78, 0x01];
    wire.extend([0, 0, 0, 4, 0x2a, 0x02, 0x78, 0x01]);
    let (answered, ended) = served(wire).await;
    ended.unwrap();
    let f = read_frame(&mut answered.as_slice()).await.unwrap();
    assert!(format!("{f:?}").contains("does not know"), "{f:?}");
}
