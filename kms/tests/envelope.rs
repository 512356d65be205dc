//! `seal` and `open` through the public API: round trips, and refusals
//! of every broken envelope without a panic or a partial plaintext.

use base64::Engine as _;
use nacre_kms::envelope::{EnvelopeError, open, seal};
use nacre_kms::recipient::RecipientKey;

fn key() -> RecipientKey {
    RecipientKey::generate().expect("key generation")
}

/// OID content octets as they appear in a sealed envelope.
const AES256_CBC: &[u8] = &[
    0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x01, 0x2a,
];
const RSAES_OAEP: &[u8] = &[
    0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x07,
];
const SHA256: &[u8] = &[
    0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01,
];
const ENVELOPED_DATA: &[u8] = &[
    0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x03,
];

/// `envelope` with the last byte of the first occurrence of `oid`
/// replaced by `last`.
fn with_oid_changed(envelope: &[u8], oid: &[u8], last: u8) -> Vec<u8> {
    let at = envelope
        .windows(oid.len())
        .position(|window| window == oid)
        .expect("OID present in the sealed envelope");
    let mut changed = envelope.to_vec();
    changed[at + oid.len() - 1] = last;
    changed
}

#[test]
fn seal_then_open() {
    let key = key();
    for len in [0, 1, 15, 16, 17, 32, 1000, 4096] {
        let plaintext: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
        let envelope = seal(&key.public_key_der(), &plaintext).expect("seals");
        assert_eq!(envelope[0], 0x30, "DER SEQUENCE");
        let opened = open(&envelope, &key).expect("opens");
        assert_eq!(opened.expose(), plaintext.as_slice(), "length {len}");
    }
    // A fresh content key and IV every time.
    let spki = key.public_key_der();
    assert_ne!(
        seal(&spki, b"same").expect("seal"),
        seal(&spki, b"same").expect("seal")
    );
}

#[test]
fn the_public_key_is_an_rsa_spki() {
    let key = key();
    let spki = key.public_key_der();
    let rsa_encryption = [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
    assert_eq!(spki[..2], [0x30, 0x82]);
    assert!(spki.windows(9).any(|w| w == rsa_encryption));
    assert_eq!(key.bits(), 2048);
    assert_eq!(format!("{key:?}"), "RecipientKey { bits: 2048, .. }");
}

#[test]
fn another_keys_envelope_is_refused() {
    let envelope = seal(&key().public_key_der(), b"for someone else").expect("seals");
    let result = open(&envelope, &key());
    assert!(
        matches!(result, Err(EnvelopeError::KeyDecrypt)),
        "{result:?}"
    );
}

#[test]
fn a_real_kms_envelope_gets_to_the_rsa_step() {
    let text: String = include_str!("data/kms_ciphertext_for_recipient.b64")
        .split_whitespace()
        .collect();
    let envelope = base64::engine::general_purpose::STANDARD
        .decode(text)
        .expect("base64");
    let key = key();
    // Parsing KMS's BER succeeds; only the (unavailable) key is missing.
    assert!(matches!(
        open(&envelope, &key),
        Err(EnvelopeError::KeyDecrypt)
    ));
    for len in 0..envelope.len() {
        assert!(open(&envelope[..len], &key).is_err(), "truncated at {len}");
    }
}

#[test]
fn every_truncation_is_an_error() {
    let key = key();
    let envelope = seal(&key.public_key_der(), b"a data key of thirty-two bytes!!").expect("seals");
    for len in 0..envelope.len() {
        let result = open(&envelope[..len], &key);
        assert!(result.is_err(), "truncated at {len} of {}", envelope.len());
    }
}

#[test]
fn trailing_bytes_are_refused() {
    let key = key();
    let mut envelope = seal(&key.public_key_der(), b"secret").expect("seals");
    envelope.push(0);
    let result = open(&envelope, &key);
    assert!(
        matches!(result, Err(EnvelopeError::TrailingData { count: 1 })),
        "{result:?}"
    );
    envelope.extend_from_slice(b"junk");
    let error = open(&envelope, &key).expect_err("refused");
    assert_eq!(
        error.to_string(),
        "5 bytes of trailing data after the CMS envelope"
    );
}

#[test]
fn other_algorithms_are_refused_by_oid() {
    let key = key();
    let envelope = seal(&key.public_key_der(), b"secret").expect("seals");
    let cases = [
        (
            AES256_CBC,
            0x02,
            "content encryption algorithm 2.16.840.1.101.3.4.1.2 is not AES-256-CBC",
        ),
        (
            RSAES_OAEP,
            0x01,
            "key encryption algorithm 1.2.840.113549.1.1.1 is not RSAES-OAEP",
        ),
        (SHA256, 0x02, "RSAES-OAEP hash is 2.16.840.1.101.3.4.2.2"),
        (
            ENVELOPED_DATA,
            0x02,
            "CMS content type is 1.2.840.113549.1.7.2, not EnvelopedData",
        ),
    ];
    for (oid, last, message) in cases {
        let error = open(&with_oid_changed(&envelope, oid, last), &key).expect_err("refused");
        assert!(error.to_string().starts_with(message), "{error}");
    }
}

#[test]
fn garbage_and_bit_flips_never_panic() {
    let key = key();
    let plaintext = b"sixteen byte key";
    let envelope = seal(&key.public_key_der(), plaintext).expect("seals");
    // xorshift: deterministic garbage of many lengths and first bytes.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    for len in 0..600 {
        let garbage: Vec<u8> = (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        assert!(
            open(&garbage, &key).is_err(),
            "garbage of {len} bytes opened"
        );
    }
    // CBC is unauthenticated, as in KMS's format, so a flip in the content
    // may still decrypt; what must hold is no panic and no flip elsewhere
    // in the structure going unnoticed.
    for at in 0..envelope.len() {
        let mut flipped = envelope.clone();
        flipped[at] ^= 0x01;
        let _ = open(&flipped, &key);
    }
}

#[test]
fn seal_refuses_what_is_not_an_rsa_key() {
    let error = seal(b"not a key", b"secret").expect_err("refused");
    assert!(
        error
            .to_string()
            .starts_with("recipient public key: not a usable RSA SubjectPublicKeyInfo"),
        "{error}"
    );
}
