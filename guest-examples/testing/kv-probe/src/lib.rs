//! A guest poking at the key-value store's edges, for the runtime's tests.
//!
//! - `PUT /k/:bucket/:key` (body = value), `GET /k/:bucket/:key`
//! - `POST /fill/:n`: sets `n` keys of 100 bytes, stopping at the first
//!   error; answers how many were stored and the error.
//! - `GET /big-key`: tries a 4 KiB key.

use nacre_sdk::kv::Store;
use nacre_sdk::router::{Params, Router, status};
use nacre_sdk::wstd::http::{Body, Error, Request, Response, StatusCode};

fn refused(e: impl std::fmt::Display) -> Result<Response<Body>, Error> {
    status(StatusCode::INSUFFICIENT_STORAGE, format!("{e}\n"))
}

async fn put(mut req: Request<Body>, p: Params) -> Result<Response<Body>, Error> {
    let value = req.body_mut().contents().await?.to_vec();
    let store = match Store::open(p.get("bucket").unwrap_or_default()) {
        Ok(s) => s,
        Err(e) => return refused(e),
    };
    match store.set(p.get("key").unwrap_or_default(), &value) {
        Ok(()) => Ok(Response::new("stored\n".into())),
        Err(e) => refused(e),
    }
}

async fn get(_req: Request<Body>, p: Params) -> Result<Response<Body>, Error> {
    let store = match Store::open(p.get("bucket").unwrap_or_default()) {
        Ok(s) => s,
        Err(e) => return refused(e),
    };
    match store.get(p.get("key").unwrap_or_default()) {
        Ok(Some(v)) => Ok(Response::new(v.into())),
        Ok(None) => status(StatusCode::NOT_FOUND, "absent\n".into()),
        Err(e) => refused(e),
    }
}

async fn fill(_req: Request<Body>, p: Params) -> Result<Response<Body>, Error> {
    let n: usize = p.get("n").and_then(|n| n.parse().ok()).unwrap_or(0);
    let store = Store::open("fill")?;
    for i in 0..n {
        if let Err(e) = store.set(&format!("fill-{i}"), &[b'x'; 100]) {
            return refused(format!("stored {i}; {e}"));
        }
    }
    Ok(Response::new(format!("stored {n}\n").into()))
}

async fn big_key(_req: Request<Body>, _p: Params) -> Result<Response<Body>, Error> {
    match Store::open("default")?.set(&"k".repeat(4096), b"v") {
        Ok(()) => Ok(Response::new("stored\n".into())),
        Err(e) => refused(e),
    }
}

async fn handle(req: Request<Body>) -> Result<Response<Body>, Error> {
    Router::new()
        .route(nacre_sdk::wstd::http::Method::PUT, "/k/:bucket/:key", put)
        .get("/k/:bucket/:key", get)
        .post("/fill/:n", fill)
        .get("/big-key", big_key)
        .handle(req)
        .await
}

nacre_sdk::serve!(handle);
