//! What the raw-wasip2 test guests share.

use std::io::Write as _;

use wasip2::http::types::{Fields, OutgoingBody, OutgoingResponse, ResponseOutparam};

/// Answers with `status` and a plain-text body.
pub fn respond(out: ResponseOutparam, status: u16, text: &str) {
    let resp = OutgoingResponse::new(Fields::new());
    let _ = resp.set_status_code(status);
    let Ok(body) = resp.body() else { return };
    ResponseOutparam::set(out, Ok(resp));
    if let Ok(mut w) = body.write() {
        let _ = w.write_all(text.as_bytes());
        let _ = w.flush();
    }
    let _ = OutgoingBody::finish(body, None);
}
