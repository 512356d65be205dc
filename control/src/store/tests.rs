use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, duplex};
use tokio::task::JoinHandle;

use super::*;
use crate::v1::store_request::Op;
use crate::v1::store_response::Result as Answer;
use crate::{Body, Channel, Frame, answer_handshake, hello, read_frame, write_frame};

fn name(s: &str) -> ObjectName {
    s.parse().unwrap()
}

fn creds() -> AwsCredentials {
    AwsCredentials {
        access_key_id: "ASIAEXAMPLE".into(),
        secret_access_key: "wJalrXUtnFEMI/K7MDENG".into(),
        session_token: Some("IQoJb3JpZ2luX2VjEJr//////////wEaCXVz".into()),
        expires_unix: Some(1_900_000_000),
    }
}

/// The host's side of the Hellos, echoing the channel.
async fn host_hello(link: &mut DuplexStream) {
    answer_handshake(link, |theirs| {
        let mut ours = hello("test host");
        ours.channel = theirs.channel;
        ours
    })
    .await
    .unwrap();
}

/// A client and a task serving `store` on the other end.
async fn pair(
    store: Arc<MemoryStore>,
) -> (
    StoreClient<DuplexStream>,
    JoinHandle<Result<(), StoreError>>,
) {
    let (a, mut b) = duplex(1 << 16);
    let server = tokio::spawn(async move {
        host_hello(&mut b).await;
        serve(&mut b, &*store).await
    });
    let client = StoreClient::open(a, "test runtime").await.unwrap();
    (client, server)
}

/// A host that says Hello, reads one request (and a put's bytes), then
/// sends `answer` as it is.
async fn lying_host(answer: Vec<u8>) -> StoreClient<DuplexStream> {
    let (a, mut b) = duplex(1 << 20);
    tokio::spawn(async move {
        host_hello(&mut b).await;
        let Ok(frame) = read_frame(&mut b).await else {
            return;
        };
        if let Some(Body::StoreRequest(StoreRequest {
            op: Some(Op::Put(p)),
        })) = frame.body
        {
            let mut skip = vec![0; p.length as usize];
            let _ = b.read_exact(&mut skip).await;
        }
        let _ = b.write_all(&answer).await;
        // Hold the link open a moment, so the client reads the answer and
        // not only a close.
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    });
    StoreClient::open(a, "test runtime").await.unwrap()
}

use crate::v1::StoreRequest;

fn answer_frame(result: Answer) -> Vec<u8> {
    crate::encode_frame(&Frame {
        body: Some(Body::StoreResponse(v1::StoreResponse {
            result: Some(result),
        })),
    })
    .unwrap()
}

fn request_frame(op: Op) -> Vec<u8> {
    crate::encode_frame(&Frame {
        body: Some(Body::StoreRequest(StoreRequest { op: Some(op) })),
    })
    .unwrap()
}

fn protocol(e: &StoreError, words: &str) -> bool {
    matches!(e, StoreError::Protocol(s) if s.contains(words))
}

#[test]
fn names_are_checked() {
    for good in [
        "a",
        "snapshots/2026/01.sealed",
        "a-b_c.d",
        "...x/y..",
        "0",
        &"x".repeat(200),
    ] {
        let n: ObjectName = good.parse().unwrap_or_else(|e| panic!("{good}: {e}"));
        assert_eq!(n.as_str(), good);
        assert_eq!(n.to_string(), good);
        assert_eq!(ObjectName::try_from(good.to_string()).unwrap(), n);
    }
    for (bad, why) in [
        ("", "empty"),
        (&"x".repeat(201), "over 200"),
        ("A", "made of"),
        ("a b", "made of"),
        ("a\\b", "made of"),
        ("é", "made of"),
        ("/a", "starts or ends"),
        ("a/", "starts or ends"),
        ("a//b", "'//'"),
        ("a/./b", "segment"),
        ("..", "segment"),
        ("a/..", "segment"),
        (".", "segment"),
    ] {
        let e = bad.parse::<ObjectName>().unwrap_err();
        assert!(protocol(&e, why), "{bad:?}: {e}");
    }
    for good in ["", "a", "a/", "a/b", "a/.", "a/..x", "snapshots/2026-"] {
        check_prefix(good).unwrap_or_else(|e| panic!("{good:?}: {e}"));
    }
    for bad in [
        "/",
        "/a",
        "a//",
        "../",
        "a/../b",
        "./",
        "A",
        &"x".repeat(201),
    ] {
        assert!(check_prefix(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn credentials_debug_hides_the_secrets() {
    let shown = format!("{:?}", creds());
    assert!(shown.contains("ASIAEXAMPLE"), "{shown}");
    assert!(
        !shown.contains("wJalr") && !shown.contains("IQoJ"),
        "{shown}"
    );
    assert!(shown.contains("<redacted>") && shown.contains("1900000000"));
    // And through the wire form, which maps "none" to empty and 0.
    let plain = AwsCredentials {
        session_token: None,
        expires_unix: None,
        ..creds()
    };
    let wire = v1::AwsCredentials::from(plain.clone());
    assert_eq!((wire.session_token.as_str(), wire.expires_unix), ("", 0));
    assert_eq!(AwsCredentials::try_from(wire).unwrap(), plain);
}

#[tokio::test]
async fn get_put_list_delete_and_credentials_round_trip() {
    let store = Arc::new(MemoryStore::new());
    let (mut client, server) = pair(store.clone()).await;
    assert_eq!(client.host_software(), "test host");
    assert_eq!(client.version(), 1);

    let a = name("snapshots/a");
    assert_eq!(client.get(&a).await.unwrap(), None);
    client.put(&a, b"sealed a").await.unwrap();
    assert_eq!(client.get(&a).await.unwrap().unwrap(), b"sealed a");
    // Replacing, and an empty object.
    client.put(&a, b"sealed a, again").await.unwrap();
    assert_eq!(client.get(&a).await.unwrap().unwrap(), b"sealed a, again");
    client.put(&name("empty"), b"").await.unwrap();
    assert_eq!(client.get(&name("empty")).await.unwrap().unwrap(), b"");

    // Objects far larger than a frame, both ways.
    let big: Vec<u8> = (0..5 << 20).map(|i: u32| (i % 251) as u8).collect();
    client.put(&name("snapshots/big"), &big).await.unwrap();
    assert!(client.get(&name("snapshots/big")).await.unwrap().unwrap() == big);

    client.put(&name("snapshots-old/x"), b"x").await.unwrap();
    let names = |v: Vec<ObjectName>| v.into_iter().map(|n| n.into_string()).collect::<Vec<_>>();
    assert_eq!(
        names(client.list("snapshots/").await.unwrap()),
        ["snapshots/a", "snapshots/big"]
    );
    assert_eq!(
        names(client.list("snap").await.unwrap()),
        ["snapshots-old/x", "snapshots/a", "snapshots/big"]
    );
    assert_eq!(client.list("").await.unwrap().len(), 4);
    assert!(client.list("nothing/").await.unwrap().is_empty());

    client.delete(&a).await.unwrap();
    client.delete(&a).await.unwrap();
    assert_eq!(client.get(&a).await.unwrap(), None);

    // No credentials: the host's failure, and the link goes on.
    let e = client.credentials().await.unwrap_err();
    assert!(
        matches!(&e, StoreError::Failed(why) if why.contains("no AWS credentials")),
        "{e}"
    );
    store.set_credentials(Ok(creds()));
    assert_eq!(client.credentials().await.unwrap(), creds());

    drop(client);
    server.await.unwrap().unwrap();
}

#[tokio::test]
async fn create_only_puts_write_once() {
    let store = Arc::new(MemoryStore::new());
    let (mut client, server) = pair(store.clone()).await;

    // Written, then there: the second is told so and writes nothing.
    let a = name("snapshots/a");
    assert!(client.put_new(&a, b"first").await.unwrap());
    assert_eq!(client.get(&a).await.unwrap().unwrap(), b"first");
    assert!(!client.put_new(&a, b"second").await.unwrap());
    assert_eq!(client.get(&a).await.unwrap().unwrap(), b"first");
    assert_eq!(store.names(), std::slice::from_ref(&a));

    // After a plain put too; and an object larger than a frame, whose
    // bytes the host reads (and drops) to stay in step.
    let b = name("snapshots/b");
    client.put(&b, b"plain").await.unwrap();
    let big = vec![7u8; 200 << 10];
    assert!(!client.put_new(&b, &big).await.unwrap());
    assert_eq!(client.get(&b).await.unwrap().unwrap(), b"plain");
    assert_eq!(client.list("").await.unwrap(), [a.clone(), b.clone()]);

    // Gone, it can be made again; and a plain put still replaces.
    client.delete(&a).await.unwrap();
    assert!(client.put_new(&a, &big).await.unwrap());
    assert!(client.get(&a).await.unwrap().unwrap() == big);
    client.put(&a, b"replaced").await.unwrap();
    assert_eq!(client.get(&a).await.unwrap().unwrap(), b"replaced");

    // Over the limit: refused before anything is sent, the link fine.
    // (Zeroed pages the test never touches: no 512 MiB is used.)
    let huge = vec![0u8; (MAX_OBJECT + 1) as usize];
    let e = client.put_new(&name("huge"), &huge).await.unwrap_err();
    assert!(protocol(&e, "over the 536870912-byte limit"), "{e}");
    drop(huge);
    assert!(!client.put_new(&b, b"x").await.unwrap());
    drop(client);
    server.await.unwrap().unwrap();
}

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
async fn a_bounded_get_refuses_a_longer_object_unread() {
    let store = Arc::new(MemoryStore::new());
    let (mut client, _server) = pair(store.clone()).await;
    let a = name("snapshots/a");
    client.put(&a, &[1; 100]).await.unwrap();
    assert_eq!(
        client.get_at_most(&a, 100).await.unwrap().unwrap().len(),
        100
    );
    assert_eq!(
        client
            .get_at_most(&a, u64::MAX)
            .await
            .unwrap()
            .unwrap()
            .len(),
        100
    );
    assert_eq!(client.get_at_most(&name("none"), 0).await.unwrap(), None);
    let e = client.get_at_most(&a, 99).await.unwrap_err();
    assert!(
        protocol(
            &e,
            "snapshots/a: the host's object is 100 bytes, over the 99-byte limit"
        ),
        "{e}"
    );
    // The link is out of step (the bytes are unread): not used again.
    let e = client.get(&a).await.unwrap_err();
    assert!(protocol(&e, "failed earlier"), "{e}");

    // Exactly the answer's frame is read, none of the object's bytes.
    let object: Vec<u8> = (0..10).collect();
    let mut wire = answer_frame(Answer::Object(v1::StoreObject { length: 10 }));
    wire.extend(&object);
    let mut client = StoreClient::ready(
        tokio::io::join(wire.as_slice(), tokio::io::sink()),
        1,
        String::new(),
    );
    let e = client.get_at_most(&a, 9).await.unwrap_err();
    assert!(protocol(&e, "10 bytes, over the 9-byte limit"), "{e}");
    let (unread, _) = client.into_link().into_inner();
    assert_eq!(unread, object);
    // At the limit it is read, all of it and no more.
    let mut client = StoreClient::ready(
        tokio::io::join(wire.as_slice(), tokio::io::sink()),
        1,
        String::new(),
    );
    assert_eq!(client.get_at_most(&a, 10).await.unwrap().unwrap(), object);
    assert!(client.into_link().into_inner().0.is_empty());

    // Past MAX_OBJECT whatever the caller allows.
    let over = answer_frame(Answer::Object(v1::StoreObject {
        length: MAX_OBJECT + 1,
    }));
    let mut c = lying_host(over).await;
    let e = c.get_at_most(&a, u64::MAX).await.unwrap_err();
    assert!(protocol(&e, "over the 536870912-byte limit"), "{e}");
}

#[tokio::test]
async fn lists_span_frames_and_are_bounded() {
    // 10,000 names of 200 bytes: about 2 MB of names, in 31 frames.
    let store = Arc::new(MemoryStore::new());
    for i in 0..MAX_NAMES {
        let n = format!("{i:05}/{}", "x".repeat(194));
        store.put(&name(&n), Vec::new()).await.unwrap();
    }
    let (mut client, _server) = pair(store.clone()).await;
    let all = client.list("").await.unwrap();
    assert_eq!(all.len(), MAX_NAMES);
    assert!(all.windows(2).all(|w| w[0] < w[1]));

    // One more and the host says the list is truncated: the caller's
    // failure to handle, and the link goes on.
    store.put(&name("zzz"), Vec::new()).await.unwrap();
    let e = client.list("").await.unwrap_err();
    assert!(
        matches!(&e, StoreError::Failed(why) if why.contains("narrower prefix")),
        "{e}"
    );
    assert_eq!(client.list("zz").await.unwrap(), [name("zzz")]);

    let frames = names_frames(store.names(), "");
    assert!(frames.len() > 1);
    for f in &frames {
        assert!(crate::encode_frame(f).is_ok());
    }
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

#[tokio::test]
async fn a_lying_host_is_caught() {
    let over = answer_frame(Answer::Object(v1::StoreObject {
        length: MAX_OBJECT + 1,
    }));
    let mut c = lying_host(over).await;
    let e = c.get(&name("a")).await.unwrap_err();
    assert!(protocol(&e, "over the 536870912-byte limit"), "{e}");
    // The link is not used again.
    let e = c.get(&name("a")).await.unwrap_err();
    assert!(protocol(&e, "failed earlier"), "{e}");

    // An object cut short.
    let mut cut = answer_frame(Answer::Object(v1::StoreObject { length: 100 }));
    cut.extend([0u8; 10]);
    let mut c = lying_host(cut).await;
    let e = c.get(&name("a")).await.unwrap_err();
    assert!(matches!(e, StoreError::Frame(FrameError::Truncated)), "{e}");

    // The wrong kind of answer, or of frame.
    let mut c = lying_host(answer_frame(Answer::Done(v1::StoreDone {}))).await;
    let e = c.get(&name("a")).await.unwrap_err();
    assert!(protocol(&e, "answered a get with done"), "{e}");
    let mut c = lying_host(answer_frame(Answer::Absent(v1::StoreAbsent {}))).await;
    let e = c.put(&name("a"), b"data").await.unwrap_err();
    assert!(protocol(&e, "answered a put with absent"), "{e}");
    // `exists` answers a create-only put only.
    let mut c = lying_host(answer_frame(Answer::Exists(v1::StoreExists {}))).await;
    let e = c.put(&name("a"), b"data").await.unwrap_err();
    assert!(protocol(&e, "answered a put with exists"), "{e}");
    let e = c.put_new(&name("a"), b"data").await.unwrap_err();
    assert!(protocol(&e, "failed earlier"), "{e}");
    let mut c = lying_host(answer_frame(Answer::Exists(v1::StoreExists {}))).await;
    let e = c.get(&name("a")).await.unwrap_err();
    assert!(protocol(&e, "answered a get with exists"), "{e}");
    let mut c = lying_host(answer_frame(Answer::Absent(v1::StoreAbsent {}))).await;
    let e = c.put_new(&name("a"), b"data").await.unwrap_err();
    assert!(
        protocol(&e, "answered a create-only put with absent"),
        "{e}"
    );
    let mut c = lying_host(request_frame(Op::Credentials(v1::CredentialsGet {}))).await;
    let e = c.credentials().await.unwrap_err();
    assert!(protocol(&e, "store request frame"), "{e}");

    // Names: too many, bad, outside the prefix, out of order, repeated,
    // an empty part that says more follow.
    let names = |names: Vec<String>, more| {
        answer_frame(Answer::Names(v1::StoreNames {
            names,
            truncated: false,
            more,
        }))
    };
    let mut too_many = Vec::new();
    for part in 0..11 {
        let part = (0..1000).map(|i| format!("{part:02}{i:04}")).collect();
        too_many.extend(names(part, true));
    }
    for (wire, words) in [
        (too_many, "more than 10000 names"),
        (names(vec!["../x".into()], false), "bad name"),
        (names(vec!["b/x".into()], false), "for the prefix"),
        (
            names(vec!["a/2".into(), "a/1".into()], false),
            "out of order",
        ),
        (
            names(vec!["a/1".into(), "a/1".into()], false),
            "out of order",
        ),
        (names(Vec::new(), true), "empty part"),
    ] {
        let mut c = lying_host(wire).await;
        let prefix = if words == "more than 10000 names" {
            ""
        } else {
            "a/"
        };
        let e = c.list(prefix).await.unwrap_err();
        assert!(protocol(&e, words), "{words}: {e}");
    }

    // Credentials that are not visible ASCII (they go into headers).
    let mut bad = v1::AwsCredentials::from(creds());
    bad.session_token = "token\r\nX-Injected: 1".into();
    let mut c = lying_host(answer_frame(Answer::Credentials(bad))).await;
    let e = c.credentials().await.unwrap_err();
    assert!(protocol(&e, "session token"), "{e}");
    let mut empty = v1::AwsCredentials::from(creds());
    empty.access_key_id.clear();
    let mut c = lying_host(answer_frame(Answer::Credentials(empty))).await;
    assert!(protocol(
        &c.credentials().await.unwrap_err(),
        "access key id"
    ));

    // A failure's words are cleaned and bounded.
    let why = format!("disk full\n\x1b[2K{}", "x".repeat(10_000));
    let mut c = lying_host(answer_frame(Answer::Failed(v1::StoreFailed { why }))).await;
    let StoreError::Failed(why) = c.get(&name("a")).await.unwrap_err() else {
        panic!("not a failure");
    };
    assert!(why.starts_with("disk full\\n\\u{1b}[2K"), "{why:.40}");
    assert!(why.len() <= MAX_WHY + crate::bounded::NOTE, "{}", why.len());

    // Frames that go on and on instead of an answer.
    let mut c = lying_host([0, 0, 0, 2, 0x78, 0x01].repeat(20)).await;
    let e = c.delete(&name("a")).await.unwrap_err();
    assert!(protocol(&e, "unknown kinds"), "{e}");
}

#[tokio::test]
async fn a_host_that_does_not_serve_the_store_is_named() {
    // An older host proxy: its Hello says nothing of channels.
    let (a, mut b) = duplex(1 << 16);
    tokio::spawn(async move {
        let _ = crate::handshake(&mut b, hello("old host")).await;
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    });
    let e = StoreClient::open(a, "test runtime").await.unwrap_err();
    assert!(protocol(&e, "upgrade nacre-host-proxy"), "{e}");

    // Garbage for a Hello.
    let (a, mut b) = duplex(1 << 16);
    tokio::spawn(async move {
        let _ = b.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
    });
    assert!(matches!(
        StoreClient::open(a, "test runtime").await,
        Err(StoreError::Frame(_))
    ));

    // The runtime's Hello names the store channel.
    let (a, mut b) = duplex(1 << 16);
    tokio::spawn(async move {
        let _ = StoreClient::open(a, "test runtime").await;
    });
    let f = read_frame(&mut b).await.unwrap();
    let Some(Body::Hello(h)) = f.body else {
        panic!("{f:?}")
    };
    assert_eq!(h.channel(), Channel::Store);
    write_frame(&mut b, &Frame { body: None }).await.unwrap();
}
