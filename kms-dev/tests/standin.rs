//! The stand-in in process (no sockets): what it answers, what it refuses
//! and with which of KMS's error names, and what it logs as the reason.

mod common;

use std::time::{Duration, SystemTime};

use common::*;
use nacre_kms::envelope;
use nacre_kms::recipient::RecipientKey;
use nacre_kms::wire::{Operation, Recipient};

#[test]
fn data_key_for_recipient_round_trips_and_never_shows_plaintext() {
    let h = Harness::new("roundtrip", enclave_policy(&[]));
    let (recipient, key) = h.recipient();
    let (status, json) = h.call(
        Operation::GenerateDataKey,
        &gdk(ENCLAVE_KEY, Some(recipient)),
    );
    assert_eq!(status, 200, "{json}");
    assert_eq!(json["KeyId"], ENCLAVE_KEY);
    assert!(json.get("Plaintext").is_none(), "plaintext in {json}");
    let data_key = envelope::open(&blob(&json, "CiphertextForRecipient"), &key).expect("open");
    assert_eq!(data_key.len(), 32);
    // Neither the key nor its base64 is anywhere in the answer.
    let raw = json.to_string();
    let b64 =
        serde_json::to_value(nacre_kms::SecretBytes::new(data_key.expose().to_vec())).expect("b64");
    assert!(!raw.contains(b64.as_str().expect("string")));

    // Decrypt with a new Recipient (a new key pair, as an enclave makes).
    let (recipient2, key2) = h.recipient();
    let ciphertext = blob(&json, "CiphertextBlob");
    let (status, json) = h.call(
        Operation::Decrypt,
        &decrypt(ciphertext.clone(), Some(recipient2)),
    );
    assert_eq!(status, 200, "{json}");
    assert!(json.get("Plaintext").is_none(), "plaintext in {json}");
    assert_eq!(json["KeyId"], ENCLAVE_KEY);
    assert_eq!(json["EncryptionAlgorithm"], "SYMMETRIC_DEFAULT");
    let again = envelope::open(&blob(&json, "CiphertextForRecipient"), &key2).expect("open");
    assert_eq!(again, data_key);
    // The first key pair cannot open the second answer.
    assert!(envelope::open(&blob(&json, "CiphertextForRecipient"), &key).is_err());

    // The key id may be the bare UUID, and the key survives a restart.
    let mut h = h;
    h.restart();
    let (recipient3, key3) = h.recipient();
    let mut req = decrypt(ciphertext, Some(recipient3));
    req.key_id = Some("1234abcd-12ab-34cd-56ef-1234567890ab".into());
    let (status, json) = h.call(Operation::Decrypt, &req);
    assert_eq!(status, 200, "{json}");
    let after_restart =
        envelope::open(&blob(&json, "CiphertextForRecipient"), &key3).expect("open");
    assert_eq!(after_restart, data_key);
}

#[test]
fn plaintext_without_recipient_on_an_open_key() {
    let h = Harness::new("open", enclave_policy(&[]));
    let mut req = gdk(OPEN_KEY, None);
    req.key_spec = None;
    req.number_of_bytes = Some(16);
    let (status, json) = h.call(Operation::GenerateDataKey, &req);
    assert_eq!(status, 200, "{json}");
    let plain = blob(&json, "Plaintext");
    assert_eq!(plain.len(), 16);
    let mut d = decrypt(blob(&json, "CiphertextBlob"), None);
    d.key_id = None;
    let (status, json) = h.call(Operation::Decrypt, &d);
    assert_eq!(status, 200, "{json}");
    assert_eq!(blob(&json, "Plaintext"), plain);
    assert_eq!(json["KeyId"], OPEN_KEY);
}

#[test]
fn a_document_of_another_root_is_refused() {
    let h = Harness::new("root", enclave_policy(&[]));
    let key = RecipientKey::generate().expect("key");
    let doc = h.document(&h.stranger, IMAGE, SIGNER, Some(&key));
    let answer = h.call(
        Operation::GenerateDataKey,
        &gdk(ENCLAVE_KEY, Some(Recipient::new(doc))),
    );
    let reason = refused(&h, answer, "AccessDeniedException");
    assert!(reason.contains("attestation document"), "{reason}");
}

#[test]
fn another_image_is_refused_and_the_log_says_which() {
    let h = Harness::new("image", enclave_policy(&[]));
    let key = RecipientKey::generate().expect("key");
    let doc = h.document(&h.signer, [0x99; 48], SIGNER, Some(&key));
    let answer = h.call(
        Operation::GenerateDataKey,
        &gdk(ENCLAVE_KEY, Some(Recipient::new(doc))),
    );
    let reason = refused(&h, answer, "AccessDeniedException");
    assert!(
        reason.contains(&format!(
            "PCR0 {} is not in the policy's kms:RecipientAttestation:ImageSha384",
            hex::encode([0x99u8; 48])
        )),
        "{reason}"
    );
    let r = h.last_refusal();
    assert_eq!(r.operation, "GenerateDataKey");
    assert_eq!(r.key.as_deref(), Some(ENCLAVE_KEY));
}

#[test]
fn another_signer_is_refused() {
    let h = Harness::new("signer", enclave_policy(&[]));
    let key = RecipientKey::generate().expect("key");
    let doc = h.document(&h.signer, IMAGE, [0x77; 48], Some(&key));
    let answer = h.call(
        Operation::GenerateDataKey,
        &gdk(ENCLAVE_KEY, Some(Recipient::new(doc))),
    );
    let reason = refused(&h, answer, "AccessDeniedException");
    assert!(reason.contains("PCR8 "), "{reason}");
}

#[test]
fn a_debug_image_is_refused_unless_the_policy_names_it() {
    let h = Harness::new("debug", enclave_policy(&[]));
    let key = RecipientKey::generate().expect("key");
    let doc = h.document(&h.signer, [0; 48], SIGNER, Some(&key));
    let answer = h.call(
        Operation::GenerateDataKey,
        &gdk(ENCLAVE_KEY, Some(Recipient::new(doc))),
    );
    let reason = refused(&h, answer, "AccessDeniedException");
    assert!(
        reason.contains("(debug-mode image: PCR0 all zeros)"),
        "{reason}"
    );

    let h = Harness::new("debug-allowed", enclave_policy(&[[0; 48]]));
    let doc = h.document(&h.signer, [0; 48], SIGNER, Some(&key));
    let (status, json) = h.call(
        Operation::GenerateDataKey,
        &gdk(ENCLAVE_KEY, Some(Recipient::new(doc))),
    );
    assert_eq!(status, 200, "{json}");
    assert!(envelope::open(&blob(&json, "CiphertextForRecipient"), &key).is_ok());
}

#[test]
fn another_encryption_context_is_invalid_ciphertext() {
    let h = Harness::new("context", enclave_policy(&[]));
    let (ciphertext, _) = enclave_data_key(&h);
    let (recipient, _) = h.recipient();
    let mut req = decrypt(ciphertext.clone(), Some(recipient));
    req.encryption_context = context(&[("app", "payroll")]);
    refused(
        &h,
        h.call(Operation::Decrypt, &req),
        "InvalidCiphertextException",
    );
    let (recipient, _) = h.recipient();
    let mut req = decrypt(ciphertext, Some(recipient));
    req.encryption_context.clear();
    refused(
        &h,
        h.call(Operation::Decrypt, &req),
        "InvalidCiphertextException",
    );
}

#[test]
fn a_document_older_than_five_minutes_is_refused() {
    let h = Harness::new("stale", enclave_policy(&[]));
    let (recipient, _) = h.recipient();
    let req = gdk(ENCLAVE_KEY, Some(recipient));
    let later = SystemTime::now() + Duration::from_secs(6 * 60);
    let reason = refused(
        &h,
        h.call_at(Operation::GenerateDataKey, &req, later),
        "AccessDeniedException",
    );
    assert!(reason.contains("old"), "{reason}");
    // Four minutes later it is still fresh.
    let (status, json) = h.call_at(
        Operation::GenerateDataKey,
        &req,
        SystemTime::now() + Duration::from_secs(4 * 60),
    );
    assert_eq!(status, 200, "{json}");
}

#[test]
fn no_recipient_where_the_policy_requires_attestation_is_refused() {
    let h = Harness::new("norecipient", enclave_policy(&[]));
    let answer = h.call(Operation::GenerateDataKey, &gdk(ENCLAVE_KEY, None));
    let (_, json) = &answer;
    let message = json["message"].as_str().unwrap_or_default().to_string();
    let reason = refused(&h, answer, "AccessDeniedException");
    assert!(reason.contains("no valid attestation document"), "{reason}");
    assert!(
        message.contains("kms:GenerateDataKey") && message.contains(ENCLAVE_KEY),
        "{message}"
    );

    let (ciphertext, _) = enclave_data_key(&h);
    refused(
        &h,
        h.call(Operation::Decrypt, &decrypt(ciphertext, None)),
        "AccessDeniedException",
    );
}

#[test]
fn a_document_without_public_key_or_with_a_wrong_algorithm_is_a_validation_error() {
    let h = Harness::new("validation", enclave_policy(&[]));
    let doc = h.document(&h.signer, IMAGE, SIGNER, None);
    refused(
        &h,
        h.call(
            Operation::GenerateDataKey,
            &gdk(ENCLAVE_KEY, Some(Recipient::new(doc))),
        ),
        "ValidationException",
    );
    let (mut recipient, _) = h.recipient();
    recipient.key_encryption_algorithm = "RSAES_OAEP_SHA_1".into();
    let (_, json) = h.call(
        Operation::GenerateDataKey,
        &gdk(ENCLAVE_KEY, Some(recipient.clone())),
    );
    assert!(
        json["message"]
            .as_str()
            .unwrap_or_default()
            .contains("RSAES_OAEP_SHA_256")
    );
    refused(
        &h,
        h.call(
            Operation::GenerateDataKey,
            &gdk(ENCLAVE_KEY, Some(recipient)),
        ),
        "ValidationException",
    );
}

#[test]
fn unknown_keys_are_not_found_and_another_key_is_incorrect() {
    let h = Harness::new("keys", enclave_policy(&[]));
    let unknown = "arn:aws:kms:us-east-1:111122223333:key/ffffffff-0000-0000-0000-000000000000";
    refused(
        &h,
        h.call(Operation::GenerateDataKey, &gdk(unknown, None)),
        "NotFoundException",
    );
    refused(
        &h,
        h.call(Operation::GenerateDataKey, &gdk("not-a-key", None)),
        "NotFoundException",
    );
    refused(
        &h,
        h.call(Operation::GenerateDataKey, &gdk("alias/nacre", None)),
        "NotFoundException",
    );

    let (ciphertext, _) = enclave_data_key(&h);
    let (recipient, _) = h.recipient();
    let mut req = decrypt(ciphertext.clone(), Some(recipient));
    req.key_id = Some(OPEN_KEY.into());
    refused(
        &h,
        h.call(Operation::Decrypt, &req),
        "IncorrectKeyException",
    );
    req.key_id = Some(unknown.into());
    refused(&h, h.call(Operation::Decrypt, &req), "NotFoundException");
}

#[test]
fn a_blob_with_one_byte_changed_or_garbage_is_invalid_ciphertext() {
    let h = Harness::new("tamper", enclave_policy(&[]));
    let (ciphertext, _) = enclave_data_key(&h);
    for i in [0, 5, ciphertext.len() / 2, ciphertext.len() - 1] {
        let mut bad = ciphertext.clone();
        bad[i] ^= 0x40;
        let (recipient, _) = h.recipient();
        let mut req = decrypt(bad, Some(recipient));
        req.key_id = None;
        refused(
            &h,
            h.call(Operation::Decrypt, &req),
            "InvalidCiphertextException",
        );
    }
    let (recipient, _) = h.recipient();
    let req = decrypt(b"definitely not a KMS blob".to_vec(), Some(recipient));
    refused(
        &h,
        h.call(Operation::Decrypt, &req),
        "InvalidCiphertextException",
    );
}

#[test]
fn explicit_deny_and_dry_run() {
    let mut policy = enclave_policy(&[]);
    policy["Statement"]
        .as_array_mut()
        .expect("statements")
        .push(serde_json::json!({
            "Sid": "NotForPayroll", "Effect": "Deny", "Principal": "*",
            "Action": "kms:*", "Resource": "*",
            "Condition": {"StringLike": {"kms:EncryptionContext:app": "payroll*"}}
        }));
    let h = Harness::new("deny", policy);
    let (recipient, _) = h.recipient();
    let mut req = gdk(ENCLAVE_KEY, Some(recipient));
    req.encryption_context = context(&[("app", "payroll-eu")]);
    let (_, json) = h.call(Operation::GenerateDataKey, &req);
    assert!(
        json["message"]
            .as_str()
            .unwrap_or_default()
            .contains("explicit deny"),
        "{json}"
    );
    let reason = refused(
        &h,
        h.call(Operation::GenerateDataKey, &req),
        "AccessDeniedException",
    );
    assert!(reason.contains("NotForPayroll"), "{reason}");

    let (recipient, _) = h.recipient();
    let mut req = gdk(ENCLAVE_KEY, Some(recipient));
    req.dry_run = Some(true);
    refused(
        &h,
        h.call(Operation::GenerateDataKey, &req),
        "DryRunOperationException",
    );
}
