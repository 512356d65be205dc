//! Envelopes built part by part, to reach each refusal `open` makes.

use aws_lc_rs::cipher::{AES_256, EncryptingKey, EncryptionContext, UnboundCipherKey};
use aws_lc_rs::iv::FixedLength;
use aws_lc_rs::rsa::{OAEP_SHA256_MGF1SHA256, OaepPublicEncryptingKey, PublicEncryptingKey};
use base64::Engine as _;

use super::der::{self, id, tlv};
use super::*;

const IV: [u8; 16] = [7; 16];

fn key() -> RecipientKey {
    RecipientKey::generate().expect("key generation")
}

fn wrap(key: &RecipientKey, content_key: &[u8]) -> Vec<u8> {
    let public = PublicEncryptingKey::from_der(&key.public_key_der()).expect("public key");
    let oaep = OaepPublicEncryptingKey::new(public).expect("oaep");
    let mut out = vec![0u8; oaep.ciphertext_size()];
    let len = oaep
        .encrypt(&OAEP_SHA256_MGF1SHA256, content_key, &mut out, None)
        .expect("wrap")
        .len();
    out.truncate(len);
    out
}

/// CBC without padding, so tests choose the padding bytes themselves.
fn cbc_raw(content_key: &[u8], blocks: &[u8]) -> Vec<u8> {
    let unbound = UnboundCipherKey::new(&AES_256, content_key).expect("aes key");
    let cipher = EncryptingKey::cbc(unbound).expect("cbc");
    let mut out = blocks.to_vec();
    cipher
        .less_safe_encrypt(&mut out, EncryptionContext::Iv128(FixedLength::from(IV)))
        .expect("encrypt");
    out
}

/// An envelope whose decrypted (still padded) content is `blocks`.
fn envelope_of(key: &RecipientKey, content_key: &[u8], blocks: &[u8]) -> Vec<u8> {
    let aes_key = if content_key.len() == 32 {
        content_key
    } else {
        &[1u8; 32][..]
    };
    der::envelope(
        &[9; 32],
        &wrap(key, content_key),
        &IV,
        &cbc_raw(aes_key, blocks),
    )
}

fn kms_sample() -> Vec<u8> {
    let text: String = include_str!("../../tests/data/kms_ciphertext_for_recipient.b64")
        .split_whitespace()
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .expect("sample base64")
}

#[test]
fn parses_a_real_kms_envelope() {
    let parsed = parse::parse(&kms_sample()).expect("KMS's BER envelope parses");
    assert_eq!(parsed.encrypted_key.len(), 256);
    assert_eq!(hex::encode(&parsed.encrypted_key[..4]), "29cffeb1");
    assert_eq!(hex::encode(parsed.iv), "37343df1470df625eeb6f4bfd2f1acc3");
    assert_eq!(
        hex::encode(&parsed.ciphertext),
        "cc74adf65d973c8b72cd51e1b927f0f0"
    );
    // Not our key: the RSA step, not the parser, must refuse it.
    assert!(matches!(
        open(&kms_sample(), &key()),
        Err(EnvelopeError::KeyDecrypt)
    ));
}

#[test]
fn checks_padding_in_every_way() {
    let key = key();
    let content_key = [3u8; 32];
    let mut good = *b"0123456789abcd\x02\x02";
    let opened = open(&envelope_of(&key, &content_key, &good), &key).expect("good padding");
    assert_eq!(opened.expose(), b"0123456789abcd");
    let full_block = [16u8; 16];
    let opened = open(&envelope_of(&key, &content_key, &full_block), &key).expect("full block");
    assert!(opened.is_empty());
    for (index, value) in [(15, 0u8), (15, 17), (15, 0xff), (14, 3)] {
        good[index] = value;
        let result = open(&envelope_of(&key, &content_key, &good), &key);
        assert!(
            matches!(result, Err(EnvelopeError::Padding)),
            "{good:02x?}: {result:?}"
        );
        good = *b"0123456789abcd\x02\x02";
    }
    let mut long = [5u8; 32];
    long[28] = 4; // inside the 5-byte padding (bytes 27 to 31)
    let result = open(&envelope_of(&key, &content_key, &long), &key);
    assert!(matches!(result, Err(EnvelopeError::Padding)));
}

#[test]
fn refuses_a_short_content_key() {
    let key = key();
    let result = open(&envelope_of(&key, &[1u8; 16], &[16u8; 16]), &key);
    assert!(
        matches!(result, Err(EnvelopeError::ContentKeyLength { len: 16 })),
        "{result:?}"
    );
}

/// An envelope from parts, with a valid wrapped key and content.
struct Parts {
    version: u8,
    recipients: Vec<Vec<u8>>,
    encrypted: Vec<u8>,
}

impl Parts {
    fn valid(key: &RecipientKey) -> Parts {
        let content_key = [4u8; 32];
        let algorithm = der::oaep_sha256_algorithm();
        Parts {
            version: 2,
            recipients: vec![der::key_trans_recipient(
                &[1; 20],
                &algorithm,
                &wrap(key, &content_key),
            )],
            encrypted: der::encrypted_content_info(
                oid::DATA,
                &IV,
                &cbc_raw(&content_key, &[16; 16]),
            ),
        }
    }

    fn build(&self) -> Vec<u8> {
        let recipients: Vec<&[u8]> = self.recipients.iter().map(Vec::as_slice).collect();
        der::content_info(self.version, &recipients, &self.encrypted)
    }
}

fn open_parts(parts: &Parts, key: &RecipientKey) -> Result<SecretBytes, EnvelopeError> {
    open(&parts.build(), key)
}

#[test]
fn recipients_must_be_exactly_one_key_transport() {
    let key = key();
    let valid = Parts::valid(&key);
    assert!(open_parts(&valid, &key).is_ok());

    let mut none = Parts::valid(&key);
    none.recipients.clear();
    assert!(matches!(
        open_parts(&none, &key),
        Err(EnvelopeError::RecipientCount { count: 0 })
    ));

    let mut two = Parts::valid(&key);
    two.recipients.push(two.recipients[0].clone());
    assert!(matches!(
        open_parts(&two, &key),
        Err(EnvelopeError::RecipientCount { count: 2 })
    ));

    let mut agree = Parts::valid(&key);
    agree.recipients = vec![tlv(
        id::context_constructed(1),
        &[&tlv(id::INTEGER, &[&[3]])],
    )];
    let err = open_parts(&agree, &key).expect_err("kari refused");
    assert!(err.to_string().contains("KeyAgreeRecipientInfo"), "{err}");
}

#[test]
fn refuses_other_versions_and_content() {
    let key = key();
    let mut version = Parts::valid(&key);
    version.version = 1;
    let err = open_parts(&version, &key).expect_err("version 1");
    assert_eq!(
        err.to_string(),
        "EnvelopedData version 0x01 is not supported (only 0 and 2 are)"
    );

    let mut content_type = Parts::valid(&key);
    content_type.encrypted = der::encrypted_content_info(oid::ENVELOPED_DATA, &IV, &[0; 16]);
    let err = open_parts(&content_type, &key).expect_err("not id-data");
    assert!(err.to_string().contains("1.2.840.113549.1.7.3"), "{err}");

    let mut short_iv = Parts::valid(&key);
    short_iv.encrypted = der::encrypted_content_info(oid::DATA, &[1; 8], &[0; 16]);
    assert!(matches!(
        open_parts(&short_iv, &key),
        Err(EnvelopeError::BadIv { len: 8 })
    ));

    let mut detached = Parts::valid(&key);
    let algorithm = tlv(
        id::SEQUENCE,
        &[
            &tlv(id::OID, &[oid::AES256_CBC]),
            &tlv(id::OCTET_STRING, &[&IV]),
        ],
    );
    detached.encrypted = tlv(id::SEQUENCE, &[&tlv(id::OID, &[oid::DATA]), &algorithm]);
    assert!(matches!(
        open_parts(&detached, &key),
        Err(EnvelopeError::MissingContent)
    ));

    let mut ragged = Parts::valid(&key);
    ragged.encrypted = der::encrypted_content_info(oid::DATA, &IV, &[0; 17]);
    assert!(matches!(
        open_parts(&ragged, &key),
        Err(EnvelopeError::ContentLength { len: 17 })
    ));
}

#[test]
fn refuses_oaep_defaults_and_labels() {
    let key = key();
    let wrapped = wrap(&key, &[4u8; 32]);
    let with_params = |params: &[&[u8]]| {
        let algorithm = tlv(
            id::SEQUENCE,
            &[
                &tlv(id::OID, &[oid::RSAES_OAEP]),
                &tlv(id::SEQUENCE, params),
            ],
        );
        let mut parts = Parts::valid(&key);
        parts.recipients = vec![der::key_trans_recipient(&[1; 20], &algorithm, &wrapped)];
        open_parts(&parts, &key)
    };
    let hash = tlv(
        id::context_constructed(0),
        &[&der::algorithm_with_null(oid::SHA256)],
    );
    let mgf1 = tlv(
        id::context_constructed(1),
        &[&tlv(
            id::SEQUENCE,
            &[
                &tlv(id::OID, &[oid::MGF1]),
                &der::algorithm_with_null(oid::SHA256),
            ],
        )],
    );
    assert!(with_params(&[&hash, &mgf1]).is_ok());
    let err = with_params(&[]).expect_err("SHA-1 default hash");
    assert!(err.to_string().contains("SHA-1 default"), "{err}");
    let err = with_params(&[&hash]).expect_err("SHA-1 default MGF");
    assert!(err.to_string().contains("MGF1 hash"), "{err}");
    let label = |bytes: &[u8]| {
        let source = tlv(
            id::SEQUENCE,
            &[
                &tlv(id::OID, &[oid::P_SPECIFIED]),
                &tlv(id::OCTET_STRING, &[bytes]),
            ],
        );
        tlv(id::context_constructed(2), &[&source])
    };
    assert!(with_params(&[&hash, &mgf1, &label(b"")]).is_ok());
    let result = with_params(&[&hash, &mgf1, &label(b"x")]);
    assert!(
        matches!(result, Err(EnvelopeError::OaepLabel)),
        "{result:?}"
    );
}

#[test]
fn unpadded_len_edges() {
    assert_eq!(unpadded_len(&[]), None);
    assert_eq!(unpadded_len(&[1; 15]), None);
    assert_eq!(unpadded_len(&[1; 16]), Some(15));
    assert_eq!(unpadded_len(&[16; 32]), Some(16));
}
