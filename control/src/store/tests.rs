//! The store channel's tests: the client and the server in exchange.
//! [`garbage`] has what a client sends that [`StoreClient`] would not;
//! [`lying`] what a host answers that [`serve`] would not.

use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, duplex};
use tokio::task::JoinHandle;

use super::*;
use crate::v1::StoreRequest;
use crate::v1::store_request::Op;
use crate::v1::store_response::Result as Answer;
use crate::{Body, Frame, answer_handshake, hello, read_frame};

mod garbage;
mod lying;

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
