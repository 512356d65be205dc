//! A component as someone else would write it for `wasmtime serve`: only
//! the `wasip2` crate's raw bindings, no Nacre or wstd code. Nacre must run
//! it unchanged.

use std::io::Write as _;

use wasip2::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

wasip2::http::proxy::export!(RawHello);

struct RawHello;

impl wasip2::exports::http::incoming_handler::Guest for RawHello {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_default();
        let headers = Fields::new();
        let _ = headers.append("content-type", b"text/plain");
        let resp = OutgoingResponse::new(headers);
        let Ok(body) = resp.body() else { return };
        ResponseOutparam::set(response_out, Ok(resp));
        if let Ok(mut out) = body.write() {
            let _ = writeln!(out, "raw wasip2 component says hello; path={path}");
            let _ = out.flush();
        }
        let _ = OutgoingBody::finish(body, None);
    }
}
