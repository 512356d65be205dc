//! A hostile guest and a lying KMS.
//!
//! A guest's attestation document carries the enclave's own measurements:
//! with a public key of the guest's choosing, KMS would wrap the root to
//! the guest. The sealed runtime refuses such keys; an unsealed runtime
//! of the same image (which has no root to lose) shows the attack that
//! refusal stops, end to end against the stand-in.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use nacre_kms::call::{self, Endpoint};
use nacre_kms::envelope;
use nacre_kms::recipient::RecipientKey;
use nacre_kms::sigv4::Credentials;
use nacre_kms::wire::{
    DecryptRequest, DecryptResponse, EncryptionContext, KEY_ENCRYPTION_ALGORITHM, Operation,
    Recipient,
};
use nacre_tests::kms::{ACCESS_KEY, KEY_ARN, SECRET_KEY, bundle};
use nacre_tests::net::HttpsServer;
use nacre_tests::sealed::wait_for_line;

use super::*;

/// The stored root record's ciphertext and the context it was wrapped
/// with (a single enclave's deployment is its `--fqdn`, `localhost`).
fn wrapped_root(world: &World) -> (Vec<u8>, EncryptionContext) {
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(world.store.join("root")).expect("root"))
            .expect("the root record is JSON");
    let ciphertext: Vec<u8> =
        serde_json::from_value(record["ciphertext"].clone()).expect("the ciphertext's bytes");
    let context = EncryptionContext::from([
        ("nacre:deployment".to_string(), "localhost".to_string()),
        ("nacre:purpose".to_string(), "deployment-root".to_string()),
    ]);
    (ciphertext, context)
}

/// What the host can do with a document carrying `key`'s public half:
/// ask the stand-in to Decrypt the root to it, with the parent's
/// credentials. The opened key, or KMS's refusal.
async fn decrypt_to(
    world: &World,
    document: Vec<u8>,
    key: &RecipientKey,
) -> Result<Vec<u8>, String> {
    let (ciphertext, context) = wrapped_root(world);
    let endpoint = Endpoint::custom(
        &format!("https://localhost:{}", world.kms.port),
        "eu-west-1",
    )
    .expect("endpoint");
    let body = DecryptRequest {
        ciphertext_blob: ciphertext,
        encryption_context: context,
        key_id: Some(KEY_ARN.into()),
        encryption_algorithm: None,
        recipient: Some(Recipient {
            key_encryption_algorithm: KEY_ENCRYPTION_ALGORITHM.into(),
            attestation_document: document,
        }),
        grant_tokens: None,
        dry_run: None,
    };
    let creds = Credentials::new(ACCESS_KEY, SECRET_KEY.to_string(), None, None);
    let request = call::request(
        &endpoint,
        Operation::Decrypt,
        &body,
        &creds,
        SystemTime::now(),
    )
    .expect("a signed request");
    let ca =
        reqwest::Certificate::from_pem(&std::fs::read(world.kms.ca()).expect("CA")).expect("CA");
    let client = reqwest::Client::builder()
        .add_root_certificate(ca)
        .build()
        .expect("client");
    let (parts, body) = request.into_parts();
    let mut r = client.post(format!("https://localhost:{}/", world.kms.port));
    for (k, v) in &parts.headers {
        r = r.header(k, v);
    }
    let answer = r.body(body).send().await.expect("the stand-in answers");
    let status = answer.status();
    let text = answer.bytes().await.expect("body");
    let answer: DecryptResponse = call::response(status, &text).map_err(|e| e.to_string())?;
    let cms = answer
        .ciphertext_for_recipient
        .ok_or("no CiphertextForRecipient")?;
    let root = envelope::open(&cms, key).map_err(|e| e.to_string())?;
    Ok(root.expose().to_vec())
}

/// A guest's document carries the enclave's measurements, and KMS decides
/// on measurements alone: a document shaped as a guest's (this image's
/// PCRs, a guest binding) with an RSA key gets the root out of KMS with the
/// host's credentials. So every runtime, sealed or not, refuses a guest
/// any key but a raw one; the root never crossed the sealed enclave's
/// links.
#[tokio::test(flavor = "multi_thread")]
async fn a_guest_cannot_have_kms_wrap_the_root_to_itself() {
    let world = World::new(None);
    let parent = world.parent().await;
    let sealed = parent.start_runtime(None, &world.flags(&parent, &[]));
    let info = sealed.deploy_ok("a", &guest("attest-guest"), "").await;
    until_written(&sealed, 0.0).await;
    let key = RecipientKey::generate().expect("an RSA key");
    let rsa = hex::encode(key.public_key_der());
    // The same image without --kms-key, under the same dev root: a
    // signer's key policy would trust it too.
    let unsealed = Runtime::start(&["--dev-root", &world.dev_root.display().to_string()]);
    unsealed.deploy_ok("a", &guest("attest-guest"), "").await;
    for rt in [&sealed, &unsealed] {
        let (status, body) = rt.get(&format!("/a/keyed?{rsa}")).await;
        assert_eq!(status, 500, "{body}");
        assert!(body.contains("not a raw key"), "{body}");
        let (status, body) = rt.get(&format!("/a/keyed?{}", "ab".repeat(32))).await;
        assert_eq!(status, 200, "a raw key: {body}");
    }

    // What a guest's document with that key would have been.
    let pcr0 = hex::decode(pcr0(&bin("nacre-runtime"))).expect("hex");
    let mut pcrs: std::collections::BTreeMap<u32, Vec<u8>> =
        (1..16).map(|i| (i, vec![0u8; 48])).collect();
    pcrs.insert(0, pcr0);
    let guest_sha: [u8; 32] = hex::decode(&info.sha256)
        .expect("hex")
        .try_into()
        .expect("32 bytes");
    let document = nacre_attestation::DevSigner::open(&world.dev_root)
        .expect("dev root")
        .sign(nacre_attestation::DocumentRequest {
            pcrs,
            public_key: Some(key.public_key_der()),
            user_data: Some(
                nacre_attestation::GuestBinding {
                    guest_sha256: guest_sha,
                    data: None,
                }
                .to_bytes(),
            ),
            nonce: None,
        })
        .expect("a document");
    let root = decrypt_to(&world, document, &key)
        .await
        .expect("KMS wraps the root to a guest-shaped document's key");
    assert_eq!(root.len(), 32);
    // It is the root: it opens the newest snapshot.
    let newest = stored(&world.store, "snapshots").pop().expect("a snapshot");
    let seq: u64 = newest
        .rsplit('/')
        .next()
        .and_then(|s| s.parse().ok())
        .expect("seq");
    let sealed_bytes = std::fs::read(world.store.join(&newest)).expect("snapshot");
    let r = nacre_runtime::persist::keys::Root::from_bytes(&root).expect("32 bytes");
    let manifest = nacre_runtime::persist::snapshot::Manifest::open(
        &r,
        "localhost",
        (&newest, seq),
        &sealed_bytes,
    )
    .expect("the root opens the deployment's snapshot");
    let payload = nacre_sync::seal::Payload::decode(&manifest.payload).expect("key material");

    // The host's links of the sealed enclave never showed the root, the
    // TLS key or the deployment key.
    let mut seen = parent.control.recorded();
    seen.extend(parent.egress.recorded());
    assert!(
        seen.len() > 10_000,
        "the links carried {} bytes",
        seen.len()
    );
    for (what, secret) in [
        ("the root", &root[..]),
        ("the TLS key", &payload.tls_key[16..48]),
        ("the deployment key", &payload.deployment_key[..]),
    ] {
        assert!(
            !contains(&seen, secret),
            "{what} crossed the host in the clear"
        );
    }

    // The same from a debug-mode enclave (every image PCR zero), whose
    // memory the host reads: the policy names a real PCR0, KMS refuses.
    let other = RecipientKey::generate().expect("an RSA key");
    let forged = nacre_attestation::DevSigner::open(&world.dev_root)
        .expect("dev root")
        .sign(nacre_attestation::DocumentRequest {
            pcrs: (0..16).map(|i| (i, vec![0u8; 48])).collect(),
            public_key: Some(other.public_key_der()),
            ..Default::default()
        })
        .expect("a document");
    let refused = decrypt_to(&world, forged, &other).await;
    assert!(
        refused
            .as_ref()
            .is_err_and(|e| e.contains("AccessDeniedException")),
        "a debug-mode image: {refused:?}"
    );
}

/// A KMS (or a host impersonating one with a certificate the enclave
/// trusts) whose answers do not open: garbage, a truncated envelope, an
/// envelope for another key, a key of the wrong length. Each is refused
/// with its reason; nothing starts.
#[tokio::test(flavor = "multi_thread")]
async fn kms_answers_that_do_not_open_are_refused() {
    let world = World::new(None);
    let parent = world.parent().await;
    let rt = parent.start_runtime(None, &world.flags(&parent, &[]));
    rt.deploy_ok("hello", &guest("hello"), "").await;
    until_written(&rt, 0.0).await;
    drop(rt);

    let root_pem = std::fs::read(world.dev_root.join("root.pem")).expect("dev root");
    let calls = Arc::new(AtomicUsize::new(0));
    let fake = HttpsServer::start(&["http/1.1"], {
        let calls = calls.clone();
        move |req: hyper::Request<hyper::body::Incoming>| {
            let (calls, root_pem) = (calls.clone(), root_pem.clone());
            async move {
                let body = req
                    .into_body()
                    .collect()
                    .await
                    .map(|b| b.to_bytes())
                    .unwrap_or_default();
                let n = calls.fetch_add(1, Ordering::Relaxed);
                let answer = bad_answer(n, &body, &root_pem);
                hyper::Response::builder()
                    .status(200)
                    .header("content-type", "application/x-amz-json-1.1")
                    .body(Full::new(Bytes::from(answer)))
                    .expect("response")
            }
        }
    })
    .await;
    let ca = bundle(&[world.kms.ca(), fake.pki.dir.join("ca.pem")]);
    let faked = Parent::start_with(
        &world.kms,
        &world.store,
        &[
            "--egress-allow-private-to".into(),
            format!("localhost:{}", fake.port),
        ],
    )
    .await;
    let mut flags = faked.flags(&world.kms, &world.dev_root);
    // A host with a certificate the enclave trusts for KMS: here, one it
    // was told to trust (--kms-ca).
    flags.extend([
        "--kms-endpoint".to_string(),
        format!("https://localhost:{}", fake.port),
        "--kms-ca".into(),
        ca.display().to_string(),
    ]);

    let mut child = faked.spawn_runtime(None, &flags);
    for why in [
        "malformed KMS DecryptResponse",
        "truncated",
        "another key",
        "32",
    ] {
        let line = wait_for_line(
            &mut child,
            Duration::from_secs(40),
            "KMS's answer to Decrypt",
        );
        assert!(
            line.contains(why) || child.output().contains(why),
            "{why}: {line}"
        );
    }
    assert!(!faked.is_served(), "it serves: {}", child.output());
}

/// Answer `n` of the fake KMS to `request`: each one wrong another way.
fn bad_answer(n: usize, request: &[u8], root_pem: &[u8]) -> Vec<u8> {
    let request: serde_json::Value = serde_json::from_slice(request).unwrap_or_default();
    let document = request["Recipient"]["AttestationDocument"]
        .as_str()
        .and_then(|b64| {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD.decode(b64).ok()
        })
        .unwrap_or_default();
    let public_key = nacre_attestation::Verifier::with_root_pem(root_pem)
        .ok()
        .and_then(|v| v.verify(&document).ok())
        .and_then(|v| v.document.public_key)
        .unwrap_or_default();
    let envelope_for = |key: &[u8], plain: &[u8]| envelope::seal(key, plain).unwrap_or_default();
    let cms = match n % 4 {
        0 => return b"{\"this is\": not KMS JSON".to_vec(),
        1 => {
            let whole = envelope_for(&public_key, &[7u8; 32]);
            whole[..whole.len() / 2].to_vec()
        }
        2 => {
            let stranger = RecipientKey::generate().expect("key");
            envelope_for(&stranger.public_key_der(), &[7u8; 32])
        }
        _ => envelope_for(&public_key, &[7u8; 31]),
    };
    use base64::Engine as _;
    serde_json::json!({
        "KeyId": KEY_ARN,
        "CiphertextForRecipient": base64::engine::general_purpose::STANDARD.encode(cms),
        "EncryptionAlgorithm": "SYMMETRIC_DEFAULT",
    })
    .to_string()
    .into_bytes()
}
