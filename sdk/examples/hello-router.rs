//! The smallest routed guest: `GET /hello/:name`.

use nacre_sdk::router::{Params, Router};
use nacre_sdk::wstd::http::{Body, Error, Request, Response};

async fn hello(_req: Request<Body>, p: Params) -> Result<Response<Body>, Error> {
    let name = p.get("name").unwrap_or("you");
    Ok(Response::new(
        format!("hello, {name}, from an enclave\n").into(),
    ))
}

async fn handle(req: Request<Body>) -> Result<Response<Body>, Error> {
    Router::new().get("/hello/:name", hello).handle(req).await
}

nacre_sdk::serve!(handle);
