//! `kv-counter`: `POST /incr` adds one to `count` atomically and returns
//! the new value; `GET /` returns the current value (`0` when unset). The
//! count lives in the guest's key-value store, so it survives requests and
//! redeploys; another guest name has its own count.

use nacre_sdk::kv::Store;
use nacre_sdk::router::{Params, Router};
use nacre_sdk::wstd::http::{Body, Error, Request, Response};

async fn incr(_req: Request<Body>, _p: Params) -> Result<Response<Body>, Error> {
    let n = Store::open("default")?.increment("count", 1)?;
    Ok(Response::new(format!("{n}\n").into()))
}

async fn current(_req: Request<Body>, _p: Params) -> Result<Response<Body>, Error> {
    let n = Store::open("default")?
        .get("count")?
        .map(|v| String::from_utf8_lossy(&v).into_owned())
        .unwrap_or_else(|| "0".into());
    Ok(Response::new(format!("{n}\n").into()))
}

async fn handle(req: Request<Body>) -> Result<Response<Body>, Error> {
    Router::new()
        .post("/incr", incr)
        .get("/", current)
        .handle(req)
        .await
}

nacre_sdk::serve!(handle);
