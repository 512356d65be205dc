//! Interop with the system `openssl`: envelopes `openssl cms -encrypt`
//! makes (DER, and BER with `-stream`: indefinite lengths, chunked
//! content) open with a `RecipientKey`, and `seal`'s envelopes decrypt
//! with `openssl cms -decrypt`.
//!
//! These tests need `openssl` on the PATH and fail, saying so, without it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use nacre_kms::envelope::{EnvelopeError, open, seal};
use nacre_kms::recipient::RecipientKey;

/// The options that make `openssl cms` use KMS's algorithms.
const KMS_OPTIONS: [&str; 7] = [
    "-keyopt",
    "rsa_padding_mode:oaep",
    "-keyopt",
    "rsa_oaep_md:sha256",
    "-keyopt",
    "rsa_mgf1_md:sha256",
    "-aes-256-cbc",
];

fn openssl(args: &[&str]) -> Output {
    let output = Command::new("openssl")
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "could not run the system `openssl` ({e}); the CMS interop tests need it: \
             install OpenSSL 3 (e.g. `apt-get install openssl`)"
            )
        });
    assert!(
        output.status.success(),
        "openssl {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// An OpenSSL RSA key with a self-signed certificate, loaded into a
/// `RecipientKey` from PKCS#8.
struct Recipient {
    key_pem: PathBuf,
    cert_pem: PathBuf,
    key: RecipientKey,
}

fn recipient(dir: &Path, name: &str, bits: u32) -> Recipient {
    let path = |ext: &str| dir.join(format!("{name}.{ext}"));
    let (key_pem, key_der, cert_pem) = (path("key.pem"), path("key.der"), path("cert.pem"));
    let text = |p: &Path| p.to_str().expect("utf-8 temp path").to_owned();
    let bits_opt = format!("rsa_keygen_bits:{bits}");
    openssl(&[
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        &bits_opt,
        "-out",
        &text(&key_pem),
    ]);
    openssl(&[
        "pkcs8",
        "-topk8",
        "-nocrypt",
        "-in",
        &text(&key_pem),
        "-outform",
        "DER",
        "-out",
        &text(&key_der),
    ]);
    openssl(&[
        "req",
        "-new",
        "-x509",
        "-key",
        &text(&key_pem),
        "-subj",
        "/CN=nacre-kms-test",
        "-days",
        "1",
        "-out",
        &text(&cert_pem),
    ]);
    let pkcs8 = std::fs::read(&key_der).expect("read PKCS#8");
    let key = RecipientKey::from_pkcs8_der(&pkcs8).unwrap_or_else(|e| panic!("{name}: {e}"));
    Recipient {
        key_pem,
        cert_pem,
        key,
    }
}

fn path_text(path: &Path) -> &str {
    path.to_str().expect("utf-8 temp path")
}

/// `openssl cms -encrypt` of `plaintext` to `recipients`, with `extra` options.
fn openssl_encrypt(
    dir: &Path,
    plaintext: &[u8],
    recipients: &[&Recipient],
    extra: &[&str],
) -> Vec<u8> {
    let input = dir.join("plaintext.bin");
    let output = dir.join("envelope.der");
    std::fs::write(&input, plaintext).expect("write plaintext");
    let mut args = vec![
        "cms",
        "-encrypt",
        "-binary",
        "-outform",
        "DER",
        "-in",
        path_text(&input),
    ];
    args.extend(["-out", path_text(&output)]);
    for recipient in recipients {
        args.extend(["-recip", path_text(&recipient.cert_pem)]);
        args.extend(KMS_OPTIONS);
    }
    args.extend(extra);
    openssl(&args);
    std::fs::read(&output).expect("read envelope")
}

fn data_key() -> Vec<u8> {
    (0u8..32).map(|i| i.wrapping_mul(37) ^ 0x5a).collect()
}

#[test]
fn the_certificate_holds_the_recipient_keys_public_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    let recipient = recipient(dir.path(), "a", 2048);
    let pub_pem = dir.path().join("pub.pem");
    let pub_der = dir.path().join("pub.der");
    let cert = path_text(&recipient.cert_pem);
    let pem = openssl(&["x509", "-in", cert, "-pubkey", "-noout"]).stdout;
    std::fs::write(&pub_pem, pem).expect("write");
    openssl(&[
        "pkey",
        "-pubin",
        "-in",
        path_text(&pub_pem),
        "-outform",
        "DER",
        "-out",
        path_text(&pub_der),
    ]);
    assert_eq!(
        std::fs::read(&pub_der).expect("read"),
        recipient.key.public_key_der()
    );
}

#[test]
fn opens_openssl_der_envelopes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let recipient = recipient(dir.path(), "a", 2048);
    let envelope = openssl_encrypt(dir.path(), &data_key(), &[&recipient], &[]);
    assert_eq!(envelope[1] & 0x80, 0x80, "definite long-form length (DER)");
    assert_ne!(envelope[1], 0x80);
    let opened = open(&envelope, &recipient.key).expect("opens OpenSSL's DER envelope");
    assert_eq!(opened.expose(), data_key().as_slice());
}

#[test]
fn opens_openssl_streamed_ber_envelopes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let recipient = recipient(dir.path(), "a", 2048);
    // Large enough for OpenSSL to write several content chunks.
    let plaintext: Vec<u8> = (0..10_000u32).map(|i| (i % 253) as u8).collect();
    let envelope = openssl_encrypt(dir.path(), &plaintext, &[&recipient], &["-stream"]);
    assert_eq!(envelope[..2], [0x30, 0x80], "indefinite-length ContentInfo");
    let chunk_header = [0x04, 0x82, 0x10, 0x00]; // OCTET STRING of 4096 bytes
    assert!(
        envelope.windows(4).any(|w| w == chunk_header),
        "content in chunks"
    );
    let opened = open(&envelope, &recipient.key).expect("opens OpenSSL's BER envelope");
    assert_eq!(opened.expose(), plaintext.as_slice());

    let small = openssl_encrypt(dir.path(), &data_key(), &[&recipient], &["-stream"]);
    assert_eq!(
        open(&small, &recipient.key).expect("opens").expose(),
        data_key().as_slice()
    );
}

#[test]
fn refuses_openssl_envelopes_with_other_shapes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let a = recipient(dir.path(), "a", 2048);
    let b = recipient(dir.path(), "b", 2048);
    let two = openssl_encrypt(dir.path(), &data_key(), &[&a, &b], &[]);
    let result = open(&two, &a.key);
    assert!(
        matches!(result, Err(EnvelopeError::RecipientCount { count: 2 })),
        "{result:?}"
    );

    let for_b = openssl_encrypt(dir.path(), &data_key(), &[&b], &[]);
    assert!(matches!(
        open(&for_b, &a.key),
        Err(EnvelopeError::KeyDecrypt)
    ));

    let aes128 = openssl_encrypt(dir.path(), &data_key(), &[&a], &["-aes-128-cbc"]);
    let error = open(&aes128, &a.key).expect_err("AES-128 refused");
    assert!(
        error.to_string().contains("2.16.840.1.101.3.4.1.2"),
        "{error}"
    );

    let sha1 = |padding: &[&str]| {
        let input = dir.path().join("p.bin");
        let output = dir.path().join("o.der");
        std::fs::write(&input, data_key()).expect("write");
        let mut args = vec![
            "cms",
            "-encrypt",
            "-binary",
            "-outform",
            "DER",
            "-aes-256-cbc",
        ];
        args.extend([
            "-in",
            path_text(&input),
            "-out",
            path_text(&output),
            "-recip",
            path_text(&a.cert_pem),
        ]);
        args.extend(padding);
        openssl(&args);
        open(&std::fs::read(&output).expect("read"), &a.key).expect_err("refused")
    };
    let error = sha1(&[]);
    assert!(
        error
            .to_string()
            .contains("1.2.840.113549.1.1.1 is not RSAES-OAEP"),
        "{error}"
    );
    let error = sha1(&["-keyopt", "rsa_padding_mode:oaep"]);
    assert!(error.to_string().contains("SHA-1 default"), "{error}");
}

#[test]
fn openssl_decrypts_what_seal_makes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let recipient = recipient(dir.path(), "a", 2048);
    let sealed = seal(&recipient.key.public_key_der(), &data_key()).expect("seals");
    let input = dir.path().join("sealed.der");
    std::fs::write(&input, &sealed).expect("write");
    let output = openssl(&[
        "cms",
        "-decrypt",
        "-binary",
        "-inform",
        "DER",
        "-in",
        path_text(&input),
        "-inkey",
        path_text(&recipient.key_pem),
    ]);
    assert_eq!(output.stdout, data_key());
}

#[test]
fn small_rsa_keys_are_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let key_pem = dir.path().join("small.pem");
    let key_der = dir.path().join("small.der");
    let spki = dir.path().join("small.spki");
    openssl(&[
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:1024",
        "-out",
        path_text(&key_pem),
    ]);
    openssl(&[
        "pkcs8",
        "-topk8",
        "-nocrypt",
        "-in",
        path_text(&key_pem),
        "-outform",
        "DER",
        "-out",
        path_text(&key_der),
    ]);
    openssl(&[
        "pkey",
        "-in",
        path_text(&key_pem),
        "-pubout",
        "-outform",
        "DER",
        "-out",
        path_text(&spki),
    ]);
    let error =
        RecipientKey::from_pkcs8_der(&std::fs::read(&key_der).expect("read")).expect_err("refused");
    assert!(error.to_string().contains("at least 2048 bits"), "{error}");
    let error = seal(&std::fs::read(&spki).expect("read"), b"secret").expect_err("refused");
    assert!(error.to_string().contains("at least 2048 bits"), "{error}");
}
