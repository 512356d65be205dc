//! `hello`: the smallest Nacre guest, written with `wstd`.
//!
//! `GET /` answers a greeting; `GET /NAME` greets NAME.

use wstd::http::{Body, Error, Request, Response};

#[wstd::http_server]
async fn main(request: Request<Body>) -> Result<Response<Body>, Error> {
    let name = request.uri().path().trim_start_matches('/');
    let greeting = if name.is_empty() {
        "Hello from a Nacre enclave!\n".to_string()
    } else {
        format!("Hello, {name}, from a Nacre enclave!\n")
    };
    Ok(Response::new(greeting.into()))
}
