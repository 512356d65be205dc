//! The DER writer `seal` needs: definite lengths, minimal length octets,
//! and the envelope's parts (also used by tests to build bad envelopes).

use super::oid;

/// Identifier octets used when sealing.
pub(crate) mod id {
    pub(crate) const INTEGER: u8 = 0x02;
    pub(crate) const OCTET_STRING: u8 = 0x04;
    pub(crate) const NULL: u8 = 0x05;
    pub(crate) const OID: u8 = 0x06;
    pub(crate) const SEQUENCE: u8 = 0x30;
    pub(crate) const SET: u8 = 0x31;
    /// `[n]` IMPLICIT on a primitive (OCTET STRING) type.
    pub(crate) const fn context_primitive(n: u8) -> u8 {
        0x80 | n
    }
    /// `[n]` on a constructed type, or EXPLICIT.
    pub(crate) const fn context_constructed(n: u8) -> u8 {
        0xa0 | n
    }
}

/// One element: identifier, DER length, then `parts` concatenated.
pub(crate) fn tlv(identifier: u8, parts: &[&[u8]]) -> Vec<u8> {
    let len: usize = parts.iter().map(|part| part.len()).sum();
    let mut out = Vec::with_capacity(len + 6);
    out.push(identifier);
    push_length(&mut out, len);
    for part in parts {
        out.extend_from_slice(part);
    }
    out
}

fn push_length(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        // Fits the short form: the cast cannot truncate.
        out.push(len as u8);
        return;
    }
    let bytes = len.to_be_bytes();
    let skip = bytes.iter().take_while(|&&b| b == 0).count();
    let significant = &bytes[skip..];
    // At most size_of::<usize>() bytes, so the count fits in 7 bits.
    out.push(0x80 | significant.len() as u8);
    out.extend_from_slice(significant);
}

/// AlgorithmIdentifier { oid, NULL }, as KMS writes hash identifiers.
pub(crate) fn algorithm_with_null(oid: &[u8]) -> Vec<u8> {
    tlv(id::SEQUENCE, &[&tlv(id::OID, &[oid]), &tlv(id::NULL, &[])])
}

/// ContentInfo { envelopedData, `[0]` EnvelopedData v2 { one KTRI v2 } },
/// the shape KMS sends, in DER.
pub(crate) fn envelope(key_id: &[u8], wrapped_key: &[u8], iv: &[u8], ciphertext: &[u8]) -> Vec<u8> {
    let recipient = key_trans_recipient(key_id, &oaep_sha256_algorithm(), wrapped_key);
    content_info(
        2,
        &[&recipient],
        &encrypted_content_info(oid::DATA, iv, ciphertext),
    )
}

/// RSAES-OAEP with SHA-256 and MGF1-SHA-256, parameters written as KMS
/// writes them (hash AlgorithmIdentifiers with explicit NULLs).
pub(crate) fn oaep_sha256_algorithm() -> Vec<u8> {
    let mgf1 = tlv(
        id::SEQUENCE,
        &[
            &tlv(id::OID, &[oid::MGF1]),
            &algorithm_with_null(oid::SHA256),
        ],
    );
    let params = tlv(
        id::SEQUENCE,
        &[
            &tlv(
                id::context_constructed(0),
                &[&algorithm_with_null(oid::SHA256)],
            ),
            &tlv(id::context_constructed(1), &[&mgf1]),
        ],
    );
    tlv(id::SEQUENCE, &[&tlv(id::OID, &[oid::RSAES_OAEP]), &params])
}

/// KeyTransRecipientInfo v2 with a `[0]` subjectKeyIdentifier.
pub(crate) fn key_trans_recipient(key_id: &[u8], algorithm: &[u8], wrapped_key: &[u8]) -> Vec<u8> {
    tlv(
        id::SEQUENCE,
        &[
            &tlv(id::INTEGER, &[&[2]]),
            &tlv(id::context_primitive(0), &[key_id]),
            algorithm,
            &tlv(id::OCTET_STRING, &[wrapped_key]),
        ],
    )
}

/// EncryptedContentInfo with AES-256-CBC and a primitive `[0]` content.
pub(crate) fn encrypted_content_info(content_type: &[u8], iv: &[u8], ciphertext: &[u8]) -> Vec<u8> {
    let algorithm = tlv(
        id::SEQUENCE,
        &[
            &tlv(id::OID, &[oid::AES256_CBC]),
            &tlv(id::OCTET_STRING, &[iv]),
        ],
    );
    tlv(
        id::SEQUENCE,
        &[
            &tlv(id::OID, &[content_type]),
            &algorithm,
            &tlv(id::context_primitive(0), &[ciphertext]),
        ],
    )
}

/// ContentInfo around an EnvelopedData of `version` with `recipients`.
pub(crate) fn content_info(version: u8, recipients: &[&[u8]], encrypted: &[u8]) -> Vec<u8> {
    let enveloped = tlv(
        id::SEQUENCE,
        &[
            &tlv(id::INTEGER, &[&[version]]),
            &tlv(id::SET, recipients),
            encrypted,
        ],
    );
    tlv(
        id::SEQUENCE,
        &[
            &tlv(id::OID, &[oid::ENVELOPED_DATA]),
            &tlv(id::context_constructed(0), &[&enveloped]),
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_are_minimal() {
        assert_eq!(tlv(id::OCTET_STRING, &[&[7u8; 3]])[..2], [0x04, 0x03]);
        assert_eq!(tlv(id::OCTET_STRING, &[&[0u8; 0x7f]])[..2], [0x04, 0x7f]);
        assert_eq!(
            tlv(id::OCTET_STRING, &[&[0u8; 0x80]])[..3],
            [0x04, 0x81, 0x80]
        );
        assert_eq!(
            tlv(id::OCTET_STRING, &[&[0u8; 0x100]])[..4],
            [0x04, 0x82, 0x01, 0x00]
        );
    }
}
