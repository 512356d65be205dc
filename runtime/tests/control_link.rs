//! The control link in process: the test is the host proxy, on a unix
//! socket, and records are made with the link's own tracing layer.

mod common;

use std::time::Duration;

use nacre_control::{Body, Frame};
use nacre_runtime::control;
use tokio::time::timeout;
use tracing_subscriber::prelude::*;

/// A record with a 16 MiB field (a guest's error string, say) reaches the
/// host as one bounded frame, the records after it follow, and the link
/// stays up: no reconnection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_record_becomes_a_bounded_frame_and_the_link_stays_up() {
    let path = common::temp_dir("control").join("control.sock");
    let listener = tokio::net::UnixListener::bind(&path).expect("bind");
    let addr = format!("unix:{}", path.display()).parse().expect("address");
    let (layer, link) = control::channel(addr);
    let dropped = link.dropped_total();
    let logger = tracing::Dispatch::new(tracing_subscriber::registry().with(layer));
    tokio::spawn(link.run());
    let (mut host, _) = timeout(Duration::from_secs(10), listener.accept())
        .await
        .expect("the runtime connects")
        .expect("accept");
    nacre_control::handshake(&mut host, nacre_control::hello("test host"))
        .await
        .expect("handshake");

    let huge = "\u{7f}".repeat(16 << 20);
    tracing::dispatcher::with_default(&logger, || {
        tracing::warn!(error = ?huge, "guest request failed: {huge:?}");
        tracing::info!("the record after the huge one");
    });
    let mut frames = Vec::new();
    loop {
        let frame = timeout(Duration::from_secs(5), nacre_control::read_frame(&mut host))
            .await
            .expect("a record within 5 s")
            .unwrap_or_else(|e| panic!("the link ended ({e}) after {frames:?}"));
        let Some(Body::Log(record)) = frame.body else {
            continue;
        };
        let last = record.message == "the record after the huge one";
        frames.push(record);
        if last {
            break;
        }
    }
    let huge_one = frames
        .iter()
        .find(|r| r.message.starts_with("guest request failed"))
        .expect("the huge record arrived");
    let size = Frame {
        body: Some(Body::Log(huge_one.clone())),
    };
    let size = nacre_control::encode_frame(&size).expect("encodes").len();
    assert!(size <= nacre_control::bounded::MAX_RECORD, "{size} bytes");
    assert!(huge_one.message.contains("… (truncated, "), "{size}");
    assert!(huge_one.fields["error"].contains("… (truncated, "));
    assert_eq!(dropped.load(std::sync::atomic::Ordering::Relaxed), 0);

    // The same link carries on: the runtime does not connect again.
    assert!(
        timeout(Duration::from_secs(2), listener.accept())
            .await
            .is_err(),
        "the runtime connected again: the huge record ended the link"
    );
    tracing::dispatcher::with_default(&logger, || tracing::info!("still here"));
    let frame = timeout(Duration::from_secs(5), nacre_control::read_frame(&mut host))
        .await
        .expect("a record within 5 s")
        .expect("the link is up");
    assert!(
        matches!(&frame.body, Some(Body::Log(r)) if r.message == "still here"),
        "{frame:?}"
    );
}
