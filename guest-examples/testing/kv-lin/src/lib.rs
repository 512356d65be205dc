//! `kv-lin`: the key-value store's operations one request each, on the
//! bucket `lin`, for clients outside the runtime that record histories for
//! the linearizability checker (`tests/clients/kv_client.py`,
//! `tests/src/linearizable.rs`).
//!
//! - `POST /incr/:key`: adds 1; 200, body the new value (decimal).
//! - `POST /cas/:key?old=HEX&new=HEX`: stores `new` if the value is `old`
//!   (`old` empty or missing: if the key is absent); 200, body `true` or
//!   `false`. Values go hex-encoded so that any bytes survive the query.
//! - `PUT /k/:key` (body = value): 200.
//! - `GET /k/:key`: 200 with the value, or 404 `absent`.
//! - `DELETE /k/:key`: 200.
//!
//! A key is its path segment as sent (not percent-decoded). When the store
//! refuses, the answer says whether the operation may still have taken
//! effect, which is all a client needs to record it: 503 `unknown: ...`
//! when the store's message says it "may or may not" have (a replicated
//! store that lost its leader mid-write), 409 `fail: ...` otherwise (it
//! definitely did not). 400 for a query that is not hex.

use nacre_sdk::kv::Store;
use nacre_sdk::router::{Params, Router, status};
use nacre_sdk::wstd::http::{Body, Error, Method, Request, Response, StatusCode};

/// The bucket every route works on.
const BUCKET: &str = "lin";

/// The answer to a store error: 503 if the operation may have been applied
/// all the same, 409 if it was not.
fn refused(e: nacre_sdk::kv::Error) -> Result<Response<Body>, Error> {
    let message = e.to_string();
    if message.contains("may or may not") {
        status(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("unknown: {message}"),
        )
    } else {
        status(StatusCode::CONFLICT, format!("fail: {message}"))
    }
}

/// Opens the bucket and runs `op` on `key`, mapping store errors.
fn with_store(
    p: &Params,
    op: impl FnOnce(&Store, &str) -> Result<Response<Body>, nacre_sdk::kv::Error>,
) -> Result<Response<Body>, Error> {
    let key = p.get("key").unwrap_or_default();
    match Store::open(BUCKET).and_then(|store| op(&store, key)) {
        Ok(response) => Ok(response),
        Err(e) => refused(e),
    }
}

/// A 200 answer.
fn ok(body: impl Into<Body>) -> Response<Body> {
    Response::new(body.into())
}

async fn incr(_req: Request<Body>, p: Params) -> Result<Response<Body>, Error> {
    with_store(&p, |store, key| {
        Ok(ok(store.increment(key, 1)?.to_string()))
    })
}

/// Bytes from lower- or upper-case hex.
fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The query parameter `name`, raw.
fn query<'a>(req: &'a Request<Body>, name: &str) -> Option<&'a str> {
    req.uri()
        .query()?
        .split('&')
        .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

async fn cas(req: Request<Body>, p: Params) -> Result<Response<Body>, Error> {
    let old = match query(&req, "old").unwrap_or_default() {
        "" => None,
        hex => match unhex(hex) {
            Some(bytes) => Some(bytes),
            None => return status(StatusCode::BAD_REQUEST, "old is not hex\n".into()),
        },
    };
    let Some(new) = query(&req, "new").and_then(unhex) else {
        return status(
            StatusCode::BAD_REQUEST,
            "new is missing or not hex\n".into(),
        );
    };
    with_store(&p, |store, key| {
        let swapped = store.compare_and_swap(key, old.as_deref(), &new)?;
        Ok(ok(swapped.to_string()))
    })
}

async fn put(mut req: Request<Body>, p: Params) -> Result<Response<Body>, Error> {
    let value = req.body_mut().contents().await?.to_vec();
    with_store(&p, |store, key| {
        store.set(key, &value)?;
        Ok(ok("stored"))
    })
}

async fn get(_req: Request<Body>, p: Params) -> Result<Response<Body>, Error> {
    with_store(&p, |store, key| {
        Ok(match store.get(key)? {
            Some(value) => ok(value),
            None => {
                let mut absent = ok("absent");
                *absent.status_mut() = StatusCode::NOT_FOUND;
                absent
            }
        })
    })
}

async fn delete(_req: Request<Body>, p: Params) -> Result<Response<Body>, Error> {
    with_store(&p, |store, key| {
        store.delete(key)?;
        Ok(ok("deleted"))
    })
}

async fn handle(req: Request<Body>) -> Result<Response<Body>, Error> {
    Router::new()
        .post("/incr/:key", incr)
        .post("/cas/:key", cas)
        .route(Method::PUT, "/k/:key", put)
        .get("/k/:key", get)
        .route(Method::DELETE, "/k/:key", delete)
        .handle(req)
        .await
}

nacre_sdk::serve!(handle);
