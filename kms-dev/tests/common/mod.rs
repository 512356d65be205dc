//! Shared by the integration tests: a stand-in in a temp directory, dev
//! attestation roots, signed calls.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use bytes::Bytes;
use nacre_attestation::{DevSigner, DocumentRequest};
use nacre_kms::call::Endpoint;
use nacre_kms::envelope;
use nacre_kms::recipient::RecipientKey;
use nacre_kms::sigv4::Credentials;
use nacre_kms::wire::{DecryptRequest, GenerateDataKeyRequest, Operation, Recipient};
use nacre_kms_dev::{Config, Credential, KeyConfig, Refusal, StandIn};
use serde::Serialize;

/// The key whose policy requires attestation (image and signer).
pub const ENCLAVE_KEY: &str =
    "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";
/// A key anyone with credentials may use (no conditions).
pub const OPEN_KEY: &str =
    "arn:aws:kms:us-east-1:111122223333:key/0000beef-0000-4000-8000-000000000001";
/// Access key id and secret the stand-in knows.
pub const AKID: &str = "AKIDEXAMPLE";
/// Its secret.
pub const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
/// The region requests are signed for.
pub const REGION: &str = "us-east-1";

/// The enclave image the policy allows (PCR0) and its signer (PCR8).
pub const IMAGE: [u8; 48] = [0x1a; 48];
/// The signing certificate's digest the policy allows.
pub const SIGNER: [u8; 48] = [0x8b; 48];

/// A fresh directory for one test.
pub fn temp_dir(name: &str) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!(
        "nacre-kms-dev-test-{name}-{}-{n}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// The enclave key's policy: only the image `IMAGE` signed by `SIGNER`,
/// plus any extra allowed images.
pub fn enclave_policy(extra_images: &[[u8; 48]]) -> serde_json::Value {
    let mut images = vec![hex::encode(IMAGE)];
    images.extend(extra_images.iter().map(hex::encode));
    serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "Enclave",
            "Effect": "Allow",
            "Principal": {"AWS": "arn:aws:iam::111122223333:role/enclave"},
            "Action": ["kms:Decrypt", "kms:GenerateDataKey"],
            "Resource": "*",
            "Condition": {
                "StringEqualsIgnoreCase": {
                    "kms:RecipientAttestation:ImageSha384": images,
                    "kms:RecipientAttestation:PCR8": hex::encode(SIGNER)
                }
            }
        }]
    })
}

/// A policy allowing everything to everyone.
pub fn open_policy() -> serde_json::Value {
    serde_json::json!({
        "Statement": {"Effect": "Allow", "Principal": "*", "Action": "kms:*", "Resource": "*"}
    })
}

/// Writes `policy` to `dir/name` and returns the `--key` flag for it.
pub fn key_flag(dir: &Path, name: &str, arn: &str, policy: &serde_json::Value) -> String {
    let path = dir.join(name);
    std::fs::write(&path, policy.to_string()).expect("policy file");
    format!("{arn}={}", path.display())
}

/// A stand-in, the dev root it trusts and another root it does not.
pub struct Harness {
    /// The test's directory.
    pub dir: PathBuf,
    /// Signs documents the stand-in trusts.
    pub signer: DevSigner,
    /// Signs documents of another root.
    pub stranger: DevSigner,
    /// The stand-in.
    pub standin: Arc<StandIn>,
    /// Every refusal the stand-in reported.
    pub refusals: Arc<Mutex<Vec<Refusal>>>,
    /// Where requests say they go.
    pub endpoint: Endpoint,
}

impl Harness {
    /// A stand-in with `ENCLAVE_KEY` under `enclave` and `OPEN_KEY` open.
    pub fn new(name: &str, enclave: serde_json::Value) -> Harness {
        let dir = temp_dir(name);
        let signer = DevSigner::open(&dir.join("dev-root")).expect("dev root");
        let stranger = DevSigner::open(&dir.join("other-root")).expect("other root");
        let refusals = Arc::new(Mutex::new(Vec::new()));
        let standin = open(&dir, enclave, refusals.clone());
        Harness {
            dir,
            signer,
            stranger,
            standin,
            refusals,
            endpoint: Endpoint::custom("https://127.0.0.1:4443", REGION).expect("endpoint"),
        }
    }

    /// The same stand-in started again on the same state directory.
    pub fn restart(&mut self) {
        self.standin = open(&self.dir, enclave_policy(&[]), self.refusals.clone());
    }

    /// A document signed by `signer` with PCR0 `image`, PCR8 `signer_pcr`
    /// and `key`'s public key.
    pub fn document(
        &self,
        signer: &DevSigner,
        image: [u8; 48],
        signer_pcr: [u8; 48],
        key: Option<&RecipientKey>,
    ) -> Vec<u8> {
        let pcrs = BTreeMap::from([
            (0, image.to_vec()),
            (1, vec![0x11; 48]),
            (2, vec![0x22; 48]),
            (8, signer_pcr.to_vec()),
        ]);
        signer
            .sign(DocumentRequest {
                pcrs,
                public_key: key.map(RecipientKey::public_key_der),
                ..DocumentRequest::default()
            })
            .expect("sign document")
    }

    /// A Recipient for the allowed image and signer, and its key.
    pub fn recipient(&self) -> (Recipient, RecipientKey) {
        let key = RecipientKey::generate().expect("recipient key");
        let doc = self.document(&self.signer, IMAGE, SIGNER, Some(&key));
        (Recipient::new(doc), key)
    }

    /// Calls `op` signed by the known credentials at `now`.
    pub fn call_at<T: Serialize>(
        &self,
        op: Operation,
        body: &T,
        now: SystemTime,
    ) -> (u16, serde_json::Value) {
        let request = signed(&self.endpoint, op, body, &credentials(), now);
        self.send(request, now)
    }

    /// Calls `op` now.
    pub fn call<T: Serialize>(&self, op: Operation, body: &T) -> (u16, serde_json::Value) {
        self.call_at(op, body, SystemTime::now())
    }

    /// Hands a prepared request to the stand-in.
    pub fn send(&self, request: http::Request<Bytes>, now: SystemTime) -> (u16, serde_json::Value) {
        let response = self.standin.handle_at(request, now);
        let json = serde_json::from_slice(response.body()).expect("answer is JSON");
        (response.status().as_u16(), json)
    }

    /// The last refusal reported.
    pub fn last_refusal(&self) -> Refusal {
        self.refusals
            .lock()
            .expect("refusals")
            .last()
            .cloned()
            .expect("a refusal was reported")
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn open(
    dir: &Path,
    enclave: serde_json::Value,
    refusals: Arc<Mutex<Vec<Refusal>>>,
) -> Arc<StandIn> {
    let root = std::fs::read(dir.join("dev-root/root.pem")).ok();
    let keys = vec![
        KeyConfig::from_flag(&key_flag(dir, "enclave.json", ENCLAVE_KEY, &enclave)).expect("key"),
        KeyConfig::from_flag(&key_flag(dir, "open.json", OPEN_KEY, &open_policy())).expect("key"),
    ];
    StandIn::open(Config {
        state_dir: dir.join("state"),
        attestation_root_pem: root,
        credentials: vec![Credential::new(AKID, SECRET)],
        keys,
        on_refusal: Some(Arc::new(move |r: &Refusal| {
            if let Ok(mut all) = refusals.lock() {
                all.push(r.clone());
            }
        })),
        ..Config::default()
    })
    .expect("stand-in opens")
}

/// The credentials the stand-in knows.
pub fn credentials() -> Credentials {
    Credentials::new(AKID, SECRET.to_string(), None, None)
}

/// A signed request for `op` with `body`.
pub fn signed<T: Serialize>(
    endpoint: &Endpoint,
    op: Operation,
    body: &T,
    credentials: &Credentials,
    now: SystemTime,
) -> http::Request<Bytes> {
    nacre_kms::call::request(endpoint, op, body, credentials, now).expect("signed request")
}

/// The `__type` of an error answer.
pub fn error_name(json: &serde_json::Value) -> &str {
    json["__type"].as_str().unwrap_or("(no __type)")
}

/// Decodes a base64 blob field of an answer.
pub fn blob(json: &serde_json::Value, field: &str) -> Vec<u8> {
    let text = json[field]
        .as_str()
        .unwrap_or_else(|| panic!("no {field} in {json}"));
    base64_decode(text)
}

/// Standard base64 (what KMS blobs are), without another dependency.
pub fn base64_decode(text: &str) -> Vec<u8> {
    let value = serde_json::json!({"CiphertextBlob": text});
    let req: nacre_kms::wire::DecryptRequest = serde_json::from_value(value).expect("base64");
    req.ciphertext_blob
}

/// An encryption context from pairs.
pub fn context(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A GenerateDataKey of an AES-256 key under `key`, context app=billing.
pub fn gdk(key: &str, recipient: Option<Recipient>) -> GenerateDataKeyRequest {
    GenerateDataKeyRequest {
        key_id: key.to_string(),
        encryption_context: context(&[("app", "billing")]),
        key_spec: Some("AES_256".into()),
        recipient,
        ..GenerateDataKeyRequest::default()
    }
}

/// A Decrypt of `blob` naming the enclave key, context app=billing.
pub fn decrypt(blob: Vec<u8>, recipient: Option<Recipient>) -> DecryptRequest {
    DecryptRequest {
        ciphertext_blob: blob,
        encryption_context: context(&[("app", "billing")]),
        key_id: Some(ENCLAVE_KEY.to_string()),
        recipient,
        ..DecryptRequest::default()
    }
}

/// A data key made for the enclave: (blob, plaintext).
pub fn enclave_data_key(h: &Harness) -> (Vec<u8>, Vec<u8>) {
    let (recipient, key) = h.recipient();
    let (status, json) = h.call(
        Operation::GenerateDataKey,
        &gdk(ENCLAVE_KEY, Some(recipient)),
    );
    assert_eq!(status, 200, "{json}");
    let sealed = blob(&json, "CiphertextForRecipient");
    let plain = envelope::open(&sealed, &key).expect("envelope opens");
    (blob(&json, "CiphertextBlob"), plain.expose().to_vec())
}

/// Asserts a refusal named `name` (400, no key material in the answer,
/// reported to the hook) and returns the logged reason.
#[track_caller]
pub fn refused(h: &Harness, answer: (u16, serde_json::Value), name: &str) -> String {
    let (status, json) = answer;
    assert_eq!(status, 400, "{json}");
    assert_eq!(error_name(&json), name, "{json}");
    assert!(json.get("Plaintext").is_none() && json.get("CiphertextForRecipient").is_none());
    let refusal = h.last_refusal();
    assert_eq!(refusal.error, name);
    refusal.reason
}
