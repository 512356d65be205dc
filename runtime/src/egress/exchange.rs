//! One request over an open connection: the URI in the form HTTP/1.1
//! wants, the wait for the response head, the guest's timed body, and the
//! connection task left to drive.

use std::pin::Pin;
use std::time::Duration;

use http::Uri;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use wasmtime_wasi_http::{Error, WasiBody};

use super::body::TimedBody;
use super::{Conn, Sender};

/// Rewrites the request's URI to origin-form (path and query only), as
/// HTTP/1.1 wants.
pub(super) fn to_origin_form(request: &mut http::Request<WasiBody>) -> Result<(), Error> {
    let origin_form = match request.uri().path_and_query() {
        Some(pq) if pq.as_str().starts_with('/') => Uri::from(pq.clone()),
        // A query with an empty path is still a request for "/".
        Some(pq) => format!("/{pq}")
            .parse()
            .map_err(|_| Error::HttpRequestUriInvalid)?,
        None => Uri::from_static("/"),
    };
    *request.uri_mut() = origin_form;
    Ok(())
}

/// Sends `request` and waits up to `first_byte` for the response head,
/// driving the connection meanwhile. Also says whether the connection
/// finished while it waited.
pub(super) async fn response_head(
    sender: Sender,
    request: http::Request<WasiBody>,
    conn: &mut Pin<Box<Conn>>,
    first_byte: Duration,
) -> Result<(http::Response<Incoming>, bool), Error> {
    let response = sender.send(request);
    tokio::pin!(response);
    let mut conn_done = false;
    let response = tokio::time::timeout(first_byte, async {
        // Drive the connection while waiting for the head.
        tokio::select! {
            r = &mut response => r,
            done = &mut *conn => {
                conn_done = true;
                match done {
                    Ok(()) => response.await,
                    Err(e) => Err(e),
                }
            }
        }
    })
    .await
    .map_err(|_| Error::ConnectionReadTimeout)?
    .map_err(Error::from)?;
    Ok((response, conn_done))
}

/// The response as the guest reads it: a body that fails when no frame
/// comes within `between`.
pub(super) fn timed(
    response: http::Response<Incoming>,
    between: Duration,
) -> http::Response<WasiBody> {
    response.map(|incoming| {
        TimedBody {
            inner: incoming,
            between,
            timer: Box::pin(tokio::time::sleep(between)),
            waiting: false,
        }
        .boxed_unsync()
    })
}

/// The connection task wasmtime-wasi-http drives while the guest holds
/// the response: the rest of `conn`, or nothing when it is `done` (a
/// finished future must not be polled again).
pub(super) fn connection_task(
    conn: Pin<Box<Conn>>,
    done: bool,
) -> Box<dyn Future<Output = Result<(), Error>> + Send> {
    let io = async move {
        if done {
            return Ok(());
        }
        conn.await.map_err(Error::from)
    };
    Box::new(io)
}
