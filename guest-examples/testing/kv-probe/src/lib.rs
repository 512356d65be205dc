//! A guest poking at the key-value store's edges, for the runtime's tests.
//!
//! - `PUT /k/:bucket/:key` (body = value), `GET /k/:bucket/:key`
//! - `POST /fill/:n`: sets `n` keys of 100 bytes, stopping at the first
//!   error; answers how many were stored and the error.
//! - `GET /big-key`: tries a 4 KiB key.
//! - `PUT /state` (body = value), `GET /state`: this guest's state slot.
//! - `POST /state-bomb/:mib/:times`: hands `state.put` a list of `mib` MiB
//!   of fresh, untouched memory `times` times; answers what came back.
//! - `POST /kv-bomb/:mib/:times`: the same with a key-value `set`.
//! - `POST /cas/:bucket/:key` (body = new value, header `x-old` = the value
//!   expected, none: the key must be absent): compare-and-swap; answers
//!   `swapped` (200) or `unchanged` (409).

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

async fn cas(mut req: Request<Body>, p: Params) -> Result<Response<Body>, Error> {
    let old = req.headers().get("x-old").map(|v| v.as_bytes().to_vec());
    let new = req.body_mut().contents().await?.to_vec();
    let store = match Store::open(p.get("bucket").unwrap_or_default()) {
        Ok(s) => s,
        Err(e) => return refused(e),
    };
    match store.compare_and_swap(p.get("key").unwrap_or_default(), old.as_deref(), &new) {
        Ok(true) => Ok(Response::new("swapped\n".into())),
        Ok(false) => status(StatusCode::CONFLICT, "unchanged\n".into()),
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

async fn state_put(mut req: Request<Body>, _p: Params) -> Result<Response<Body>, Error> {
    let value = req.body_mut().contents().await?.to_vec();
    match nacre_sdk::state::put(&value) {
        Ok(()) => Ok(Response::new("stored\n".into())),
        Err(e) => refused(e),
    }
}

async fn state_get(_req: Request<Body>, _p: Params) -> Result<Response<Body>, Error> {
    match nacre_sdk::state::get() {
        Ok(Some(v)) => Ok(Response::new(v.into())),
        Ok(None) => status(StatusCode::NOT_FOUND, "no state\n".into()),
        Err(e) => refused(e),
    }
}

/// `mib` MiB of fresh pages from memory.grow: zero and untouched, so the
/// list costs this guest nothing resident; only a host that copies it pays.
fn fresh(mib: usize) -> Option<&'static [u8]> {
    let len = mib << 20;
    let first = core::arch::wasm32::memory_grow(0, len.div_ceil(65536));
    if first == usize::MAX {
        return None;
    }
    // SAFETY: the pages were just added to linear memory, are zeroed and
    // belong to no allocation; nothing else ever uses them.
    Some(unsafe { std::slice::from_raw_parts((first * 65536) as *const u8, len) })
}

/// Calls `f` with a `mib` MiB list `times` times; answers the distinct
/// results.
fn bomb(p: &Params, f: impl Fn(&[u8]) -> String) -> Result<Response<Body>, Error> {
    let mib: usize = p.get("mib").and_then(|n| n.parse().ok()).unwrap_or(1);
    let times: usize = p.get("times").and_then(|n| n.parse().ok()).unwrap_or(1);
    let Some(list) = fresh(mib) else {
        return status(
            StatusCode::INSUFFICIENT_STORAGE,
            "memory.grow refused\n".into(),
        );
    };
    let mut answers: Vec<String> = (0..times).map(|_| f(list)).collect();
    answers.dedup();
    Ok(Response::new(format!("{}\n", answers.join(",")).into()))
}

async fn state_bomb(_req: Request<Body>, p: Params) -> Result<Response<Body>, Error> {
    bomb(&p, |list| match nacre_sdk::state::put(list) {
        Ok(()) => "stored".to_string(),
        Err(e) => e.to_string(),
    })
}

async fn kv_bomb(_req: Request<Body>, p: Params) -> Result<Response<Body>, Error> {
    let store = Store::open("bomb")?;
    bomb(&p, |list| match store.set("k", list) {
        Ok(()) => "stored".to_string(),
        Err(e) => e.to_string(),
    })
}

async fn handle(req: Request<Body>) -> Result<Response<Body>, Error> {
    Router::new()
        .route(nacre_sdk::wstd::http::Method::PUT, "/k/:bucket/:key", put)
        .get("/k/:bucket/:key", get)
        .post("/fill/:n", fill)
        .post("/cas/:bucket/:key", cas)
        .get("/big-key", big_key)
        .route(nacre_sdk::wstd::http::Method::PUT, "/state", state_put)
        .get("/state", state_get)
        .post("/state-bomb/:mib/:times", state_bomb)
        .post("/kv-bomb/:mib/:times", kv_bomb)
        .handle(req)
        .await
}

nacre_sdk::serve!(handle);
