//! The AWS attestation payload: a CBOR map with a fixed set of keys.

use std::collections::BTreeMap;

use ciborium::Value;

use crate::cose::read_one;
use crate::error::VerifyError;

/// Largest document accepted, checked before anything is decoded.
pub const MAX_DOCUMENT: usize = 32 * 1024;
/// Most PCRs a document may carry (the NSM has 32).
pub const MAX_PCRS: usize = 32;
/// Most certificates in `cabundle`.
pub const MAX_CABUNDLE: usize = 16;
/// Largest `user_data`, `nonce` and `public_key` (the NSM allows 1024).
pub const MAX_FIELD: usize = 1024;

/// The payload of an attestation document (AWS format).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Document {
    /// Enclave image module id (`nacre-dev...` for dev documents).
    pub module_id: String,
    /// Digest of the PCRs: always `SHA384`.
    pub digest: String,
    /// Milliseconds since the Unix epoch when the document was made.
    pub timestamp: u64,
    /// PCR index to value.
    #[serde(serialize_with = "hex_map")]
    pub pcrs: BTreeMap<u32, Vec<u8>>,
    /// DER of the leaf certificate that signed the document.
    #[serde(skip)]
    pub certificate: Vec<u8>,
    /// DER certificates from the root down to the leaf's issuer.
    #[serde(skip)]
    pub cabundle: Vec<Vec<u8>>,
    /// Optional public key chosen by the enclave.
    #[serde(serialize_with = "hex_opt")]
    pub public_key: Option<Vec<u8>>,
    /// Optional user data chosen by the enclave.
    #[serde(serialize_with = "hex_opt")]
    pub user_data: Option<Vec<u8>>,
    /// Optional nonce chosen by the verifier.
    #[serde(serialize_with = "hex_opt")]
    pub nonce: Option<Vec<u8>>,
}

fn hex_map<S: serde::Serializer>(m: &BTreeMap<u32, Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
    s.collect_map(m.iter().map(|(k, v)| (k.to_string(), hex::encode(v))))
}

fn hex_opt<S: serde::Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(b) => s.serialize_str(&hex::encode(b)),
        None => s.serialize_none(),
    }
}

impl Document {
    /// Decodes the payload (definite or indefinite-length CBOR).
    ///
    /// Fields are taken and checked in the AWS key order; keys the format
    /// does not name are ignored, and a null counts as absent.
    pub fn from_payload(payload: &[u8]) -> Result<Document, VerifyError> {
        let mut fields = Fields::decode(payload)?;
        let module_id = text(fields.required("module_id")?, "module_id")?;
        let digest = digest(fields.required("digest")?)?;
        let timestamp = timestamp(fields.required("timestamp")?)?;
        let pcrs = pcrs(fields.required("pcrs")?)?;
        let certificate = bytes(fields.required("certificate")?, "certificate")?;
        let cabundle = cabundle(fields.required("cabundle")?)?;
        Ok(Document {
            module_id,
            digest,
            timestamp,
            pcrs,
            certificate,
            cabundle,
            public_key: fields.optional_bytes("public_key")?,
            user_data: fields.optional_bytes("user_data")?,
            nonce: fields.optional_bytes("nonce")?,
        })
    }

    /// Encodes as the NSM does: a definite-length map in the AWS key order.
    pub fn to_payload(&self) -> Vec<u8> {
        let opt = |v: &Option<Vec<u8>>| v.clone().map(Value::Bytes).unwrap_or(Value::Null);
        let map = Value::Map(vec![
            (
                Value::Text("module_id".into()),
                Value::Text(self.module_id.clone()),
            ),
            (
                Value::Text("digest".into()),
                Value::Text(self.digest.clone()),
            ),
            (
                Value::Text("timestamp".into()),
                Value::Integer(self.timestamp.into()),
            ),
            (
                Value::Text("pcrs".into()),
                Value::Map(
                    self.pcrs
                        .iter()
                        .map(|(k, v)| (Value::Integer((*k).into()), Value::Bytes(v.clone())))
                        .collect(),
                ),
            ),
            (
                Value::Text("certificate".into()),
                Value::Bytes(self.certificate.clone()),
            ),
            (
                Value::Text("cabundle".into()),
                Value::Array(self.cabundle.iter().cloned().map(Value::Bytes).collect()),
            ),
            (Value::Text("public_key".into()), opt(&self.public_key)),
            (Value::Text("user_data".into()), opt(&self.user_data)),
            (Value::Text("nonce".into()), opt(&self.nonce)),
        ]);
        let mut out = Vec::new();
        let _ = ciborium::into_writer(&map, &mut out);
        out
    }
}

fn text(v: Value, what: &str) -> Result<String, VerifyError> {
    match v {
        Value::Text(t) => Ok(t),
        _ => Err(VerifyError::malformed(format!("{what} is not text"))),
    }
}

fn bytes(v: Value, what: &str) -> Result<Vec<u8>, VerifyError> {
    match v {
        Value::Bytes(b) => Ok(b),
        _ => Err(VerifyError::malformed(format!(
            "{what} is not a byte string"
        ))),
    }
}

/// The payload's top-level map, by key.
struct Fields(BTreeMap<String, Value>);

impl Fields {
    /// The payload's map; every key must be text, and appear once.
    fn decode(payload: &[u8]) -> Result<Fields, VerifyError> {
        let Value::Map(entries) = read_one(payload, "payload")? else {
            return Err(VerifyError::malformed("payload is not a map"));
        };
        let mut fields: BTreeMap<String, Value> = BTreeMap::new();
        for (k, v) in entries {
            let Value::Text(k) = k else {
                return Err(VerifyError::malformed("payload key is not text"));
            };
            if fields.insert(k.clone(), v).is_some() {
                return Err(VerifyError::malformed(format!(
                    "payload key {k:?} appears twice"
                )));
            }
        }
        Ok(Fields(fields))
    }

    /// Field `k`, taken out; a null counts as absent.
    fn take(&mut self, k: &str) -> Option<Value> {
        self.0.remove(k).filter(|v| !v.is_null())
    }

    /// Field `k`, which must be present.
    fn required(&mut self, k: &str) -> Result<Value, VerifyError> {
        self.take(k)
            .ok_or_else(|| VerifyError::malformed(format!("payload lacks {k}")))
    }

    /// Field `k` if present: a byte string within [`MAX_FIELD`].
    fn optional_bytes(&mut self, k: &'static str) -> Result<Option<Vec<u8>>, VerifyError> {
        match self.take(k) {
            None => Ok(None),
            Some(v) => {
                let b = bytes(v, k)?;
                if b.len() > MAX_FIELD {
                    return Err(VerifyError::TooLarge {
                        what: k,
                        limit: MAX_FIELD,
                    });
                }
                Ok(Some(b))
            }
        }
    }
}

/// `digest`: text, and only `SHA384`.
fn digest(v: Value) -> Result<String, VerifyError> {
    let digest = text(v, "digest")?;
    if digest != "SHA384" {
        return Err(VerifyError::malformed(format!(
            "digest is {digest:?}, expected SHA384"
        )));
    }
    Ok(digest)
}

/// `timestamp`: an unsigned 64-bit integer.
fn timestamp(v: Value) -> Result<u64, VerifyError> {
    v.as_integer()
        .and_then(|i| u64::try_from(i).ok())
        .ok_or_else(|| VerifyError::malformed("timestamp is not an unsigned integer"))
}

/// `pcrs`: a map of at most [`MAX_PCRS`] entries, counted before any is
/// decoded.
fn pcrs(v: Value) -> Result<BTreeMap<u32, Vec<u8>>, VerifyError> {
    let Value::Map(pcr_entries) = v else {
        return Err(VerifyError::malformed("pcrs is not a map"));
    };
    if pcr_entries.len() > MAX_PCRS {
        return Err(VerifyError::TooLarge {
            what: "pcrs",
            limit: MAX_PCRS,
        });
    }
    let mut pcrs = BTreeMap::new();
    for (k, v) in pcr_entries {
        let (index, value) = pcr(k, v)?;
        pcrs.insert(index, value);
    }
    Ok(pcrs)
}

/// One PCR: an index below [`MAX_PCRS`], and a value of 32, 48 or 64
/// bytes.
fn pcr(k: Value, v: Value) -> Result<(u32, Vec<u8>), VerifyError> {
    let index = k
        .as_integer()
        .and_then(|i| u32::try_from(i).ok())
        .filter(|i| (*i as usize) < MAX_PCRS)
        .ok_or_else(|| VerifyError::malformed("PCR index is not an integer from 0 to 31"))?;
    let value = bytes(v, "PCR value")?;
    if ![32, 48, 64].contains(&value.len()) {
        return Err(VerifyError::malformed(format!(
            "PCR{index} has {} bytes",
            value.len()
        )));
    }
    Ok((index, value))
}

/// `cabundle`: an array of 1 to [`MAX_CABUNDLE`] byte strings, counted
/// before any is decoded.
fn cabundle(v: Value) -> Result<Vec<Vec<u8>>, VerifyError> {
    let Value::Array(bundle) = v else {
        return Err(VerifyError::malformed("cabundle is not an array"));
    };
    if bundle.is_empty() || bundle.len() > MAX_CABUNDLE {
        return Err(VerifyError::malformed(format!(
            "cabundle has {} certificates; expected 1 to {MAX_CABUNDLE}",
            bundle.len()
        )));
    }
    bundle
        .into_iter()
        .map(|c| bytes(c, "cabundle entry"))
        .collect()
}
