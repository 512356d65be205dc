//! A signed image: PCR8 is its certificate's, and the signature over PCR0
//! verifies under an independent reader (Python, with the system's
//! `openssl` checking the ECDSA signature) and under `describe`. A
//! tampered signature is caught by both; a key that is not the
//! certificate's, a key that is not ECDSA and an expired certificate are
//! refused before anything is written.

use crate::{build, config, python_pcrs};
use nacre_tests::{nacre, temp_dir};
use std::path::{Path, PathBuf};
use std::process::Command;

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An ECDSA P-384 key and a certificate for it valid for `days` (a
/// negative number makes one that has expired), as docs/image.md tells an
/// operator to make them.
fn key_and_cert(dir: &Path, name: &str, days: &str) -> (PathBuf, PathBuf) {
    let (key, csr, cert) = (
        format!("{name}.key.pem"),
        format!("{name}.csr"),
        format!("{name}.cert.pem"),
    );
    openssl(
        dir,
        &[
            "ecparam",
            "-name",
            "secp384r1",
            "-genkey",
            "-noout",
            "-out",
            &key,
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-key",
            &key,
            "-out",
            &csr,
            "-subj",
            "/CN=nacre release signing",
        ],
    );
    openssl(
        dir,
        &[
            "x509", "-req", "-in", &csr, "-signkey", &key, "-days", days, "-out", &cert,
        ],
    );
    (dir.join(key), dir.join(cert))
}

#[test]
fn a_signed_image_has_its_certificate_in_pcr8_and_a_signature_over_pcr0() {
    let dir = temp_dir("image-signed");
    let cfg = config(&dir, |_| {});
    let (key, cert) = key_and_cert(&dir, "release", "30");
    let eif = dir.join("signed.eif");
    let sign = [
        "--sign-cert",
        cert.to_str().unwrap(),
        "--sign-key",
        key.to_str().unwrap(),
    ];
    let (ok, out, err) = build(&cfg, &eif, &sign);
    assert!(ok, "{err}");
    let ours: serde_json::Value = serde_json::from_str(&out).unwrap();
    let theirs = python_pcrs(&eif);
    for pcr in ["PCR0", "PCR1", "PCR2", "PCR8"] {
        assert_eq!(ours["Measurements"][pcr], theirs[pcr], "{pcr}");
    }
    assert_eq!(theirs["SignatureValid"], true, "{theirs}");
    let (ok, out, err) = nacre(&["image", "describe", eif.to_str().unwrap()]);
    assert!(ok, "{err}");
    let described: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(described["Measurements"], ours["Measurements"]);
    assert_eq!(described["IsSigned"], true);
    assert_eq!(described["SignatureCheck"], true);

    // The signature section is last, and its last byte is the last byte
    // of the ECDSA signature (serde writes each byte as a CBOR integer,
    // the value last): flipping it keeps the section readable and breaks
    // only the signature, which both readers then reject.
    let mut bytes = std::fs::read(&eif).unwrap();
    let n = bytes.len();
    bytes[n - 1] ^= 1;
    let tampered = dir.join("tampered.eif");
    std::fs::write(&tampered, &bytes).unwrap();
    let theirs = python_pcrs(&tampered);
    assert_eq!(theirs["SignatureValid"], false, "{theirs}");
    assert!(theirs.get("SignatureError").is_none(), "{theirs}");
    let (ok, _, err) = nacre(&["image", "describe", tampered.to_str().unwrap()]);
    assert!(!ok && err.contains("tampered.eif"), "{err}");

    // Refused before anything is written.
    let never = dir.join("never.eif");
    let refused = |cert: &Path, key: &Path, expect: &[&str]| {
        let args = [
            "--sign-cert",
            cert.to_str().unwrap(),
            "--sign-key",
            key.to_str().unwrap(),
        ];
        let (ok, _, err) = build(&cfg, &never, &args);
        assert!(!ok, "signed with {cert:?} and {key:?}");
        for e in expect {
            assert!(err.contains(e), "{e:?} not in: {err}");
        }
        assert!(!never.exists() && !dir.join("never.pcrs.json").exists());
    };
    let (other_key, _) = key_and_cert(&dir, "other", "30");
    refused(
        &cert,
        &other_key,
        &["other.key.pem", "is not the key of", "release.cert.pem"],
    );
    let (old_key, old_cert) = key_and_cert(&dir, "old", "-1");
    refused(&old_cert, &old_key, &["old.cert.pem", "not now"]);
    openssl(
        &dir,
        &[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            "rsa.pem",
        ],
    );
    refused(
        &cert,
        &dir.join("rsa.pem"),
        &["rsa.pem", "not an ECDSA key"],
    );
    refused(
        &cert,
        &cfg,
        &["image.toml", "not an unencrypted PEM private key"],
    );
}
