//! The object identifiers an envelope uses (content octets, DER), and a
//! dotted-decimal printer so errors can name any OID found instead.

/// id-envelopedData, 1.2.840.113549.1.7.3 (RFC 5652).
pub(crate) const ENVELOPED_DATA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x03];
/// id-data, 1.2.840.113549.1.7.1 (RFC 5652).
pub(crate) const DATA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x01];
/// id-RSAES-OAEP, 1.2.840.113549.1.1.7 (RFC 8017).
pub(crate) const RSAES_OAEP: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x07];
/// id-mgf1, 1.2.840.113549.1.1.8 (RFC 8017).
pub(crate) const MGF1: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x08];
/// id-pSpecified, 1.2.840.113549.1.1.9 (RFC 8017).
pub(crate) const P_SPECIFIED: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x09];
/// id-sha256, 2.16.840.1.101.3.4.2.1 (RFC 5754).
pub(crate) const SHA256: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01];
/// id-aes256-CBC, 2.16.840.1.101.3.4.1.42 (RFC 3565).
pub(crate) const AES256_CBC: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x01, 0x2a];

/// The dotted form of OID content octets ("1.2.840.113549.1.1.1"), or a
/// hex dump when they are not a valid OID encoding.
pub(crate) fn dotted(content: &[u8]) -> String {
    let mut arcs: Vec<u64> = Vec::new();
    let mut value: u64 = 0;
    for &byte in content {
        if value > (u64::MAX >> 7) {
            return hex_form(content);
        }
        value = (value << 7) | u64::from(byte & 0x7f);
        if byte & 0x80 == 0 {
            arcs.push(value);
            value = 0;
        }
    }
    let Some(&first) = arcs.first() else {
        return hex_form(content);
    };
    if content.last().is_some_and(|b| b & 0x80 != 0) {
        return hex_form(content);
    }
    // X.690 8.19.4: the first subidentifier packs the first two arcs.
    let (a, b) = match first {
        0..=39 => (0, first),
        40..=79 => (1, first - 40),
        _ => (2, first - 80),
    };
    let mut text = format!("{a}.{b}");
    for arc in &arcs[1..] {
        text.push('.');
        text.push_str(&arc.to_string());
    }
    text
}

fn hex_form(content: &[u8]) -> String {
    format!("(invalid OID 0x{})", hex::encode(content))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_known_oids() {
        assert_eq!(dotted(ENVELOPED_DATA), "1.2.840.113549.1.7.3");
        assert_eq!(dotted(RSAES_OAEP), "1.2.840.113549.1.1.7");
        assert_eq!(dotted(SHA256), "2.16.840.1.101.3.4.2.1");
        assert_eq!(dotted(AES256_CBC), "2.16.840.1.101.3.4.1.42");
        assert_eq!(dotted(&[]), "(invalid OID 0x)");
        assert_eq!(dotted(&[0x2a, 0x86]), "(invalid OID 0x2a86)");
        assert_eq!(
            dotted(&[0xff; 12]),
            "(invalid OID 0xffffffffffffffffffffffff)"
        );
    }
}
