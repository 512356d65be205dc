use std::collections::BTreeMap;

use super::*;

const KEY: &str = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";

fn policy(json: serde_json::Value) -> Policy {
    Policy::parse(&json.to_string()).expect("policy parses")
}

fn attested(pcr0: &[u8], pcr8: &[u8]) -> RequestContext {
    let mut ctx = RequestContext::new();
    ctx.add_attestation(&BTreeMap::from([(0, pcr0.to_vec()), (8, pcr8.to_vec())]));
    ctx
}

fn allow_image(op: &str, values: serde_json::Value) -> Policy {
    policy(serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "Enclave",
            "Effect": "Allow",
            "Principal": {"AWS": "arn:aws:iam::111122223333:role/enclave"},
            "Action": ["kms:Decrypt", "kms:GenerateDataKey"],
            "Resource": "*",
            "Condition": {op: {"kms:RecipientAttestation:ImageSha384": values}}
        }]
    }))
}

#[test]
fn allow_with_matching_image_and_default_deny_otherwise() {
    let p = allow_image("StringEquals", serde_json::json!(hex::encode([7u8; 48])));
    assert_eq!(
        p.evaluate("kms:Decrypt", KEY, &attested(&[7; 48], &[1; 48])),
        Decision::Allow
    );
    // Another image: refused, and the reason names what the document had.
    let Decision::ImplicitDeny { reasons } =
        p.evaluate("kms:Decrypt", KEY, &attested(&[9; 48], &[1; 48]))
    else {
        panic!("another image was allowed");
    };
    assert!(
        reasons[0].contains(&format!("PCR0 {}", hex::encode([9u8; 48]))),
        "{reasons:?}"
    );
    assert!(reasons[0].contains("is not in the policy's kms:RecipientAttestation:ImageSha384"));
    // No attestation at all: the key is absent, so the condition is false.
    let Decision::ImplicitDeny { reasons } = p.evaluate("kms:Decrypt", KEY, &RequestContext::new())
    else {
        panic!("a call without attestation was allowed");
    };
    assert!(
        reasons[0].contains("no valid attestation document"),
        "{reasons:?}"
    );
    // An action the statement does not name.
    assert!(matches!(
        p.evaluate("kms:Encrypt", KEY, &attested(&[7; 48], &[1; 48])),
        Decision::ImplicitDeny { .. }
    ));
}

#[test]
fn debug_image_is_named_in_the_reason_and_allowed_when_listed() {
    let p = allow_image("StringEquals", serde_json::json!(hex::encode([7u8; 48])));
    let Decision::ImplicitDeny { reasons } =
        p.evaluate("kms:Decrypt", KEY, &attested(&[0; 48], &[0; 48]))
    else {
        panic!("debug image allowed");
    };
    assert!(
        reasons[0].contains("debug-mode image: PCR0 all zeros"),
        "{reasons:?}"
    );
    let p = allow_image(
        "StringEquals",
        serde_json::json!([hex::encode([7u8; 48]), hex::encode([0u8; 48])]),
    );
    assert_eq!(
        p.evaluate("kms:Decrypt", KEY, &attested(&[0; 48], &[0; 48])),
        Decision::Allow
    );
}

#[test]
fn explicit_deny_wins_over_allow() {
    let p = policy(serde_json::json!({
        "Statement": [
            {"Effect": "Allow", "Principal": "*", "Action": "kms:*", "Resource": "*"},
            {"Sid": "NoPlainDecrypt", "Effect": "Deny", "Principal": "*",
             "Action": "kms:Decrypt", "Resource": "*",
             "Condition": {"Null": {"kms:RecipientAttestation:ImageSha384": "true"}}}
        ]
    }));
    assert_eq!(
        p.evaluate("kms:Decrypt", KEY, &RequestContext::new()),
        Decision::ExplicitDeny {
            statement: "\"NoPlainDecrypt\"".into()
        }
    );
    // With attestation the Deny's condition is false, and the Allow holds.
    assert_eq!(
        p.evaluate("kms:Decrypt", KEY, &attested(&[3; 48], &[3; 48])),
        Decision::Allow
    );
    // GenerateDataKey is not denied.
    assert_eq!(
        p.evaluate("kms:GenerateDataKey", KEY, &RequestContext::new()),
        Decision::Allow
    );
}

#[test]
fn if_exists_passes_when_the_key_is_absent_only() {
    let p = allow_image(
        "StringEqualsIfExists",
        serde_json::json!(hex::encode([7u8; 48])),
    );
    assert_eq!(
        p.evaluate("kms:Decrypt", KEY, &RequestContext::new()),
        Decision::Allow
    );
    assert_eq!(
        p.evaluate("kms:Decrypt", KEY, &attested(&[7; 48], &[0; 48])),
        Decision::Allow
    );
    assert!(matches!(
        p.evaluate("kms:Decrypt", KEY, &attested(&[8; 48], &[0; 48])),
        Decision::ImplicitDeny { .. }
    ));
}

#[test]
fn string_like_wildcards_and_list_values() {
    let p = policy(serde_json::json!({
        "Statement": {
            "Effect": "Allow", "Principal": "*", "Action": "kms:Gen*", "Resource": "*",
            "Condition": {"StringLike": {"kms:EncryptionContext:app": ["billing-*", "a?c"]}}
        }
    }));
    let ctx = |app: &str| {
        let mut c = RequestContext::new();
        c.add_encryption_context(&BTreeMap::from([("app".to_string(), app.to_string())]));
        c
    };
    for ok in ["billing-eu", "billing-", "abc", "aXc"] {
        assert_eq!(
            p.evaluate("kms:GenerateDataKey", KEY, &ctx(ok)),
            Decision::Allow,
            "{ok}"
        );
    }
    for no in ["billing", "ac", "abcd", "Billing-eu"] {
        assert!(
            matches!(
                p.evaluate("kms:GenerateDataKey", KEY, &ctx(no)),
                Decision::ImplicitDeny { .. }
            ),
            "{no}"
        );
    }
    // Actions compare without case; "kms:Gen*" does not cover Decrypt.
    assert_eq!(
        p.evaluate("KMS:generatedatakey", KEY, &ctx("abc")),
        Decision::Allow
    );
    assert!(matches!(
        p.evaluate("kms:Decrypt", KEY, &ctx("abc")),
        Decision::ImplicitDeny { .. }
    ));
}

#[test]
fn hex_case_matters_for_string_equals_but_not_ignore_case() {
    let upper = hex::encode_upper([0xabu8; 48]);
    let p = allow_image("StringEqualsIgnoreCase", serde_json::json!(upper));
    assert!(p.warnings().is_empty());
    assert_eq!(
        p.evaluate("kms:Decrypt", KEY, &attested(&[0xab; 48], &[0; 48])),
        Decision::Allow
    );
    let p = allow_image("StringEquals", serde_json::json!(upper));
    assert_eq!(
        p.warnings().len(),
        1,
        "uppercase PCR under StringEquals warns"
    );
    assert!(matches!(
        p.evaluate("kms:Decrypt", KEY, &attested(&[0xab; 48], &[0; 48])),
        Decision::ImplicitDeny { .. }
    ));
}

#[test]
fn pcr8_and_several_conditions_are_all_required() {
    let p = policy(serde_json::json!({
        "Statement": [{
            "Effect": "Allow", "Principal": "*", "Action": "kms:Decrypt", "Resource": KEY,
            "Condition": {
                "StringEqualsIgnoreCase": {"kms:RecipientAttestation:PCR8": hex::encode([8u8; 48])},
                "StringEquals": {"kms:EncryptionContext:app": "nacre"}
            }
        }]
    }));
    let mut ctx = attested(&[1; 48], &[8; 48]);
    ctx.add_encryption_context(&BTreeMap::from([("app".into(), "nacre".into())]));
    assert_eq!(p.evaluate("kms:Decrypt", KEY, &ctx), Decision::Allow);
    // Another signer (PCR8).
    let mut other = attested(&[1; 48], &[9; 48]);
    other.add_encryption_context(&BTreeMap::from([("app".into(), "nacre".into())]));
    let Decision::ImplicitDeny { reasons } = p.evaluate("kms:Decrypt", KEY, &other) else {
        panic!("another signer allowed");
    };
    assert!(reasons[0].contains("PCR8 "), "{reasons:?}");
    // Right PCR8, no context.
    assert!(matches!(
        p.evaluate("kms:Decrypt", KEY, &attested(&[1; 48], &[8; 48])),
        Decision::ImplicitDeny { .. }
    ));
    // Resource names another key.
    assert!(matches!(
        p.evaluate(
            "kms:Decrypt",
            "arn:aws:kms:us-east-1:111122223333:key/other",
            &ctx
        ),
        Decision::ImplicitDeny { .. }
    ));
}

#[test]
fn multi_valued_context_keys() {
    let p = policy(serde_json::json!({
        "Statement": [{
            "Effect": "Allow", "Principal": "*", "Action": "kms:*", "Resource": "*",
            "Condition": {"ForAllValues:StringEquals": {"kms:EncryptionContextKeys": ["app", "env"]}}
        }]
    }));
    let ctx = |keys: &[&str]| {
        let mut c = RequestContext::new();
        c.add_encryption_context(&keys.iter().map(|k| (k.to_string(), "v".into())).collect());
        c
    };
    assert_eq!(
        p.evaluate("kms:Decrypt", KEY, &ctx(&["app"])),
        Decision::Allow
    );
    assert_eq!(
        p.evaluate("kms:Decrypt", KEY, &ctx(&["app", "env"])),
        Decision::Allow
    );
    assert!(matches!(
        p.evaluate("kms:Decrypt", KEY, &ctx(&["app", "other"])),
        Decision::ImplicitDeny { .. }
    ));
}

#[test]
fn negated_operators() {
    let p = allow_image("StringNotEquals", serde_json::json!(hex::encode([0u8; 48])));
    assert_eq!(
        p.evaluate("kms:Decrypt", KEY, &attested(&[5; 48], &[0; 48])),
        Decision::Allow
    );
    assert!(matches!(
        p.evaluate("kms:Decrypt", KEY, &attested(&[0; 48], &[0; 48])),
        Decision::ImplicitDeny { .. }
    ));
}

#[test]
fn malformed_or_unsupported_policies_are_refused() {
    let bad = [
        serde_json::json!([]),
        serde_json::json!({"Version": "2012-10-17"}),
        serde_json::json!({"Statement": [{"Effect": "Permit", "Principal": "*", "Action": "kms:*", "Resource": "*"}]}),
        serde_json::json!({"Statement": [{"Effect": "Allow", "Action": "kms:*", "Resource": "*"}]}),
        serde_json::json!({"Statement": [{"Effect": "Allow", "Principal": "*", "Resource": "*"}]}),
        serde_json::json!({"Statement": [{"Effect": "Allow", "Principal": "*", "NotAction": "kms:Encrypt", "Action": "kms:*", "Resource": "*"}]}),
        serde_json::json!({"Statement": [{"Effect": "Allow", "Principal": "*", "Action": "kms:*", "Resource": "*",
            "Condition": {"NumericLessThan": {"kms:GrantConstraintType": "1"}}}]}),
        serde_json::json!({"Statement": [{"Effect": "Allow", "Principal": "*", "Action": "kms:*", "Resource": "*",
            "Condition": {"StringEquals": {"kms:EncryptionContext:a": {"x": 1}}}}]}),
        serde_json::json!({"Statement": [{"Effect": "Allow", "Principal": "*", "Action": "kms:*", "Resource": "*",
            "Condition": {"StringEquals": {"kms:EncryptionContext:a": []}}}]}),
    ];
    for doc in bad {
        assert!(Policy::parse(&doc.to_string()).is_err(), "accepted {doc}");
    }
    assert!(Policy::parse("{not json").is_err());
}

#[test]
fn glob_edge_cases() {
    use super::condition::glob;
    assert!(glob("*", "", false));
    assert!(glob("a*b*c", "aXXbYYc", false));
    assert!(!glob("a*b*c", "aXXbYY", false));
    assert!(glob("**", "anything", false));
    assert!(!glob("?", "", false));
    assert!(glob("kms:*", "KMS:Decrypt", true));
    // A long adversarial input finishes (no exponential backtracking).
    let value = "a".repeat(10_000);
    assert!(!glob(&format!("{}b", "*a".repeat(50)), &value, false));
}
