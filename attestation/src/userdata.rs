//! The `user_data` layouts (docs/attestation.md): runtime and guest
//! documents, and the documents enclaves of one deployment exchange to
//! synchronize.
//! No document of one layout reads as another.

use ciborium::Value;

use crate::cose::read_one;
use crate::error::VerifyError;

/// Runtime documents: `0x12 0x20 ‖ SHA-256(TLS leaf DER) ‖ 0x12 0x20 ‖
/// SHA-256(manifest)`, nitriding's multihash layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuntimeBinding {
    /// SHA-256 of the DER of the TLS leaf certificate.
    pub tls_cert_sha256: [u8; 32],
    /// SHA-256 of the manifest bytes.
    pub manifest_sha256: [u8; 32],
}

/// The multihash prefix of a SHA-256 digest.
const SHA256_MULTIHASH: [u8; 2] = [0x12, 0x20];

impl RuntimeBinding {
    /// The 68 bytes that go into `user_data`.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(68);
        out.extend_from_slice(&SHA256_MULTIHASH);
        out.extend_from_slice(&self.tls_cert_sha256);
        out.extend_from_slice(&SHA256_MULTIHASH);
        out.extend_from_slice(&self.manifest_sha256);
        out
    }

    /// Reads the layout back; anything else is a binding mismatch.
    pub fn from_bytes(b: &[u8]) -> Result<RuntimeBinding, VerifyError> {
        let bad = || VerifyError::BindingMismatch {
            what: "user_data is not the runtime layout (0x1220 ‖ 32 bytes ‖ 0x1220 ‖ 32 bytes)"
                .into(),
        };
        if b.len() != 68 || b[..2] != SHA256_MULTIHASH || b[34..36] != SHA256_MULTIHASH {
            return Err(bad());
        }
        let mut tls = [0u8; 32];
        let mut manifest = [0u8; 32];
        tls.copy_from_slice(&b[2..34]);
        manifest.copy_from_slice(&b[36..68]);
        Ok(RuntimeBinding {
            tls_cert_sha256: tls,
            manifest_sha256: manifest,
        })
    }
}

/// Guest documents: CBOR `{"nacre": 1, "guest": <SHA-256>, "data": ...}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestBinding {
    /// SHA-256 of the guest component that asked for the document.
    pub guest_sha256: [u8; 32],
    /// The guest's own user data, if any.
    pub data: Option<Vec<u8>>,
}

impl GuestBinding {
    /// The CBOR map that goes into `user_data`.
    pub fn to_bytes(&self) -> Vec<u8> {
        let map = Value::Map(vec![
            (Value::Text("nacre".into()), Value::Integer(1.into())),
            (
                Value::Text("guest".into()),
                Value::Bytes(self.guest_sha256.to_vec()),
            ),
            (
                Value::Text("data".into()),
                self.data.clone().map(Value::Bytes).unwrap_or(Value::Null),
            ),
        ]);
        let mut out = Vec::new();
        let _ = ciborium::into_writer(&map, &mut out);
        out
    }

    /// Reads the layout back; anything else is a binding mismatch.
    pub fn from_bytes(b: &[u8]) -> Result<GuestBinding, VerifyError> {
        let bad = |why: &str| VerifyError::BindingMismatch {
            what: format!("user_data is not the guest layout: {why}"),
        };
        let Ok(Value::Map(entries)) = read_one(b, "user_data") else {
            return Err(bad("not a CBOR map"));
        };
        let get = |k: &str| {
            entries
                .iter()
                .find(|(key, _)| key.as_text() == Some(k))
                .map(|(_, v)| v)
        };
        if get("nacre").and_then(Value::as_integer).map(i128::from) != Some(1) {
            return Err(bad("\"nacre\" is not 1"));
        }
        let guest: [u8; 32] = get("guest")
            .and_then(Value::as_bytes)
            .and_then(|g| g.as_slice().try_into().ok())
            .ok_or_else(|| bad("\"guest\" is not 32 bytes"))?;
        let data = match get("data") {
            None | Some(Value::Null) => None,
            Some(Value::Bytes(d)) => Some(d.clone()),
            Some(_) => return Err(bad("\"data\" is not bytes")),
        };
        Ok(GuestBinding {
            guest_sha256: guest,
            data,
        })
    }
}

/// What a sync document says about its enclave's part in one exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncRole {
    /// It will receive key material, encrypted to the document's
    /// `public_key`.
    Receiver,
    /// It sends key material whose ciphertext hashes to
    /// [`SyncBinding::payload_sha256`].
    Sender,
}

/// Sync documents (docs/attestation.md): CBOR `{"nacre-sync": 1, "role": "receiver" |
/// "sender", "payload": <SHA-256 of the ciphertext, senders only>}`. Only
/// the runtime itself asks for these; a guest's user data always lands
/// inside the guest layout, so no guest can make a document that passes as
/// a peer's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncBinding {
    /// Which side of the exchange made the document.
    pub role: SyncRole,
    /// For senders: the SHA-256 of what they send.
    pub payload_sha256: Option<[u8; 32]>,
}

impl SyncBinding {
    /// The CBOR map that goes into `user_data`.
    pub fn to_bytes(&self) -> Vec<u8> {
        let role = match self.role {
            SyncRole::Receiver => "receiver",
            SyncRole::Sender => "sender",
        };
        let mut entries = vec![
            (Value::Text("nacre-sync".into()), Value::Integer(1.into())),
            (Value::Text("role".into()), Value::Text(role.into())),
        ];
        if let Some(h) = self.payload_sha256 {
            entries.push((Value::Text("payload".into()), Value::Bytes(h.to_vec())));
        }
        let mut out = Vec::new();
        let _ = ciborium::into_writer(&Value::Map(entries), &mut out);
        out
    }

    /// Reads the layout back; anything else (a runtime or guest document)
    /// is a binding mismatch.
    pub fn from_bytes(b: &[u8]) -> Result<SyncBinding, VerifyError> {
        let bad = |why: &str| VerifyError::BindingMismatch {
            what: format!("user_data is not the sync layout: {why}"),
        };
        let Ok(Value::Map(entries)) = read_one(b, "user_data") else {
            return Err(bad("not a CBOR map"));
        };
        if entries.len() > 3 {
            return Err(bad("unknown fields"));
        }
        let get = |k: &str| {
            entries
                .iter()
                .find(|(key, _)| key.as_text() == Some(k))
                .map(|(_, v)| v)
        };
        if get("nacre-sync")
            .and_then(Value::as_integer)
            .map(i128::from)
            != Some(1)
        {
            return Err(bad("\"nacre-sync\" is not 1"));
        }
        let role = match get("role").and_then(Value::as_text) {
            Some("receiver") => SyncRole::Receiver,
            Some("sender") => SyncRole::Sender,
            _ => return Err(bad("\"role\" is neither receiver nor sender")),
        };
        let payload_sha256 = match get("payload") {
            None => None,
            Some(v) => Some(
                v.as_bytes()
                    .and_then(|p| p.as_slice().try_into().ok())
                    .ok_or_else(|| bad("\"payload\" is not 32 bytes"))?,
            ),
        };
        if (role == SyncRole::Sender) != payload_sha256.is_some() {
            return Err(bad("a sender names its payload, a receiver does not"));
        }
        Ok(SyncBinding {
            role,
            payload_sha256,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_other_layouts() {
        let r = RuntimeBinding {
            tls_cert_sha256: [1; 32],
            manifest_sha256: [2; 32],
        };
        let b = r.to_bytes();
        assert_eq!(b.len(), 68);
        assert_eq!(RuntimeBinding::from_bytes(&b).unwrap(), r);
        assert!(RuntimeBinding::from_bytes(&b[..67]).is_err());
        let g = GuestBinding {
            guest_sha256: [3; 32],
            data: Some(b"hi".to_vec()),
        };
        assert_eq!(GuestBinding::from_bytes(&g.to_bytes()).unwrap(), g);
        assert!(GuestBinding::from_bytes(&b).is_err());
        assert!(RuntimeBinding::from_bytes(&g.to_bytes()).is_err());

        let sender = SyncBinding {
            role: SyncRole::Sender,
            payload_sha256: Some([4; 32]),
        };
        let receiver = SyncBinding {
            role: SyncRole::Receiver,
            payload_sha256: None,
        };
        for s in [&sender, &receiver] {
            assert_eq!(&SyncBinding::from_bytes(&s.to_bytes()).unwrap(), s);
            assert!(GuestBinding::from_bytes(&s.to_bytes()).is_err());
            assert!(RuntimeBinding::from_bytes(&s.to_bytes()).is_err());
        }
        // No guest document, whatever its data, reads as a sync document.
        let spoof = GuestBinding {
            guest_sha256: [5; 32],
            data: Some(sender.to_bytes()),
        };
        assert!(SyncBinding::from_bytes(&spoof.to_bytes()).is_err());
        assert!(SyncBinding::from_bytes(&b).is_err());
        let half = SyncBinding {
            role: SyncRole::Sender,
            payload_sha256: None,
        };
        assert!(SyncBinding::from_bytes(&half.to_bytes()).is_err());
    }
}
