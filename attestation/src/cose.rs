//! COSE_Sign1 (RFC 9052), as the Nitro Security Module emits it.

use ciborium::Value;

use crate::error::VerifyError;

/// COSE tag for COSE_Sign1.
const TAG_COSE_SIGN1: u64 = 18;
/// COSE algorithm identifier of ES384.
pub(crate) const ES384: i64 = -35;

/// The four parts of a COSE_Sign1, with the byte strings exactly as
/// received: the signature covers them, so they are never re-encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoseSign1 {
    /// Serialized protected header (a CBOR map in a byte string).
    pub protected: Vec<u8>,
    /// The payload bytes.
    pub payload: Vec<u8>,
    /// The signature (`r || s`, 96 bytes for ES384).
    pub signature: Vec<u8>,
}

impl CoseSign1 {
    /// Parses a tagged (18) or untagged COSE_Sign1.
    pub fn from_slice(bytes: &[u8]) -> Result<CoseSign1, VerifyError> {
        let value = read_one(bytes, "document")?;
        let value = match value {
            Value::Tag(TAG_COSE_SIGN1, inner) => *inner,
            Value::Tag(t, _) => {
                return Err(VerifyError::malformed(format!(
                    "CBOR tag {t} is not COSE_Sign1 (18)"
                )));
            }
            v => v,
        };
        let Value::Array(items) = value else {
            return Err(VerifyError::malformed("COSE_Sign1 is not an array"));
        };
        let [protected, unprotected, payload, signature]: [Value; 4] = items
            .try_into()
            .map_err(|_| VerifyError::malformed("COSE_Sign1 must have 4 elements"))?;
        if !unprotected.is_map() {
            return Err(VerifyError::malformed(
                "COSE_Sign1 unprotected header is not a map",
            ));
        }
        let bytes = |v: Value, what: &str| match v {
            Value::Bytes(b) => Ok(b),
            _ => Err(VerifyError::malformed(format!(
                "COSE_Sign1 {what} is not a byte string"
            ))),
        };
        Ok(CoseSign1 {
            protected: bytes(protected, "protected header")?,
            payload: bytes(payload, "payload")?,
            signature: bytes(signature, "signature")?,
        })
    }

    /// The algorithm in the protected header; only ES384 is accepted.
    pub fn check_algorithm(&self) -> Result<(), VerifyError> {
        let header = read_one(&self.protected, "protected header")?;
        let Value::Map(entries) = header else {
            return Err(VerifyError::malformed("protected header is not a map"));
        };
        let alg = entries
            .iter()
            .find(|(k, _)| k.as_integer().is_some_and(|i| i128::from(i) == 1))
            .map(|(_, v)| v);
        match alg.and_then(Value::as_integer).map(i128::from) {
            Some(a) if a == i128::from(ES384) => Ok(()),
            Some(a) => Err(VerifyError::Algorithm {
                found: a.to_string(),
            }),
            None => Err(VerifyError::Algorithm {
                found: format!("{alg:?}"),
            }),
        }
    }

    /// The Sig_structure the signature covers:
    /// `["Signature1", protected, h'', payload]`.
    pub fn to_be_signed(&self) -> Vec<u8> {
        let structure = Value::Array(vec![
            Value::Text("Signature1".into()),
            Value::Bytes(self.protected.clone()),
            Value::Bytes(Vec::new()),
            Value::Bytes(self.payload.clone()),
        ]);
        let mut out = Vec::with_capacity(self.payload.len() + self.protected.len() + 32);
        // Writing a Value into a Vec cannot fail.
        let _ = ciborium::into_writer(&structure, &mut out);
        out
    }

    /// Encodes as an untagged COSE_Sign1 with an empty unprotected header,
    /// the way the NSM does.
    pub fn to_vec(&self) -> Vec<u8> {
        let v = Value::Array(vec![
            Value::Bytes(self.protected.clone()),
            Value::Map(Vec::new()),
            Value::Bytes(self.payload.clone()),
            Value::Bytes(self.signature.clone()),
        ]);
        let mut out = Vec::new();
        let _ = ciborium::into_writer(&v, &mut out);
        out
    }
}

/// Decodes exactly one CBOR item that fills `bytes`; trailing bytes are an
/// error, so two encodings cannot hide behind one signature.
pub(crate) fn read_one(bytes: &[u8], what: &str) -> Result<Value, VerifyError> {
    let mut cursor = std::io::Cursor::new(bytes);
    let value: Value = ciborium::from_reader(&mut cursor)
        .map_err(|e| VerifyError::malformed(format!("{what} is not CBOR: {e}")))?;
    if cursor.position() != bytes.len() as u64 {
        return Err(VerifyError::malformed(format!("{what} has trailing bytes")));
    }
    Ok(value)
}
