//! `floor`: `hello`'s answer from the thinnest component Rust can build,
//! for the benchmark's reference figures (BENCHMARKS.md, (a₀) and (d₀)).
//!
//! A component's cost per request grows with what it imports, since every
//! imported function is wired into each fresh instance. This one imports
//! only `wasi:http/types` and `wasi:io`: nothing here can panic or print,
//! so std's panic and stdio paths (and with them all of `wasi:cli`) are
//! left out by the linker. Calls that could fail end the answer instead.

use wasip2::exports::http::incoming_handler::Guest;
use wasip2::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

wasip2::http::proxy::export!(Floor);

/// What `hello` answers to `GET /`.
const GREETING: &[u8] = b"Hello from a Nacre enclave!\n";

struct Floor;

impl Guest for Floor {
    fn handle(_request: IncomingRequest, response_out: ResponseOutparam) {
        let response = OutgoingResponse::new(Fields::new());
        let Ok(body) = response.body() else { return };
        ResponseOutparam::set(response_out, Ok(response));
        if let Ok(out) = body.write() {
            let _ = out.blocking_write_and_flush(GREETING);
        }
        let _ = OutgoingBody::finish(body, None);
    }
}
