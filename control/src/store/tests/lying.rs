//! What a host answers that [`serve`] would not: [`StoreClient`] catches
//! each lie, and a host that does not serve the store is named.

use super::*;
use crate::{Channel, write_frame};

#[tokio::test]
async fn an_object_over_the_limit_ends_the_link() {
    let over = answer_frame(Answer::Object(v1::StoreObject {
        length: MAX_OBJECT + 1,
    }));
    let mut c = lying_host(over).await;
    let e = c.get(&name("a")).await.unwrap_err();
    assert!(protocol(&e, "over the 536870912-byte limit"), "{e}");
    // The link is not used again.
    let e = c.get(&name("a")).await.unwrap_err();
    assert!(protocol(&e, "failed earlier"), "{e}");
}

#[tokio::test]
async fn an_object_cut_short_is_caught() {
    let mut cut = answer_frame(Answer::Object(v1::StoreObject { length: 100 }));
    cut.extend([0u8; 10]);
    let mut c = lying_host(cut).await;
    let e = c.get(&name("a")).await.unwrap_err();
    assert!(matches!(e, StoreError::Frame(FrameError::Truncated)), "{e}");
}

#[tokio::test]
async fn the_wrong_kind_of_answer_or_frame_is_caught() {
    let mut c = lying_host(answer_frame(Answer::Done(v1::StoreDone {}))).await;
    let e = c.get(&name("a")).await.unwrap_err();
    assert!(protocol(&e, "answered a get with done"), "{e}");
    let mut c = lying_host(answer_frame(Answer::Absent(v1::StoreAbsent {}))).await;
    let e = c.put(&name("a"), b"data").await.unwrap_err();
    assert!(protocol(&e, "answered a put with absent"), "{e}");
    let mut c = lying_host(request_frame(Op::Credentials(v1::CredentialsGet {}))).await;
    let e = c.credentials().await.unwrap_err();
    assert!(protocol(&e, "store request frame"), "{e}");
}

#[tokio::test]
async fn exists_answers_a_create_only_put_only() {
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
}

#[tokio::test]
async fn bad_lists_of_names_are_caught() {
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
}

#[tokio::test]
async fn credentials_that_are_not_visible_ascii_are_caught() {
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
}

#[tokio::test]
async fn a_failures_words_are_cleaned_and_bounded() {
    let why = format!("disk full\n\x1b[2K{}", "x".repeat(10_000));
    let mut c = lying_host(answer_frame(Answer::Failed(v1::StoreFailed { why }))).await;
    let StoreError::Failed(why) = c.get(&name("a")).await.unwrap_err() else {
        panic!("not a failure");
    };
    assert!(why.starts_with("disk full\\n\\u{1b}[2K"), "{why:.40}");
    assert!(why.len() <= MAX_WHY + crate::bounded::NOTE, "{}", why.len());
}

#[tokio::test]
async fn frames_that_go_on_instead_of_an_answer_are_caught() {
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
