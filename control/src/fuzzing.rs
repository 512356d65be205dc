//! One entry for the fuzz target (`fuzz/`) and the test that replays its
//! corpus: any bytes, as what one side of the control link reads from the
//! other, through the same checks [`crate::read_frame`] makes, then
//! whatever the reader does with a frame.

use prost::Message;

use crate::{Body, Frame, encode_frame, frame_len, negotiate};

/// Reads `data` as a stream of frames until it ends or a frame is refused;
/// returns, never panics.
pub fn exercise(mut data: &[u8]) {
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
        // The runtime re-encodes what it forwards; that must not panic.
        let _ = encode_frame(&frame);
    }
}
