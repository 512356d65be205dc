//! `fetch`: `GET /?url=https://host/path` fetches that URL from inside the
//! enclave and answers with the origin's status and body.
//!
//! The request goes out through the runtime's egress: checked against this
//! guest's `allow` list in the enclave, tunnelled through the host proxy,
//! with TLS from inside the enclave, so the host never sees the URL's path,
//! the headers or the body. When the request fails the answer is 502 with
//! the wasi:http error code, e.g. `HttpRequestDenied` for a host that is
//! not allowed.

use wstd::http::error::ErrorCode;
use wstd::http::{Body, Client, Error, Request, Response, StatusCode};

#[wstd::http_server]
async fn main(request: Request<Body>) -> Result<Response<Body>, Error> {
    let query = request.uri().query().unwrap_or_default();
    let Some(url) = form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "url")
        .map(|(_, v)| v.into_owned())
    else {
        return reply(
            StatusCode::BAD_REQUEST,
            "give the URL to fetch as ?url=https://host/path\n".into(),
        );
    };
    let outbound = match Request::get(url.as_str()).body(Body::empty()) {
        Ok(r) => r,
        Err(e) => return reply(StatusCode::BAD_REQUEST, format!("url {url:?}: {e}\n")),
    };
    match Client::new().send(outbound).await {
        Ok(response) => {
            let status = response.status();
            let mut body = response.into_body();
            match body.contents().await {
                Ok(bytes) => {
                    let mut r = Response::new(Body::from(bytes.to_vec()));
                    *r.status_mut() = status;
                    Ok(r)
                }
                Err(e) => reply(
                    StatusCode::BAD_GATEWAY,
                    format!("fetch {url}: body: {e:#}\n"),
                ),
            }
        }
        Err(e) => {
            // The wasi:http error code, when there is one, names the cause
            // precisely (denied, refused, TLS certificate, timeout...).
            let code = e
                .downcast_ref::<ErrorCode>()
                .map(|c| format!("{c:?}"))
                .unwrap_or_else(|| format!("{e:#}"));
            reply(StatusCode::BAD_GATEWAY, format!("fetch {url}: {code}\n"))
        }
    }
}

fn reply(status: StatusCode, text: String) -> Result<Response<Body>, Error> {
    let mut r = Response::new(Body::from(text));
    *r.status_mut() = status;
    Ok(r)
}
