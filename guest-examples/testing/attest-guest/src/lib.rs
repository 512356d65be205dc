//! A guest using `nacre:enclave/attestation`, for the runtime's tests.
//!
//! - `/hash`: hex of `code-hash()`
//! - `/attest?NONCEHEX`: hex of a document with that nonce and user data
//!   `guest-data`
//! - `/spoof?NONCEHEX`: a document whose user data is a guest binding that
//!   claims an all-zero code hash; the runtime must still stamp the real one
//! - `/keyed?KEYHEX`: hex of a document carrying that public key (a hostile
//!   guest asking for one KMS would encrypt to)

use guest_test_support::respond;
use wasip2::http::types::{IncomingRequest, ResponseOutparam};

wit_bindgen::generate!({
    path: "../../../wit",
    world: "nacre:enclave/guest",
});

use nacre::enclave::attestation;

wasip2::http::proxy::export!(AttestGuest);

struct AttestGuest;

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    (0..s.len())
        .step_by(2)
        .map(|i| s.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
        .collect()
}

impl wasip2::exports::http::incoming_handler::Guest for AttestGuest {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let pq = request.path_with_query().unwrap_or_default();
        let (path, query) = pq.split_once('?').unwrap_or((&pq, ""));
        let nonce = unhex(query);
        let result = match path {
            "/hash" => Ok(hex(&attestation::code_hash())),
            "/attest" => {
                attestation::request(nonce.as_deref(), Some(b"guest-data"), None).map(|d| hex(&d))
            }
            "/keyed" => match nonce.as_deref() {
                Some(key) => attestation::request(None, None, Some(key)).map(|d| hex(&d)),
                None => Err("give the key as hex".to_string()),
            },
            "/spoof" => {
                // CBOR {"nacre": 1, "guest": h'00..00', "data": null}
                let mut fake = vec![0xa3, 0x65];
                fake.extend_from_slice(b"nacre");
                fake.extend_from_slice(&[0x01, 0x65]);
                fake.extend_from_slice(b"guest");
                fake.extend_from_slice(&[0x58, 0x20]);
                fake.extend_from_slice(&[0u8; 32]);
                fake.push(0x64);
                fake.extend_from_slice(b"data");
                fake.push(0xf6);
                attestation::request(nonce.as_deref(), Some(&fake), None).map(|d| hex(&d))
            }
            _ => Err("unknown path".to_string()),
        };
        match result {
            Ok(text) => respond(out, 200, &text),
            Err(e) => respond(out, 500, &e),
        }
    }
}
