//! Reads the one CMS shape KMS sends: ContentInfo → EnvelopedData with a
//! single KeyTransRecipientInfo (RSAES-OAEP, SHA-256, MGF1-SHA-256) and
//! AES-256-CBC content, in DER or BER.
//!
//! The recipient identifier is read but not checked: KMS does not
//! document what its 32-byte subjectKeyIdentifier is computed from, and
//! there is one recipient anyway.

use super::EnvelopeError;
use super::ber::{self, BerError, Children, Tlv, tag};
use super::oid;

/// What `open` needs from an envelope.
pub(crate) struct Parsed {
    /// The RSA-OAEP-wrapped content-encryption key.
    pub(crate) encrypted_key: Vec<u8>,
    /// The AES-256-CBC IV.
    pub(crate) iv: [u8; 16],
    /// The encrypted content, chunks joined.
    pub(crate) ciphertext: Vec<u8>,
}

/// Parses `cms`, refusing anything but the shape above.
pub(crate) fn parse(cms: &[u8]) -> Result<Parsed, EnvelopeError> {
    let (info, rest) = ber::read_first(cms).map_err(malformed("ContentInfo"))?;
    if !rest.is_empty() {
        return Err(EnvelopeError::TrailingData { count: rest.len() });
    }
    expect_universal(&info, tag::SEQUENCE, "ContentInfo")?;
    let mut fields = info.children();
    let content_type = read_oid(&mut fields, "ContentInfo contentType")?;
    if content_type != oid::ENVELOPED_DATA {
        return Err(EnvelopeError::NotEnvelopedData {
            oid: oid::dotted(content_type),
        });
    }
    let explicit = next(&mut fields, "ContentInfo content")?;
    expect_context(&explicit, 0, "ContentInfo content")?;
    end(&mut fields, "ContentInfo")?;
    let mut inner = explicit.children();
    let enveloped = next(&mut inner, "EnvelopedData")?;
    expect_universal(&enveloped, tag::SEQUENCE, "EnvelopedData")?;
    end(&mut inner, "ContentInfo content")?;
    enveloped_data(&enveloped)
}

fn enveloped_data(seq: &Tlv<'_>) -> Result<Parsed, EnvelopeError> {
    let mut fields = seq.children();
    version(&mut fields, "EnvelopedData")?;
    // originatorInfo [0] only carries certificates and CRLs: not needed.
    skip_if_context(&mut fields, 0, "EnvelopedData originatorInfo")?;
    let recipients = next(&mut fields, "EnvelopedData recipientInfos")?;
    expect_universal(&recipients, tag::SET, "EnvelopedData recipientInfos")?;
    let encrypted_key = recipient_infos(&recipients)?;
    let info = next(&mut fields, "EnvelopedData encryptedContentInfo")?;
    expect_universal(&info, tag::SEQUENCE, "EnvelopedData encryptedContentInfo")?;
    let (iv, ciphertext) = encrypted_content_info(&info)?;
    // unprotectedAttrs [1] are not authenticated and not needed.
    skip_if_context(&mut fields, 1, "EnvelopedData unprotectedAttrs")?;
    end(&mut fields, "EnvelopedData")?;
    Ok(Parsed {
        encrypted_key,
        iv,
        ciphertext,
    })
}

/// The SET of RecipientInfo: exactly one, a KeyTransRecipientInfo.
fn recipient_infos(set: &Tlv<'_>) -> Result<Vec<u8>, EnvelopeError> {
    let mut items = set.children();
    let mut found = Vec::new();
    while let Some(item) = items.next_tlv().map_err(malformed("recipientInfos"))? {
        found.push(item);
    }
    let [recipient] = found[..] else {
        return Err(EnvelopeError::RecipientCount { count: found.len() });
    };
    if recipient.is_universal(tag::SEQUENCE) && recipient.constructed {
        return key_trans(&recipient);
    }
    let kind = match (recipient.is_context(1), recipient.is_context(2)) {
        (true, _) => "KeyAgreeRecipientInfo".to_owned(),
        (_, true) => "KEKRecipientInfo".to_owned(),
        _ if recipient.is_context(3) => "PasswordRecipientInfo".to_owned(),
        _ if recipient.is_context(4) => "OtherRecipientInfo".to_owned(),
        _ => recipient.describe(),
    };
    Err(EnvelopeError::UnsupportedRecipient { kind })
}

fn key_trans(seq: &Tlv<'_>) -> Result<Vec<u8>, EnvelopeError> {
    let mut fields = seq.children();
    version(&mut fields, "KeyTransRecipientInfo")?;
    let rid = next(&mut fields, "KeyTransRecipientInfo rid")?;
    if !(rid.is_universal(tag::SEQUENCE) || rid.is_context(0)) {
        return Err(unexpected(
            "KeyTransRecipientInfo rid",
            "issuerAndSerialNumber or [0] subjectKeyIdentifier",
            &rid,
        ));
    }
    let algorithm = next(&mut fields, "keyEncryptionAlgorithm")?;
    expect_universal(&algorithm, tag::SEQUENCE, "keyEncryptionAlgorithm")?;
    check_oaep(&algorithm)?;
    let key = next(&mut fields, "encryptedKey")?;
    expect_universal(&key, tag::OCTET_STRING, "encryptedKey")?;
    let encrypted_key = key.octets().map_err(malformed("encryptedKey"))?;
    end(&mut fields, "KeyTransRecipientInfo")?;
    Ok(encrypted_key)
}

/// RSAES-OAEP with SHA-256 and MGF1-SHA-256 and an empty label: the only
/// parameters KMS uses. Absent hash or MGF fields mean SHA-1 (RFC 8017
/// defaults), which are refused.
fn check_oaep(algorithm: &Tlv<'_>) -> Result<(), EnvelopeError> {
    let mut fields = algorithm.children();
    let id = read_oid(&mut fields, "keyEncryptionAlgorithm algorithm")?;
    if id != oid::RSAES_OAEP {
        return Err(EnvelopeError::UnsupportedKeyEncryption {
            oid: oid::dotted(id),
        });
    }
    let sha1_default = |what| EnvelopeError::UnsupportedOaepHash {
        what,
        found: "the SHA-1 default (field absent)".to_owned(),
    };
    let Some(params) = fields.next_tlv().map_err(malformed("RSAES-OAEP-params"))? else {
        return Err(sha1_default("hash"));
    };
    expect_universal(&params, tag::SEQUENCE, "RSAES-OAEP-params")?;
    end(&mut fields, "keyEncryptionAlgorithm")?;

    let mut fields = params.children();
    let hash = take_context(&mut fields, 0, "RSAES-OAEP hashAlgorithm")?
        .ok_or_else(|| sha1_default("hash"))?;
    let hash = single(&hash, "RSAES-OAEP hashAlgorithm")?;
    check_sha256(&hash, "hash")?;

    let mask = take_context(&mut fields, 1, "RSAES-OAEP maskGenAlgorithm")?
        .ok_or_else(|| sha1_default("MGF1 hash"))?;
    let mask = single(&mask, "RSAES-OAEP maskGenAlgorithm")?;
    let mut mask_fields = mask.children();
    let mgf = read_oid(&mut mask_fields, "maskGenAlgorithm algorithm")?;
    if mgf != oid::MGF1 {
        return Err(EnvelopeError::UnsupportedOaepHash {
            what: "mask generation function",
            found: oid::dotted(mgf),
        });
    }
    let mgf_hash = next(&mut mask_fields, "MGF1 hash algorithm")?;
    expect_universal(&mgf_hash, tag::SEQUENCE, "MGF1 hash algorithm")?;
    check_sha256(&mgf_hash, "MGF1 hash")?;
    end(&mut mask_fields, "maskGenAlgorithm")?;

    if let Some(source) = take_context(&mut fields, 2, "RSAES-OAEP pSourceAlgorithm")? {
        check_empty_label(&single(&source, "RSAES-OAEP pSourceAlgorithm")?)?;
    }
    end(&mut fields, "RSAES-OAEP-params")
}

/// AlgorithmIdentifier { id-sha256, NULL or absent }.
fn check_sha256(algorithm: &Tlv<'_>, what: &'static str) -> Result<(), EnvelopeError> {
    let mut fields = algorithm.children();
    let id = read_oid(&mut fields, "hash algorithm")?;
    if id != oid::SHA256 {
        return Err(EnvelopeError::UnsupportedOaepHash {
            what,
            found: oid::dotted(id),
        });
    }
    if let Some(param) = fields.next_tlv().map_err(malformed("hash parameters"))?
        && !(param.is_universal(tag::NULL) && param.content.is_empty())
    {
        return Err(unexpected("SHA-256 parameters", "NULL or nothing", &param));
    }
    end(&mut fields, "hash AlgorithmIdentifier")
}

/// pSourceAlgorithm { id-pSpecified, OCTET STRING "" }.
fn check_empty_label(algorithm: &Tlv<'_>) -> Result<(), EnvelopeError> {
    let mut fields = algorithm.children();
    let id = read_oid(&mut fields, "pSourceAlgorithm algorithm")?;
    let label = next(&mut fields, "pSourceAlgorithm label")?;
    expect_universal(&label, tag::OCTET_STRING, "pSourceAlgorithm label")?;
    let empty = label.octets().map_err(malformed("OAEP label"))?.is_empty();
    if id != oid::P_SPECIFIED || !empty {
        return Err(EnvelopeError::OaepLabel);
    }
    end(&mut fields, "pSourceAlgorithm")
}

fn encrypted_content_info(seq: &Tlv<'_>) -> Result<([u8; 16], Vec<u8>), EnvelopeError> {
    let mut fields = seq.children();
    let content_type = read_oid(&mut fields, "encryptedContentInfo contentType")?;
    if content_type != oid::DATA {
        return Err(EnvelopeError::UnsupportedContentType {
            oid: oid::dotted(content_type),
        });
    }
    let algorithm = next(&mut fields, "contentEncryptionAlgorithm")?;
    expect_universal(&algorithm, tag::SEQUENCE, "contentEncryptionAlgorithm")?;
    let iv = aes_cbc_iv(&algorithm)?;
    let content = match fields.next_tlv().map_err(malformed("encryptedContent"))? {
        Some(content) if content.is_context(0) => content,
        Some(other) => return Err(unexpected("encryptedContent", "[0]", &other)),
        None => return Err(EnvelopeError::MissingContent),
    };
    // [0] IMPLICIT OCTET STRING: primitive, or constructed from chunks.
    let ciphertext = content.octets().map_err(malformed("encryptedContent"))?;
    end(&mut fields, "encryptedContentInfo")?;
    Ok((iv, ciphertext))
}

fn aes_cbc_iv(algorithm: &Tlv<'_>) -> Result<[u8; 16], EnvelopeError> {
    let mut fields = algorithm.children();
    let id = read_oid(&mut fields, "contentEncryptionAlgorithm algorithm")?;
    if id != oid::AES256_CBC {
        return Err(EnvelopeError::UnsupportedContentEncryption {
            oid: oid::dotted(id),
        });
    }
    let param = next(&mut fields, "AES-256-CBC IV")?;
    expect_universal(&param, tag::OCTET_STRING, "AES-256-CBC IV")?;
    let iv = param.octets().map_err(malformed("AES-256-CBC IV"))?;
    end(&mut fields, "contentEncryptionAlgorithm")?;
    <[u8; 16]>::try_from(iv.as_slice()).map_err(|_| EnvelopeError::BadIv { len: iv.len() })
}

/// INTEGER version, which must be 0 or 2 (the values RFC 5652 gives
/// EnvelopedData and KeyTransRecipientInfo without originator
/// certificates or password recipients).
fn version(fields: &mut Children<'_>, what: &'static str) -> Result<(), EnvelopeError> {
    let version = next(fields, what)?;
    expect_universal(&version, tag::INTEGER, what)?;
    match version.content {
        [0] | [2] => Ok(()),
        other => Err(EnvelopeError::Version {
            what,
            version: format!("0x{}", hex::encode(other)),
        }),
    }
}

fn malformed(what: &'static str) -> impl Fn(BerError) -> EnvelopeError {
    move |source| EnvelopeError::Malformed { what, source }
}

fn unexpected(what: &'static str, expected: &'static str, found: &Tlv<'_>) -> EnvelopeError {
    EnvelopeError::Unexpected {
        what,
        expected,
        found: found.describe(),
    }
}

fn next<'a>(fields: &mut Children<'a>, what: &'static str) -> Result<Tlv<'a>, EnvelopeError> {
    fields
        .next_tlv()
        .map_err(malformed(what))?
        .ok_or(EnvelopeError::Missing { what })
}

fn end(fields: &mut Children<'_>, what: &'static str) -> Result<(), EnvelopeError> {
    match fields.next_tlv().map_err(malformed(what))? {
        None => Ok(()),
        Some(extra) => Err(EnvelopeError::Extra {
            what,
            found: extra.describe(),
        }),
    }
}

fn read_oid<'a>(fields: &mut Children<'a>, what: &'static str) -> Result<&'a [u8], EnvelopeError> {
    let id = next(fields, what)?;
    if !id.is_universal(tag::OID) || id.constructed {
        return Err(unexpected(what, "OBJECT IDENTIFIER", &id));
    }
    Ok(id.content)
}

fn expect_universal(tlv: &Tlv<'_>, number: u8, what: &'static str) -> Result<(), EnvelopeError> {
    let name = match number {
        tag::SEQUENCE => "SEQUENCE",
        tag::SET => "SET",
        tag::INTEGER => "INTEGER",
        _ => "OCTET STRING",
    };
    // SEQUENCE and SET are always constructed; INTEGER always primitive;
    // OCTET STRING may be either in BER.
    let form_ok = match number {
        tag::SEQUENCE | tag::SET => tlv.constructed,
        tag::INTEGER => !tlv.constructed,
        _ => true,
    };
    if tlv.is_universal(number) && form_ok {
        Ok(())
    } else {
        Err(unexpected(what, name, tlv))
    }
}

fn expect_context(tlv: &Tlv<'_>, number: u8, what: &'static str) -> Result<(), EnvelopeError> {
    if tlv.is_context(number) && tlv.constructed {
        Ok(())
    } else {
        Err(unexpected(what, "a constructed context tag", tlv))
    }
}

/// Takes the next element if it is the constructed `[number]`.
fn take_context<'a>(
    fields: &mut Children<'a>,
    number: u8,
    what: &'static str,
) -> Result<Option<Tlv<'a>>, EnvelopeError> {
    match fields.peek().map_err(malformed(what))? {
        Some(tlv) if tlv.is_context(number) => {
            expect_context(&tlv, number, what)?;
            fields.next_tlv().map_err(malformed(what))
        }
        _ => Ok(None),
    }
}

fn skip_if_context(
    fields: &mut Children<'_>,
    number: u8,
    what: &'static str,
) -> Result<(), EnvelopeError> {
    take_context(fields, number, what).map(|_| ())
}

/// The one SEQUENCE inside an EXPLICIT tag.
fn single<'a>(explicit: &Tlv<'a>, what: &'static str) -> Result<Tlv<'a>, EnvelopeError> {
    let mut inner = explicit.children();
    let only = next(&mut inner, what)?;
    expect_universal(&only, tag::SEQUENCE, what)?;
    end(&mut inner, what)?;
    Ok(only)
}
