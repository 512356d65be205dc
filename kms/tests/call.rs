//! Building requests and reading answers.

use std::time::{Duration, UNIX_EPOCH};

use http::StatusCode;
use nacre_kms::call::{CallError, Endpoint, request, response};
use nacre_kms::sigv4::Credentials;
use nacre_kms::wire::{
    DecryptResponse, ErrorCode, GenerateDataKeyRequest, GenerateDataKeyResponse, Operation,
};

#[test]
fn aws_endpoints() {
    let endpoint = Endpoint::aws("eu-west-1");
    assert_eq!(endpoint.host(), "kms.eu-west-1.amazonaws.com");
    assert_eq!((endpoint.port(), endpoint.region()), (443, "eu-west-1"));
    assert_eq!(endpoint.authority(), "kms.eu-west-1.amazonaws.com");
    assert_eq!(endpoint.url(), "https://kms.eu-west-1.amazonaws.com/");
}

#[test]
fn custom_endpoints() {
    let local = Endpoint::custom("https://localhost:8443", "us-east-1").expect("valid");
    assert_eq!((local.host(), local.port()), ("localhost", 8443));
    assert_eq!(local.authority(), "localhost:8443");
    let default_port =
        Endpoint::custom("https://kms-fips.us-east-1.amazonaws.com/", "us-east-1").expect("valid");
    assert_eq!(default_port.authority(), "kms-fips.us-east-1.amazonaws.com");
    let v6 = Endpoint::custom("https://[::1]:9443", "us-east-1").expect("valid");
    assert_eq!(v6.authority(), "[::1]:9443");

    let error = Endpoint::custom("http://localhost:8080", "us-east-1").expect_err("http refused");
    assert!(matches!(error, CallError::InsecureEndpoint { .. }));
    let text = error.to_string();
    assert!(
        text.contains("http://localhost:8080") && text.contains("https://"),
        "{text}"
    );

    for (url, region, needle) in [
        ("https://localhost/kms", "us-east-1", "remove the path"),
        ("https://localhost/?a=b", "us-east-1", "remove the path"),
        ("localhost:8443", "us-east-1", "absolute URL"),
        ("ftp://localhost", "us-east-1", "not https"),
        ("https://user@localhost", "us-east-1", "user information"),
        ("https://localhost", "", "region"),
        ("https://localhost", "us east", "region"),
    ] {
        let error = Endpoint::custom(url, region).expect_err(url);
        assert!(
            matches!(error, CallError::InvalidEndpoint { .. }),
            "{url}: {error:?}"
        );
        assert!(error.to_string().contains(needle), "{url}: {error}");
    }
}

#[test]
fn requests_carry_exactly_the_kms_headers() {
    let endpoint = Endpoint::custom("https://localhost:8443", "us-east-1").expect("valid");
    let body = GenerateDataKeyRequest {
        key_id: "alias/nacre".into(),
        number_of_bytes: Some(32),
        ..GenerateDataKeyRequest::default()
    };
    let at = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let credentials = Credentials::new("AKIDEXAMPLE", "secret", Some("session".into()), None);
    let request = request(
        &endpoint,
        Operation::GenerateDataKey,
        &body,
        &credentials,
        at,
    )
    .expect("builds");
    assert_eq!(request.method(), http::Method::POST);
    assert_eq!(request.uri(), "/");
    let mut names: Vec<&str> = request.headers().keys().map(|name| name.as_str()).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "authorization",
            "content-type",
            "host",
            "x-amz-date",
            "x-amz-security-token",
            "x-amz-target"
        ]
    );
    let header = |name: &str| request.headers()[name].to_str().expect("ascii").to_owned();
    assert_eq!(header("host"), "localhost:8443");
    assert_eq!(header("content-type"), "application/x-amz-json-1.1");
    assert_eq!(header("x-amz-target"), "TrentService.GenerateDataKey");
    assert_eq!(header("x-amz-date"), "20231114T221320Z");
    assert_eq!(header("x-amz-security-token"), "session");
    let authorization = header("authorization");
    assert!(
        authorization.starts_with(
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20231114/us-east-1/kms/aws4_request, \
             SignedHeaders=content-type;host;x-amz-date;x-amz-security-token;x-amz-target, Signature="
        ),
        "{authorization}"
    );
    // Kept out of `http`'s Debug output of the request.
    assert!(request.headers()["x-amz-security-token"].is_sensitive());
    assert_eq!(
        request.body().as_ref(),
        br#"{"KeyId":"alias/nacre","NumberOfBytes":32}"#
    );
}

#[test]
fn successful_answers_parse() {
    let body = br#"{"KeyId":"arn:aws:kms:eu-west-1:111122223333:key/k","CiphertextForRecipient":"MIA=","Plaintext":null}"#;
    let answer: DecryptResponse = response(StatusCode::OK, body).expect("parses");
    assert_eq!(
        answer.ciphertext_for_recipient.as_deref(),
        Some(&[0x30, 0x80][..])
    );

    let error = response::<GenerateDataKeyResponse>(StatusCode::OK, br#"{"KeyId":"k"}"#)
        .expect_err("malformed");
    assert!(
        matches!(
            &error,
            CallError::Malformed {
                response: "GenerateDataKeyResponse",
                ..
            }
        ),
        "{error:?}"
    );
    assert!(error.to_string().contains("CiphertextBlob"), "{error}");
    let error = response::<DecryptResponse>(StatusCode::OK, br#"{"Plaintext":"top-secret!"}"#)
        .expect_err("bad");
    assert!(!error.to_string().contains("top-secret"), "{error}");
}

#[test]
fn kms_errors_in_both_type_forms() {
    let plain = br#"{"__type":"AccessDeniedException","message":"User is not authorized to perform kms:Decrypt"}"#;
    let error = response::<DecryptResponse>(StatusCode::BAD_REQUEST, plain).expect_err("refused");
    assert!(
        matches!(
            &error,
            CallError::Kms {
                code: ErrorCode::AccessDenied,
                ..
            }
        ),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        "KMS refused: AccessDeniedException: User is not authorized to perform kms:Decrypt"
    );

    let prefixed =
        br#"{"__type":"com.amazonaws.kms#NotFoundException","Message":"Alias is not found."}"#;
    let error =
        response::<DecryptResponse>(StatusCode::BAD_REQUEST, prefixed).expect_err("refused");
    assert_eq!(
        error.to_string(),
        "KMS refused: NotFoundException: Alias is not found."
    );

    let bare = br#"{"__type":"KMSInternalException"}"#;
    let error =
        response::<DecryptResponse>(StatusCode::INTERNAL_SERVER_ERROR, bare).expect_err("refused");
    assert!(matches!(
        &error,
        CallError::Kms {
            code: ErrorCode::KmsInternal,
            ..
        }
    ));
    assert_eq!(error.to_string(), "KMS refused: KMSInternalException");
}

#[test]
fn non_kms_error_bodies_are_quoted_briefly() {
    let html = b"<html>\r\n<body>502 Bad Gateway</body>\r\n</html>";
    let error = response::<DecryptResponse>(StatusCode::BAD_GATEWAY, html).expect_err("refused");
    assert!(matches!(&error, CallError::Http { status, .. } if *status == StatusCode::BAD_GATEWAY));
    assert_eq!(
        error.to_string(),
        "KMS endpoint answered HTTP 502 Bad Gateway with a body that is not a KMS error: \
         <html>\\r\\n<body>502 Bad Gateway</body>\\r\\n</html>"
    );
    let long = vec![b'x'; 1000];
    let error = response::<DecryptResponse>(StatusCode::FORBIDDEN, &long).expect_err("refused");
    let CallError::Http { body, .. } = error else {
        panic!("not Http: {error:?}")
    };
    assert_eq!(body.chars().count(), 201);
    assert!(body.ends_with('…'));
    let error = response::<DecryptResponse>(StatusCode::FORBIDDEN, b"").expect_err("refused");
    assert!(
        error.to_string().ends_with("not a KMS error: (empty)"),
        "{error}"
    );
}
