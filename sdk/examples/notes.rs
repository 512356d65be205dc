//! Notes kept in the guest's key-value store, with the code hash and the
//! shared state on show: `POST /notes/:id` (body = text), `GET /notes/:id`,
//! `GET /notes`, `GET /whoami`.

use nacre_sdk::kv::Store;
use nacre_sdk::router::{Params, Router, status};
use nacre_sdk::wstd::http::{Body, Error, Request, Response, StatusCode};
use nacre_sdk::{attestation, state};

#[derive(serde::Serialize, serde::Deserialize)]
struct Note {
    text: String,
}

async fn put(mut req: Request<Body>, p: Params) -> Result<Response<Body>, Error> {
    let text = String::from_utf8_lossy(req.body_mut().contents().await?).into_owned();
    let id = p.get("id").unwrap_or_default();
    Store::open("notes")?.set_json(id, &Note { text })?;
    status(StatusCode::CREATED, format!("saved {id}\n"))
}

async fn get(_req: Request<Body>, p: Params) -> Result<Response<Body>, Error> {
    let id = p.get("id").unwrap_or_default();
    match Store::open("notes")?.get_json::<Note>(id)? {
        Some(n) => Ok(Response::new(n.text.into())),
        None => status(StatusCode::NOT_FOUND, format!("no note {id}\n")),
    }
}

async fn list(_req: Request<Body>, _p: Params) -> Result<Response<Body>, Error> {
    Ok(Response::new(
        Store::open("notes")?.keys()?.join("\n").into(),
    ))
}

async fn whoami(_req: Request<Body>, _p: Params) -> Result<Response<Body>, Error> {
    let hash: String = attestation::code_hash()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let shared = state::get()?.map(|s| s.len()).unwrap_or(0);
    Ok(Response::new(
        format!("code sha256 {hash}; shared state {shared} bytes\n").into(),
    ))
}

async fn handle(req: Request<Body>) -> Result<Response<Body>, Error> {
    Router::new()
        .post("/notes/:id", put)
        .get("/notes/:id", get)
        .get("/notes", list)
        .get("/whoami", whoami)
        .handle(req)
        .await
}

nacre_sdk::serve!(handle);
