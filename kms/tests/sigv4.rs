//! `sign` and `verify` against each other: every change to what was
//! signed, a wrong or unknown key, and clock skew are refused.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::HeaderValue;
use nacre_kms::call::{Endpoint, request};
use nacre_kms::sigv4::{Credentials, SigV4Error, VerifyError, sign, verify};
use nacre_kms::wire::{DecryptRequest, ErrorCode, Operation, Recipient};

const AKID: &str = "AKIDEXAMPLE";
const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";

fn signed_at() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

fn secrets(akid: &str) -> Option<String> {
    (akid == AKID).then(|| SECRET.to_owned())
}

fn credentials(token: Option<&str>) -> Credentials {
    Credentials::new(AKID, SECRET, token.map(str::to_owned), None)
}

fn signed_request(token: Option<&str>) -> http::Request<Bytes> {
    let body = DecryptRequest {
        ciphertext_blob: vec![1, 2, 3, 4, 5, 6, 7, 8],
        recipient: Some(Recipient::new(vec![0xd2, 0x84])),
        ..DecryptRequest::default()
    };
    let endpoint = Endpoint::aws("eu-west-1");
    request(
        &endpoint,
        Operation::Decrypt,
        &body,
        &credentials(token),
        signed_at(),
    )
    .expect("request")
}

fn verify_now(request: &http::Request<Bytes>) -> Result<String, VerifyError> {
    verify(request, secrets, signed_at())
}

fn assert_mismatch(request: &http::Request<Bytes>, what: &str) {
    let result = verify_now(request);
    assert!(
        matches!(result, Err(VerifyError::Mismatch)),
        "{what}: {result:?}"
    );
}

#[test]
fn signed_requests_verify() {
    assert_eq!(verify_now(&signed_request(None)).expect("verifies"), AKID);
    let with_token = signed_request(Some("FwoGZXIvYXdzEBYaDKEXAMPLETOKEN"));
    assert_eq!(
        with_token.headers()["x-amz-security-token"],
        "FwoGZXIvYXdzEBYaDKEXAMPLETOKEN"
    );
    assert_eq!(verify_now(&with_token).expect("verifies"), AKID);
}

#[test]
fn every_changed_body_byte_is_refused() {
    let request = signed_request(None);
    for at in 0..request.body().len() {
        let mut body = request.body().to_vec();
        body[at] ^= 0x20;
        let mut changed = request.clone();
        *changed.body_mut() = Bytes::from(body);
        assert_mismatch(&changed, &format!("body byte {at}"));
    }
}

#[test]
fn changed_headers_are_refused() {
    let request = signed_request(Some("token"));
    let cases = [
        ("x-amz-target", "TrentService.GenerateDataKey"),
        ("x-amz-target", "TrentService.Decrypu"),
        ("content-type", "application/x-amz-json-1.0"),
        ("host", "kms.eu-west-2.amazonaws.com"),
        ("x-amz-date", "20231114T221321Z"),
        ("x-amz-security-token", "tokem"),
    ];
    for (name, value) in cases {
        let mut changed = request.clone();
        changed
            .headers_mut()
            .insert(name, HeaderValue::from_static(value));
        assert_mismatch(&changed, name);
    }
    let authorization = request.headers()["authorization"]
        .to_str()
        .expect("ascii")
        .to_owned();
    let tampered = [
        authorization.replace("eu-west-1", "us-east-1"),
        format!(
            "{}{}",
            &authorization[..authorization.len() - 1],
            flip_hex(authorization.as_bytes()[authorization.len() - 1])
        ),
    ];
    for value in tampered {
        let mut changed = request.clone();
        changed.headers_mut().insert(
            "authorization",
            HeaderValue::from_str(&value).expect("header"),
        );
        assert_mismatch(&changed, &value);
    }
}

fn flip_hex(digit: u8) -> char {
    if digit == b'0' { '1' } else { '0' }
}

#[test]
fn wrong_and_unknown_keys_are_refused() {
    let request = signed_request(None);
    let wrong = verify(&request, |_| Some("another secret".to_owned()), signed_at());
    assert!(matches!(wrong, Err(VerifyError::Mismatch)), "{wrong:?}");
    let error = verify(&request, |_| None, signed_at()).expect_err("unknown key");
    assert!(matches!(&error, VerifyError::UnknownKey { access_key_id } if access_key_id == AKID));
    assert_eq!(error.code(), ErrorCode::UnrecognizedClient);
    assert_eq!(error.to_error_body().kind, "UnrecognizedClientException");
    assert_eq!(VerifyError::Mismatch.code(), ErrorCode::InvalidSignature);
}

#[test]
fn clock_skew_beyond_five_minutes_is_refused() {
    let request = signed_request(None);
    let five = Duration::from_secs(300);
    for now in [signed_at() + five, signed_at() - five] {
        assert!(verify(&request, secrets, now).is_ok());
    }
    let late = verify(
        &request,
        secrets,
        signed_at() + five + Duration::from_secs(1),
    )
    .expect_err("expired");
    assert!(matches!(late, VerifyError::Expired { .. }), "{late:?}");
    assert!(
        late.to_string()
            .starts_with("Signature expired: 20231114T221320Z is now earlier than"),
        "{late}"
    );
    assert_eq!(late.code(), ErrorCode::InvalidSignature);
    let early = verify(
        &request,
        secrets,
        signed_at() - five - Duration::from_secs(1),
    )
    .expect_err("early");
    assert!(
        matches!(early, VerifyError::NotYetCurrent { .. }),
        "{early:?}"
    );
    assert_eq!(early.code(), ErrorCode::InvalidSignature);
}

#[test]
fn incomplete_signatures_are_refused() {
    let mut unsigned = signed_request(None);
    unsigned.headers_mut().remove("authorization");
    let error = verify_now(&unsigned).expect_err("no authorization");
    assert_eq!(
        error.code(),
        ErrorCode::Other("MissingAuthenticationTokenException".into())
    );

    // Signed before x-amz-target was added: the operation is not covered.
    let mut late_target = http::Request::builder()
        .method("POST")
        .uri("/")
        .header("host", "kms.eu-west-1.amazonaws.com")
        .body(Bytes::from_static(b"{}"))
        .expect("request");
    sign(
        &mut late_target,
        &credentials(None),
        "eu-west-1",
        signed_at(),
    )
    .expect("signs");
    late_target.headers_mut().insert(
        "x-amz-target",
        HeaderValue::from_static("TrentService.Decrypt"),
    );
    let error = verify_now(&late_target).expect_err("target unsigned");
    assert!(
        matches!(
            error,
            VerifyError::UnsignedHeader {
                name: "x-amz-target"
            }
        ),
        "{error:?}"
    );
    assert_eq!(
        error.code(),
        ErrorCode::Other("IncompleteSignatureException".into())
    );

    for bad in [
        "AWS4-HMAC-SHA1 Credential=x",
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/x, Signature=00",
    ] {
        let mut malformed = signed_request(None);
        malformed
            .headers_mut()
            .insert("authorization", HeaderValue::from_static(bad));
        let error = verify_now(&malformed).expect_err("malformed");
        assert!(
            matches!(error, VerifyError::Malformed { .. }),
            "{bad}: {error:?}"
        );
    }
}

#[test]
fn host_may_come_from_the_uri_as_in_http2() {
    let mut request = signed_request(None);
    request.headers_mut().remove("host");
    *request.uri_mut() = "https://kms.eu-west-1.amazonaws.com/".parse().expect("uri");
    assert_eq!(verify_now(&request).expect("verifies"), AKID);
}

#[test]
fn signing_again_replaces_the_signature() {
    let mut request = signed_request(Some("first-token"));
    let later = signed_at() + Duration::from_secs(60);
    sign(&mut request, &credentials(None), "eu-west-1", later).expect("signs");
    assert_eq!(request.headers().get_all("authorization").iter().count(), 1);
    assert!(request.headers().get("x-amz-security-token").is_none());
    assert_eq!(verify(&request, secrets, later).expect("verifies"), AKID);
}

#[test]
fn expired_credentials_and_hostless_requests_are_not_signed() {
    let mut request = signed_request(None);
    let expired = Credentials::new(AKID, SECRET, Some("t".into()), Some(signed_at()));
    let error = sign(&mut request, &expired, "eu-west-1", signed_at()).expect_err("expired");
    assert!(
        matches!(error, SigV4Error::ExpiredCredentials { .. }),
        "{error:?}"
    );
    assert!(
        error.to_string().contains("expired at 20231114T221320Z"),
        "{error}"
    );
    request.headers_mut().remove("host");
    let error =
        sign(&mut request, &credentials(None), "eu-west-1", signed_at()).expect_err("no host");
    assert!(matches!(error, SigV4Error::MissingHost));
}
