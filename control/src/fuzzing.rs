//! One entry for the fuzz target (`fuzz/`) and the test that replays its
//! corpus: any bytes, as what one side of the control link reads from the
//! other, through the same checks [`crate::read_frame`] makes, then
//! whatever the reader does with a frame; and the same bytes as either
//! side of a store link reads them ([`crate::store`]).

use prost::Message;

use crate::store::{self, MemoryStore, ObjectName, StoreClient};
use crate::{Body, Frame, encode_frame, frame_len, negotiate};

/// Reads `data` as a stream of frames until it ends or a frame is refused,
/// then as a store link's requests and as its answers; returns, never
/// panics.
pub fn exercise(data: &[u8]) {
    frames(data);
    store_link(data);
}

fn frames(mut data: &[u8]) {
    while let Some((head, rest)) = data.split_first_chunk::<4>() {
        let Ok(len) = frame_len(*head) else {
            return;
        };
        let Some((body, rest)) = rest.split_at_checked(len) else {
            return;
        };
        data = rest;
        let Ok(frame) = Frame::decode(body) else {
            return;
        };
        if let Some(Body::Hello(hello)) = &frame.body {
            let _ = negotiate(hello);
        }
        store::exercise_checks(&frame);
        // The runtime re-encodes what it forwards; that must not panic.
        let _ = encode_frame(&frame);
    }
}

/// `data` as what a runtime sent the host's store (after the Hellos),
/// then as what a host answered the runtime's requests: each kind once,
/// then a create-only put and a bounded get on a link of their own.
fn store_link(data: &[u8]) {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
    else {
        return;
    };
    rt.block_on(async {
        let mut host_side = tokio::io::join(data, tokio::io::sink());
        let _ = store::serve(&mut host_side, &MemoryStore::new()).await;

        let runtime_side = tokio::io::join(data, tokio::io::sink());
        let mut client = StoreClient::ready(runtime_side, 1, String::new());
        let Ok(name) = "fuzz/object".parse::<ObjectName>() else {
            return;
        };
        let _ = client.get(&name).await;
        let _ = client.list("fuzz/").await;
        let _ = client.credentials().await;
        let _ = client.put(&name, b"sealed").await;
        let _ = client.delete(&name).await;

        // The same answers to a create-only put and a bounded get, first.
        let runtime_side = tokio::io::join(data, tokio::io::sink());
        let mut client = StoreClient::ready(runtime_side, 1, String::new());
        let _ = client.put_new(&name, b"sealed").await;
        let _ = client.get_at_most(&name, 64).await;
    });
}
