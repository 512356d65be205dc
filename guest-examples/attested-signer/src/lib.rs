//! `attested-signer`: an Ed25519 key that exists only inside the enclave,
//! and a document proving it.
//!
//! - `GET /public-key`: the key, 64 hex digits.
//! - `POST /sign` (body = message): the signature, 128 hex digits.
//! - `GET /attestation?nonce=HEX`: a Base64 attestation document whose
//!   `public_key` is that key, whose nonce is HEX, and whose user data
//!   names this component's SHA-256 (the runtime stamps it).
//!
//! The key is made on first use from the enclave's randomness and kept in
//! the guest's key-value store; it never leaves the enclave.

use std::time::Duration;

use base64::Engine as _;
use ed25519_dalek::{Signer, SigningKey};
use nacre_sdk::attestation;
use nacre_sdk::kv::Store;
use nacre_sdk::router::{Params, Router, status};
use nacre_sdk::wstd::http::{Body, Error, Request, Response, StatusCode};

const SEED: &str = "ed25519-seed";

/// The signing key, made exactly once: the first caller to take the
/// `keygen` ticket generates it, any concurrent caller waits for it.
async fn key() -> Result<SigningKey, Error> {
    let store = Store::open("default")?;
    if store.get(SEED)?.is_none() && store.increment("keygen", 1)? == 1 {
        let mut seed = [0u8; 32];
        nacre_sdk::wstd::rand::get_random_bytes(&mut seed);
        store.set(SEED, &seed)?;
    }
    for _ in 0..500 {
        if let Some(seed) = store.get(SEED)? {
            let seed: [u8; 32] = seed
                .try_into()
                .map_err(|_| Error::msg("stored key has the wrong length"))?;
            return Ok(SigningKey::from_bytes(&seed));
        }
        nacre_sdk::wstd::task::sleep(Duration::from_millis(2).into()).await;
    }
    Err(Error::msg("the signing key was not created in time"))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

async fn public_key(_req: Request<Body>, _p: Params) -> Result<Response<Body>, Error> {
    let k = key().await?;
    Ok(Response::new(hex(k.verifying_key().as_bytes()).into()))
}

async fn sign(mut req: Request<Body>, _p: Params) -> Result<Response<Body>, Error> {
    let message = req.body_mut().contents().await?.to_vec();
    let k = key().await?;
    Ok(Response::new(hex(&k.sign(&message).to_bytes()).into()))
}

async fn attest(req: Request<Body>, _p: Params) -> Result<Response<Body>, Error> {
    let nonce = req
        .uri()
        .query()
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("nonce=")))
        .and_then(unhex);
    let Some(nonce) = nonce else {
        return status(
            StatusCode::BAD_REQUEST,
            "give ?nonce=HEX (an even number of hex digits, up to 512 bytes)\n".into(),
        );
    };
    let k = key().await?;
    let doc = attestation::request(Some(&nonce), None, Some(k.verifying_key().as_bytes()))?;
    Ok(Response::new(
        base64::engine::general_purpose::STANDARD.encode(doc).into(),
    ))
}

async fn handle(req: Request<Body>) -> Result<Response<Body>, Error> {
    Router::new()
        .get("/public-key", public_key)
        .post("/sign", sign)
        .get("/attestation", attest)
        .handle(req)
        .await
}

nacre_sdk::serve!(handle);
