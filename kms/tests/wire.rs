//! The wire types against KMS's own JSON (samples from the KMS API
//! Reference: Decrypt's request and response examples, the request and
//! response syntax with `Recipient` / `CiphertextForRecipient`, errors).

use nacre_kms::SecretBytes;
use nacre_kms::wire::{
    DecryptRequest, DecryptResponse, ErrorBody, ErrorCode, GenerateDataKeyRequest,
    GenerateDataKeyResponse, KEY_ENCRYPTION_ALGORITHM, Operation, Recipient,
};
use serde_json::{Value, json};

const KEY_ARN: &str = "arn:aws:kms:us-west-2:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";

/// Serializes `value` and compares it, as JSON, with `expected`.
fn assert_json<T: serde::Serialize>(value: &T, expected: &Value) {
    let written: Value = serde_json::to_value(value).expect("serializes");
    assert_eq!(&written, expected);
}

#[test]
fn decrypt_request_from_the_api_reference() {
    // The "Example Request" of the KMS API Reference's Decrypt page.
    let text = r#"{
      "KeyId": "arn:aws:kms:us-west-2:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
      "CiphertextBlob": "CiDPoCH188S65r5Cy7pAhIFJMXDlU7mewhSlYUpuQIVBrhKmAQEBAgB4z6Ah9fPEuua+Qsu6QISBSTFw5VO5nsIUpWFKbkCFQa4AAAB9MHsGCSqGSIb3DQEHBqBuMGwCAQAwZwYJKoZIhvcNAQcBMB4GCWCGSAFlAwQBLjARBAxLc9b6QThC9jB/ZjYCARCAOt8la8qXLO5wB3JH2NlwWWzWRU2RKqpO9A/0psE5UWwkK6CnwoeC3Zj9Q0A66apZkbRglFfY1lTY+Tc="
    }"#;
    let request: DecryptRequest = serde_json::from_str(text).expect("parses");
    assert_eq!(request.key_id.as_deref(), Some(KEY_ARN));
    assert_eq!(request.ciphertext_blob.len(), 203);
    assert_eq!(request.ciphertext_blob[..3], [0x0a, 0x20, 0xcf]);
    assert!(request.encryption_context.is_empty() && request.recipient.is_none());
    assert_json(&request, &serde_json::from_str(text).expect("json"));
}

#[test]
fn decrypt_request_with_recipient_round_trips() {
    // Every field of Decrypt's request syntax, Recipient included.
    let sample = json!({
        "CiphertextBlob": "AQIDBA==",
        "EncryptionContext": {"Department": "IT", "Purpose": "Test"},
        "KeyId": KEY_ARN,
        "EncryptionAlgorithm": "SYMMETRIC_DEFAULT",
        "Recipient": {
            "KeyEncryptionAlgorithm": "RSAES_OAEP_SHA_256",
            "AttestationDocument": "hEShATgioFkQ6qlpbW9kdWxlX2lkeCdp"
        },
        "GrantTokens": ["GrantTokenExample"],
        "DryRun": false
    });
    let request: DecryptRequest = serde_json::from_value(sample.clone()).expect("parses");
    assert_eq!(request.ciphertext_blob, [1, 2, 3, 4]);
    assert_eq!(request.encryption_context["Department"], "IT");
    let recipient = request.recipient.as_ref().expect("recipient");
    assert_eq!(recipient.key_encryption_algorithm, KEY_ENCRYPTION_ALGORITHM);
    assert_eq!(
        recipient.attestation_document[..4],
        [0x84, 0x44, 0xa1, 0x01]
    );
    assert_eq!(request.dry_run, Some(false));
    assert_json(&request, &sample);
}

#[test]
fn minimal_requests_leave_out_what_is_unset() {
    let decrypt = DecryptRequest {
        ciphertext_blob: vec![1, 2, 3],
        recipient: Some(Recipient::new(vec![0xff, 0xee])),
        ..DecryptRequest::default()
    };
    assert_eq!(
        serde_json::to_string(&decrypt).expect("json"),
        r#"{"CiphertextBlob":"AQID","Recipient":{"KeyEncryptionAlgorithm":"RSAES_OAEP_SHA_256","AttestationDocument":"/+4="}}"#
    );
    let generate = GenerateDataKeyRequest {
        key_id: "alias/ExampleAlias".into(),
        key_spec: Some("AES_256".into()),
        ..GenerateDataKeyRequest::default()
    };
    assert_eq!(
        serde_json::to_string(&generate).expect("json"),
        r#"{"KeyId":"alias/ExampleAlias","KeySpec":"AES_256"}"#
    );
}

#[test]
fn decrypt_response_from_the_api_reference() {
    // The "Example Response" of the Decrypt page, plus a field KMS added later.
    let text = r#"{
      "KeyId": "arn:aws:kms:us-west-2:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
      "Plaintext": "VGhpcyBpcyBEYXkgMSBmb3IgdGhlIEludGVybmV0Cg==",
      "EncryptionAlgorithm": "SYMMETRIC_DEFAULT",
      "KeyMaterialId": "ignored"
    }"#;
    let response: DecryptResponse = serde_json::from_str(text).expect("parses");
    let plaintext = response.plaintext.as_ref().expect("plaintext");
    assert_eq!(plaintext.expose(), b"This is Day 1 for the Internet\n");
    assert_eq!(
        response.encryption_algorithm.as_deref(),
        Some("SYMMETRIC_DEFAULT")
    );
    assert!(response.ciphertext_for_recipient.is_none());
}

#[test]
fn generate_data_key_response_for_a_recipient() {
    // Response syntax with CiphertextForRecipient; Plaintext is null or absent.
    let with_null = json!({
        "CiphertextBlob": "AQIDBAUG",
        "CiphertextForRecipient": "MIAGCSqGSIb3DQEHA6CA",
        "KeyId": KEY_ARN,
        "KeyMaterialId": "2ae2b9e5",
        "Plaintext": null,
    });
    let mut without = with_null.clone();
    without.as_object_mut().expect("object").remove("Plaintext");
    for sample in [with_null, without] {
        let response: GenerateDataKeyResponse = serde_json::from_value(sample).expect("parses");
        assert_eq!(response.ciphertext_blob, [1, 2, 3, 4, 5, 6]);
        assert_eq!(response.key_id.as_deref(), Some(KEY_ARN));
        assert!(response.plaintext.is_none());
        let envelope = response.ciphertext_for_recipient.expect("envelope");
        assert_eq!(envelope[..4], [0x30, 0x80, 0x06, 0x09]);
    }
    let absent: GenerateDataKeyResponse =
        serde_json::from_str(r#"{"CiphertextBlob":"AA==","CiphertextForRecipient":"AA=="}"#)
            .expect("parses");
    assert!(absent.plaintext.is_none() && absent.key_id.is_none());
    assert_json(
        &absent,
        &json!({"CiphertextBlob": "AA==", "CiphertextForRecipient": "AA=="}),
    );
}

#[test]
fn missing_required_blob_names_the_field() {
    let error =
        serde_json::from_str::<GenerateDataKeyResponse>(r#"{"KeyId":"k"}"#).expect_err("refused");
    assert!(error.to_string().contains("CiphertextBlob"), "{error}");
}

#[test]
fn error_bodies_in_both_forms() {
    let plain: ErrorBody = serde_json::from_str(
        r#"{"__type":"NotFoundException","message":"Key 'arn:aws:kms:us-east-1:111122223333:key/x' does not exist"}"#,
    )
    .expect("parses");
    assert_eq!(plain.code(), ErrorCode::NotFound);
    assert!(plain.message.ends_with("does not exist"));
    let prefixed: ErrorBody = serde_json::from_str(
        r#"{"__type":"com.amazonaws.kms#AccessDeniedException","Message":"not authorized"}"#,
    )
    .expect("parses");
    assert_eq!(prefixed.code(), ErrorCode::AccessDenied);
    assert_eq!(prefixed.message, "not authorized");
    let bare: ErrorBody =
        serde_json::from_str(r#"{"__type":"KMSInternalException"}"#).expect("parses");
    assert_eq!(
        (bare.code(), bare.message.as_str()),
        (ErrorCode::KmsInternal, "")
    );
    let written = ErrorBody::new(&ErrorCode::InvalidCiphertext, "bad");
    assert_json(
        &written,
        &json!({"__type": "InvalidCiphertextException", "message": "bad"}),
    );
}

#[test]
fn error_codes_use_kms_names_and_statuses() {
    let all = [
        (ErrorCode::AccessDenied, "AccessDeniedException"),
        (ErrorCode::InvalidCiphertext, "InvalidCiphertextException"),
        (ErrorCode::IncorrectKey, "IncorrectKeyException"),
        (ErrorCode::NotFound, "NotFoundException"),
        (ErrorCode::Validation, "ValidationException"),
        (ErrorCode::UnrecognizedClient, "UnrecognizedClientException"),
        (ErrorCode::InvalidSignature, "InvalidSignatureException"),
        (ErrorCode::ExpiredToken, "ExpiredTokenException"),
        (ErrorCode::KmsInvalidState, "KMSInvalidStateException"),
        (ErrorCode::KmsInternal, "KMSInternalException"),
    ];
    for (code, name) in all {
        assert_eq!(code.name(), name);
        assert_eq!(ErrorCode::parse(name), code);
        assert_eq!(ErrorCode::parse(&format!("com.amazonaws.kms#{name}")), code);
        assert_eq!(
            ErrorCode::parse(&format!("aws.kms#{name}:http://internal/")),
            code
        );
        let status = if code == ErrorCode::KmsInternal {
            500
        } else {
            400
        };
        assert_eq!(code.status().as_u16(), status, "{name}");
    }
    let other = ErrorCode::parse("com.amazonaws.kms#DisabledException");
    assert_eq!(other, ErrorCode::Other("DisabledException".into()));
    assert_eq!(
        (other.name(), other.status().as_u16()),
        ("DisabledException", 400)
    );
}

#[test]
fn operations() {
    assert_eq!(Operation::Decrypt.target(), "TrentService.Decrypt");
    assert_eq!(
        Operation::GenerateDataKey.target(),
        "TrentService.GenerateDataKey"
    );
    assert_eq!(Operation::Decrypt.action(), "kms:Decrypt");
    assert_eq!(Operation::GenerateDataKey.action(), "kms:GenerateDataKey");
    for op in Operation::ALL {
        assert_eq!(Operation::from_target(op.target()), Some(op));
    }
    assert_eq!(Operation::from_target("TrentService.Encrypt"), None);
    assert_eq!(Operation::from_target("trentservice.decrypt"), None);
}

#[test]
fn secret_bytes_are_redacted_and_base64() {
    let secret = SecretBytes::from(b"top secret key material!".to_vec());
    assert_eq!(format!("{secret:?}"), "SecretBytes([REDACTED; 24 bytes])");
    let response = DecryptResponse {
        plaintext: Some(secret.clone()),
        ..DecryptResponse::default()
    };
    assert!(!format!("{response:?}").contains("top secret"));
    let text = serde_json::to_string(&response).expect("json");
    assert_eq!(text, r#"{"Plaintext":"dG9wIHNlY3JldCBrZXkgbWF0ZXJpYWwh"}"#);
    let back: DecryptResponse = serde_json::from_str(&text).expect("parses");
    assert_eq!(back.plaintext, Some(secret));
    // Unpadded base64 is read too; bad base64 is refused without quoting it.
    let unpadded: DecryptResponse = serde_json::from_str(r#"{"Plaintext":"AQ"}"#).expect("parses");
    assert_eq!(unpadded.plaintext.expect("plaintext").expose(), [1]);
    let error =
        serde_json::from_str::<DecryptResponse>(r#"{"Plaintext":"s3cr3t!!"}"#).expect_err("bad");
    assert!(!error.to_string().contains("s3cr3t"), "{error}");
}
