//! The stand-in's front end in process: SigV4, the target header, body
//! size and JSON, and KMS's error names for each.

mod common;

use std::time::{Duration, SystemTime};

use common::*;
use nacre_kms::wire::Operation;

/// A request whose body is `body` as raw bytes, properly signed.
fn raw(h: &Harness, op: Operation, body: &[u8]) -> (u16, serde_json::Value) {
    let now = SystemTime::now();
    let mut request = signed(&h.endpoint, op, &serde_json::json!({}), &credentials(), now);
    *request.body_mut() = bytes::Bytes::copy_from_slice(body);
    // Signing again replaces the signature: it now covers these bytes.
    nacre_kms::sigv4::sign(&mut request, &credentials(), REGION, now).expect("sign");
    h.send(request, now)
}

#[test]
fn signatures_unknown_keys_and_skew_are_refused() {
    let h = Harness::new("sigv4", enclave_policy(&[]));
    let now = SystemTime::now();
    let body = gdk(OPEN_KEY, None);
    let wrong = nacre_kms::sigv4::Credentials::new(AKID, "not the secret", None, None);
    let request = signed(&h.endpoint, Operation::GenerateDataKey, &body, &wrong, now);
    refused(&h, h.send(request, now), "InvalidSignatureException");

    let stranger = nacre_kms::sigv4::Credentials::new("AKIDUNKNOWN", SECRET, None, None);
    let request = signed(
        &h.endpoint,
        Operation::GenerateDataKey,
        &body,
        &stranger,
        now,
    );
    refused(&h, h.send(request, now), "UnrecognizedClientException");

    let request = signed(
        &h.endpoint,
        Operation::GenerateDataKey,
        &body,
        &credentials(),
        now,
    );
    refused(
        &h,
        h.send(request, now + Duration::from_secs(16 * 60)),
        "InvalidSignatureException",
    );

    // A body changed after signing.
    let mut request = signed(
        &h.endpoint,
        Operation::GenerateDataKey,
        &body,
        &credentials(),
        now,
    );
    *request.body_mut() =
        bytes::Bytes::from(serde_json::to_vec(&gdk(ENCLAVE_KEY, None)).expect("json"));
    refused(&h, h.send(request, now), "InvalidSignatureException");

    // No signature at all.
    let mut request = signed(
        &h.endpoint,
        Operation::GenerateDataKey,
        &body,
        &credentials(),
        now,
    );
    request.headers_mut().remove(http::header::AUTHORIZATION);
    refused(
        &h,
        h.send(request, now),
        "MissingAuthenticationTokenException",
    );
}

#[test]
fn garbage_truncated_and_incomplete_bodies() {
    let h = Harness::new("bodies", enclave_policy(&[]));
    for body in [&b"\x00\xffgarbage"[..], b"", b"[1, 2]", b"\"text\""] {
        refused(
            &h,
            raw(&h, Operation::GenerateDataKey, body),
            "SerializationException",
        );
    }
    let full = serde_json::to_vec(&gdk(OPEN_KEY, None)).expect("json");
    refused(
        &h,
        raw(&h, Operation::GenerateDataKey, &full[..full.len() / 2]),
        "SerializationException",
    );
    // A member of the wrong type, and a blob that is not base64.
    refused(
        &h,
        raw(&h, Operation::GenerateDataKey, br#"{"KeyId": 7}"#),
        "SerializationException",
    );
    refused(
        &h,
        raw(&h, Operation::Decrypt, br#"{"CiphertextBlob": "!!!"}"#),
        "SerializationException",
    );
    // A required member missing.
    let (_, json) = raw(&h, Operation::GenerateDataKey, br#"{"KeySpec": "AES_256"}"#);
    assert!(
        json["message"]
            .as_str()
            .unwrap_or_default()
            .contains("'keyId'"),
        "{json}"
    );
    refused(
        &h,
        raw(&h, Operation::GenerateDataKey, br#"{"KeySpec": "AES_256"}"#),
        "ValidationException",
    );
    // Neither KeySpec nor NumberOfBytes, and out-of-range lengths.
    let mut req = gdk(OPEN_KEY, None);
    req.key_spec = None;
    refused(
        &h,
        h.call(Operation::GenerateDataKey, &req),
        "ValidationException",
    );
    req.number_of_bytes = Some(1025);
    refused(
        &h,
        h.call(Operation::GenerateDataKey, &req),
        "ValidationException",
    );
    req.key_spec = Some("AES_512".into());
    req.number_of_bytes = None;
    refused(
        &h,
        h.call(Operation::GenerateDataKey, &req),
        "ValidationException",
    );
}

#[test]
fn unknown_operations_and_oversized_bodies() {
    let h = Harness::new("ops", enclave_policy(&[]));
    let now = SystemTime::now();
    let mut request = signed(
        &h.endpoint,
        Operation::Decrypt,
        &gdk(OPEN_KEY, None),
        &credentials(),
        now,
    );
    request.headers_mut().insert(
        "x-amz-target",
        http::HeaderValue::from_static("TrentService.Encrypt"),
    );
    refused(&h, h.send(request, now), "UnknownOperationException");
    assert_eq!(h.last_refusal().operation, "TrentService.Encrypt");

    let mut request = signed(
        &h.endpoint,
        Operation::Decrypt,
        &gdk(OPEN_KEY, None),
        &credentials(),
        now,
    );
    request.headers_mut().remove("x-amz-target");
    refused(&h, h.send(request, now), "UnknownOperationException");

    let mut request = signed(
        &h.endpoint,
        Operation::Decrypt,
        &gdk(OPEN_KEY, None),
        &credentials(),
        now,
    );
    *request.body_mut() = bytes::Bytes::from(vec![b' '; nacre_kms_dev::MAX_BODY + 1]);
    let response = h.standin.handle_at(request, now);
    assert_eq!(response.status(), 413);
}
