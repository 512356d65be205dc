//! The `nacre-kms-dev` binary over a real socket: its `listening` line,
//! HTTPS with its own CA (HTTP/2 and HTTP/1.1), a refusal line on stdout,
//! and its keys surviving a restart.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, SystemTime};

use common::*;
use nacre_attestation::DevSigner;
use nacre_kms::call::{Endpoint, response};
use nacre_kms::envelope;
use nacre_kms::recipient::RecipientKey;
use nacre_kms::wire::{
    DecryptRequest, DecryptResponse, GenerateDataKeyRequest, GenerateDataKeyResponse, Operation,
    Recipient,
};

/// The running binary; killed when dropped.
struct Running {
    child: Child,
    lines: Receiver<String>,
    url: String,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Running {
    /// The next stdout line, within `limit`.
    fn line(&self, limit: Duration) -> Option<String> {
        self.lines.recv_timeout(limit).ok()
    }
}

fn start(dir: &Path, keys: &[String]) -> Running {
    let stderr = std::fs::File::create(dir.join("stderr.log")).expect("stderr log");
    let mut command = Command::new(env!("CARGO_BIN_EXE_nacre-kms-dev"));
    command
        .args(["--listen", "127.0.0.1:0", "--state"])
        .arg(dir.join("state"))
        .arg("--attestation-root")
        .arg(dir.join("dev-root/root.pem"))
        .args(["--credentials", &format!("{AKID}:{SECRET}")])
        .env_remove("NACRE_KMS_DEV_CREDENTIALS")
        .stdout(Stdio::piped())
        .stderr(stderr);
    for k in keys {
        command.args(["--key", k]);
    }
    let mut child = command.spawn().expect("start nacre-kms-dev");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, lines) = channel();
    // Drain stdout for the whole run: a full pipe would stall the server.
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut running = Running {
        child,
        lines,
        url: String::new(),
    };
    let first = running.line(Duration::from_secs(60)).unwrap_or_else(|| {
        let log = std::fs::read_to_string(dir.join("stderr.log")).unwrap_or_default();
        panic!("no listening line; stderr:\n{log}")
    });
    let url = first
        .strip_prefix("listening ")
        .unwrap_or_else(|| panic!("first line is {first:?}"));
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    running.url = url.to_string();
    running
}

fn client(ca_pem: &[u8], http1: bool) -> reqwest::Client {
    let ca = reqwest::Certificate::from_pem(ca_pem).expect("CA");
    let builder = reqwest::Client::builder()
        .add_root_certificate(ca)
        .timeout(Duration::from_secs(30));
    let builder = if http1 { builder.http1_only() } else { builder };
    builder.build().expect("client")
}

/// Sends a request built by `nacre_kms::call::request` and reads the
/// answer with `nacre_kms::call::response`.
async fn call<Req: serde::Serialize, Resp: serde::de::DeserializeOwned>(
    client: &reqwest::Client,
    url: &str,
    op: Operation,
    body: &Req,
) -> Result<Resp, nacre_kms::call::CallError> {
    let endpoint = Endpoint::custom(url, REGION).expect("endpoint");
    let request = signed(&endpoint, op, body, &credentials(), SystemTime::now());
    let (parts, body) = request.into_parts();
    let answer = client
        .post(endpoint.url())
        .headers(parts.headers)
        .body(body)
        .send()
        .await
        .expect("send");
    let status = answer.status();
    let bytes = answer.bytes().await.expect("body");
    response(status, &bytes)
}

#[tokio::test]
async fn the_binary_serves_https_refuses_with_a_line_and_keeps_keys_across_restarts() {
    let dir = temp_dir("binary");
    let signer = DevSigner::open(&dir.join("dev-root")).expect("dev root");
    let keys = [
        key_flag(&dir, "enclave.json", ENCLAVE_KEY, &enclave_policy(&[])),
        key_flag(&dir, "open.json", OPEN_KEY, &open_policy()),
    ];
    let running = start(&dir, &keys);
    let ca = std::fs::read(dir.join("state/tls/ca.pem")).expect("the CA is in --state");

    // GenerateDataKey with a Recipient over HTTP/2.
    let recipient_key = RecipientKey::generate().expect("key");
    let doc = signer
        .sign(nacre_attestation::DocumentRequest {
            pcrs: [(0, IMAGE.to_vec()), (8, SIGNER.to_vec())].into(),
            public_key: Some(recipient_key.public_key_der()),
            ..Default::default()
        })
        .expect("document");
    let h2 = client(&ca, false);
    let made: GenerateDataKeyResponse = call(
        &h2,
        &running.url,
        Operation::GenerateDataKey,
        &GenerateDataKeyRequest {
            key_id: ENCLAVE_KEY.into(),
            key_spec: Some("AES_256".into()),
            recipient: Some(Recipient::new(doc.clone())),
            ..Default::default()
        },
    )
    .await
    .expect("GenerateDataKey");
    assert!(made.plaintext.is_none());
    let sealed = made
        .ciphertext_for_recipient
        .expect("CiphertextForRecipient");
    let data_key = envelope::open(&sealed, &recipient_key).expect("open");

    // A refusal, over HTTP/1.1: the error name comes back and stdout says why.
    let h1 = client(&ca, true);
    let refused = call::<_, DecryptResponse>(
        &h1,
        &running.url,
        Operation::Decrypt,
        &DecryptRequest {
            ciphertext_blob: made.ciphertext_blob.clone(),
            ..Default::default()
        },
    )
    .await;
    match refused {
        Err(nacre_kms::call::CallError::Kms { code, .. }) => {
            assert_eq!(code.name(), "AccessDeniedException");
        }
        other => panic!("expected AccessDeniedException, got {other:?}"),
    }
    let line = running
        .line(Duration::from_secs(10))
        .expect("a refusal line");
    assert!(line.starts_with("refused Decrypt"), "{line}");
    assert!(line.contains("AccessDeniedException"), "{line}");
    assert!(line.contains("no valid attestation document"), "{line}");
    drop(running);

    // Restarted on the same state: same CA, same key material.
    let running = start(&dir, &keys);
    assert_eq!(std::fs::read(dir.join("state/tls/ca.pem")).expect("CA"), ca);
    let opened: DecryptResponse = call(
        &h1,
        &running.url,
        Operation::Decrypt,
        &DecryptRequest {
            ciphertext_blob: made.ciphertext_blob,
            key_id: Some(ENCLAVE_KEY.into()),
            recipient: Some(Recipient::new(doc)),
            ..Default::default()
        },
    )
    .await
    .expect("Decrypt after restart");
    let again = envelope::open(
        &opened
            .ciphertext_for_recipient
            .expect("CiphertextForRecipient"),
        &recipient_key,
    )
    .expect("open");
    assert_eq!(again, data_key);
    drop(running);
    let _ = std::fs::remove_dir_all(&dir);
}

/// SigV4 made by a client nobody here wrote: the system's curl
/// (`--aws-sigv4`) over HTTP/1.1 and HTTP/2. Signed with the right secret,
/// the stand-in answers the open key's data key; with another secret, it
/// refuses with KMS's `InvalidSignatureException`.
#[test]
fn curls_own_sigv4_is_checked_as_kms_checks_it() {
    let dir = temp_dir("curl-sigv4");
    DevSigner::open(&dir.join("dev-root")).expect("dev root");
    let keys = [key_flag(&dir, "open.json", OPEN_KEY, &open_policy())];
    let running = start(&dir, &keys);
    let ca = dir.join("state/tls/ca.pem");
    let curl = |version: &str, secret: &str| -> String {
        let out = Command::new("curl")
            .args(["-sS", version, "--cacert"])
            .arg(&ca)
            .args(["--aws-sigv4", "aws:amz:eu-west-1:kms", "--user"])
            .arg(format!("{AKID}:{secret}"))
            .args(["-H", "X-Amz-Target: TrentService.GenerateDataKey"])
            .args(["-H", "Content-Type: application/x-amz-json-1.1"])
            .args([
                "-d",
                &format!(r#"{{"KeyId":"{OPEN_KEY}","KeySpec":"AES_256"}}"#),
            ])
            .args(["-w", "\n%{http_version} %{http_code}"])
            .arg(running.url.replace("127.0.0.1", "localhost") + "/")
            .output()
            .expect("curl runs (apt-get install curl)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    for version in ["--http1.1", "--http2"] {
        let answer = curl(version, SECRET);
        assert!(answer.contains("\"Plaintext\""), "{version}: {answer}");
        assert!(answer.contains("\"CiphertextBlob\""), "{version}: {answer}");
        assert!(answer.ends_with(" 200"), "{version}: {answer}");
    }
    let refused = curl("--http2", "not-the-secret");
    assert!(refused.contains("InvalidSignatureException"), "{refused}");
    assert!(refused.ends_with(" 400"), "{refused}");
}
