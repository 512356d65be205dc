//! Known-answer tests from the AWS SigV4 test suite (as shipped with
//! `aws-sigv4`, `aws-signing-test-suite/v4`), which uses the service
//! name "service" and so needs the crate-private `*_for_service` forms.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::verify::verify_for_service;
use super::*;

const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
const TOKEN: &str = "AQoDYXdzEPT//////////wEXAMPLEtc764bNrC9SAPBSM22wDOk4x4HIZ8j4FZTwdQWLWsKWHGBuFqwAeMicRXmxfpSPfIeoIYRqTflfKD8YUuwthAx7mSEI/qkPpKPi/kMcGdQrmGdeehM4IC1NtBmUpp2wUE8phUZampKsburEDy0KPkyQDYwT7WZ0wq5VSXDvp75YU9HFvlRd8Tx6q6fE8YQcHNVXAkiY9q6d+xo0rKwT38xVqr7ZD0u0iPPkUL64lIZbqBAz+scqKmlzm8FDrypNC9Yjc8fPOLn9FX9KSYvKTr4rvx3iSIlTJabIQwj2ICCR/oLxBA==";

/// 2015-08-30T12:36:00Z, the suite's time.
fn suite_time() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_440_938_160)
}

fn post(headers: &[(&str, &str)]) -> http::Request<Bytes> {
    let mut builder = http::Request::builder().method("POST").uri("/");
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(Bytes::new()).expect("request")
}

fn header<'r>(request: &'r http::Request<Bytes>, name: &str) -> &'r str {
    request
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

fn suite_secret(akid: &str) -> Option<String> {
    (akid == "AKIDEXAMPLE").then(|| SECRET.to_owned())
}

#[test]
fn post_header_value_case() {
    let mut request = post(&[("host", "example.amazonaws.com"), ("my-header1", "VALUE1")]);
    let credentials = Credentials::new("AKIDEXAMPLE", SECRET, None, None);
    sign_for_service(
        &mut request,
        &credentials,
        "us-east-1",
        "service",
        suite_time(),
    )
    .expect("signs");
    assert_eq!(header(&request, "x-amz-date"), "20150830T123600Z");
    assert_eq!(
        header(&request, "authorization"),
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
         SignedHeaders=host;my-header1;x-amz-date, \
         Signature=cdbc9802e29d2942e5e10b5bccfdd67c5f22c7c4e8ae67b53629efa58b974b7d"
    );
    let required = ["host", X_AMZ_DATE];
    let who = verify_for_service(&request, suite_secret, suite_time(), "service", &required);
    assert_eq!(who.expect("verifies"), "AKIDEXAMPLE");
}

#[test]
fn post_sts_header_before() {
    let mut request = post(&[("host", "example.amazonaws.com")]);
    let credentials = Credentials::new("AKIDEXAMPLE", SECRET, Some(TOKEN.to_owned()), None);
    sign_for_service(
        &mut request,
        &credentials,
        "us-east-1",
        "service",
        suite_time(),
    )
    .expect("signs");
    assert_eq!(header(&request, "x-amz-security-token"), TOKEN);
    assert_eq!(
        header(&request, "authorization"),
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
         SignedHeaders=host;x-amz-date;x-amz-security-token, \
         Signature=85d96828115b5dc0cfc3bd16ad9e210dd772bbebba041836c64533a82be05ead"
    );
    let required = ["host", X_AMZ_DATE];
    let who = verify_for_service(&request, suite_secret, suite_time(), "service", &required);
    assert_eq!(who.expect("verifies"), "AKIDEXAMPLE");
}

#[test]
fn secrets_stay_out_of_debug() {
    let credentials = Credentials::new("AKIDEXAMPLE", SECRET, Some(TOKEN.to_owned()), None);
    let shown = format!("{credentials:?}");
    assert!(shown.contains("AKIDEXAMPLE"), "{shown}");
    assert!(
        !shown.contains("EXAMPLEKEY") && !shown.contains("AQoDYXdz"),
        "{shown}"
    );
}
