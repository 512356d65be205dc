//! Small response helpers shared by the runtime's own endpoints.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use nacre_api::ErrorBody;

/// Response bodies as the server sends them: guests' bodies and the
/// runtime's own.
pub type ResponseBody = wasmtime_wasi_http::p2::body::HyperOutgoingBody;

/// A body from bytes already in memory.
pub fn full(bytes: impl Into<Bytes>) -> ResponseBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A response with a content type.
pub fn with_type(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<ResponseBody> {
    let mut r = Response::new(full(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

/// A JSON response.
pub fn json(status: StatusCode, value: &impl serde::Serialize) -> Response<ResponseBody> {
    match serde_json::to_vec(value) {
        Ok(v) => with_type(status, "application/json", v),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("cannot encode response: {e}"),
        ),
    }
}

/// `{"error": message}` ([`ErrorBody`]) with `status`: every error the
/// runtime itself answers looks like this.
pub fn error(status: StatusCode, message: &str) -> Response<ResponseBody> {
    with_type(
        status,
        "application/json",
        ErrorBody::new(message).to_bytes(),
    )
}
