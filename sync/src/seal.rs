//! What moves between the enclaves of a deployment, and how it is sealed.
//!
//! The key material ([`Payload`]: the TLS certificate and key, every guest
//! name's state slot, the guest table with component bytes) travels as
//! CBOR, HPKE-encrypted (RFC 9180: X25519, HKDF-SHA256, ChaCha20-Poly1305)
//! to a public key the receiving enclave made for this one exchange and
//! named in its attestation document. The host sees only ciphertext.

use std::collections::BTreeMap;

use hpke::aead::ChaCha20Poly1305;
use hpke::kdf::HkdfSha256;
use hpke::kem::X25519HkdfSha256;
use hpke::{Deserializable, Kem, OpModeR, OpModeS, Serializable};
use nacre_api::TcpEntry;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use sha2::{Digest, Sha256};

use crate::ProtoError;
use crate::wire::Lineage;

/// The HPKE context string: both sides must use it, and no other protocol
/// does.
const INFO: &[u8] = b"nacre key sync v1";
/// Bytes of an X25519 encapsulated key, in front of the ciphertext.
const ENCAPPED: usize = 32;

/// Everything a deployment's enclaves share, by content: the blobs it
/// names (components, state values) travel beside it only to a receiver
/// that lacks them ([`Bundle`]). Its SHA-256 commits to all of it, blobs
/// included: it is what heartbeats compare.
#[derive(Clone, Serialize, Deserialize)]
pub struct Payload {
    /// The deployment's name (`--fqdn-leader`): an enclave never takes key
    /// material of another deployment, even of the same image.
    pub deployment: String,
    /// Which key set this is, and since when.
    pub lineage: Lineage,
    /// Bumped by the leader at every change.
    pub version: u64,
    /// The deployment key ([`crate::auth`]): it authenticates the messages
    /// that are not sealed.
    pub deployment_key: ByteBuf,
    /// The TLS certificate chain (DER).
    pub tls_chain: Vec<ByteBuf>,
    /// Its private key (PKCS#8, PKCS#1 or SEC1 DER).
    pub tls_key: ByteBuf,
    /// Each guest name's state slot, by the SHA-256 of its value.
    pub states: BTreeMap<String, ByteBuf>,
    /// The guest table.
    pub guests: Vec<GuestRecord>,
    /// The ACME account (its key signs orders for the deployment's names).
    pub acme_account: Option<String>,
    /// TLS-ALPN-01 challenges open on the leader: the CA may validate any
    /// enclave.
    pub challenges: Vec<ChallengeRecord>,
}

/// Only what names the key set: the rest is secret.
impl std::fmt::Debug for Payload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Payload")
            .field("deployment", &self.deployment)
            .field("lineage", &self.lineage)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

/// One open TLS-ALPN-01 challenge.
#[derive(Clone, Serialize, Deserialize)]
pub struct ChallengeRecord {
    /// The name (SNI) it answers for.
    pub name: String,
    /// Its certificate (DER).
    pub certificate: ByteBuf,
    /// Its private key (DER).
    pub key: ByteBuf,
}

/// One guest as the leader deployed it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GuestRecord {
    /// The guest's name.
    pub name: String,
    /// Its route prefix.
    pub route: String,
    /// Its allow list, as `HOST:PORT` rules.
    pub allow: Vec<String>,
    /// SHA-256 of the component's bytes.
    pub component_sha256: ByteBuf,
    /// A TCP guest's port and TLS mode; absent for an HTTP guest, so an
    /// HTTP guest's record, and a record written before TCP guests, read
    /// and encode as before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpEntry>,
}

impl Payload {
    /// The CBOR bytes.
    pub fn encode(&self) -> Vec<u8> {
        encode(self)
    }

    /// Reads CBOR bytes back.
    pub fn decode(bytes: &[u8]) -> Result<Payload, ProtoError> {
        ciborium::from_reader(bytes).map_err(|e| ProtoError(format!("payload: {e}")))
    }
}

/// What is sealed to a receiver: the payload as the sender encoded it (its
/// hash is the one heartbeats compare) and the blobs the receiver said it
/// lacks. A receiver keys each blob by the SHA-256 it computes, never by a
/// name the sender gives.
#[derive(Serialize, Deserialize)]
pub struct Bundle {
    /// The encoded [`Payload`].
    pub payload: ByteBuf,
    /// The blobs the receiver lacks.
    pub blobs: Vec<ByteBuf>,
}

impl Bundle {
    /// The CBOR bytes.
    pub fn encode(&self) -> Vec<u8> {
        encode(self)
    }

    /// Reads CBOR bytes back.
    pub fn decode(bytes: &[u8]) -> Result<Bundle, ProtoError> {
        ciborium::from_reader(bytes).map_err(|e| ProtoError(format!("bundle: {e}")))
    }
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = Vec::new();
    // Writing structs of strings, integers and bytes into a Vec cannot
    // fail.
    let _ = ciborium::into_writer(value, &mut out);
    out
}

/// SHA-256, as the key material's hash in heartbeats and the ciphertext's
/// in a sender's document.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// The private half of a one-exchange key pair; dropped after the exchange.
pub struct Recipient {
    secret: <X25519HkdfSha256 as Kem>::PrivateKey,
}

impl Recipient {
    /// A fresh key pair; the public key goes into the receiver's document.
    pub fn new() -> (Recipient, Vec<u8>) {
        let (secret, public) = X25519HkdfSha256::gen_keypair();
        (Recipient { secret }, public.to_bytes().to_vec())
    }

    /// The key pair of a known X25519 secret: for the fuzz target and
    /// tests, which must run the same every time. A real exchange makes a
    /// fresh one with [`Recipient::new`].
    pub fn from_secret(secret: &[u8]) -> Option<Recipient> {
        Some(Recipient {
            secret: <X25519HkdfSha256 as Kem>::PrivateKey::from_bytes(secret).ok()?,
        })
    }

    /// The public half, as [`Recipient::new`] returns it.
    pub fn public_key(&self) -> Vec<u8> {
        X25519HkdfSha256::sk_to_pk(&self.secret).to_bytes().to_vec()
    }

    /// Opens what [`seal`] made for this key pair.
    pub fn open(&self, sealed: &[u8]) -> Result<Vec<u8>, ProtoError> {
        if sealed.len() < ENCAPPED {
            return Err(ProtoError("the sealed keys are truncated".into()));
        }
        let (encapped, ciphertext) = sealed.split_at(ENCAPPED);
        let encapped = <X25519HkdfSha256 as Kem>::EncappedKey::from_bytes(encapped)
            .map_err(|_| ProtoError("the encapsulated key is not X25519".into()))?;
        hpke::single_shot_open::<ChaCha20Poly1305, HkdfSha256, X25519HkdfSha256>(
            &OpModeR::Base,
            &self.secret,
            &encapped,
            INFO,
            ciphertext,
            &[],
        )
        .map_err(|_| ProtoError("the keys do not decrypt with this exchange's key".into()))
    }
}

/// Encrypts `plaintext` to `public_key` (a receiver's, from its verified
/// document): the encapsulated key followed by the ciphertext.
pub fn seal(public_key: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, ProtoError> {
    let public = <X25519HkdfSha256 as Kem>::PublicKey::from_bytes(public_key)
        .map_err(|_| ProtoError("the receiver's public key is not an X25519 key".into()))?;
    let (encapped, ciphertext) = hpke::single_shot_seal::<
        ChaCha20Poly1305,
        HkdfSha256,
        X25519HkdfSha256,
    >(&OpModeS::Base, &public, INFO, plaintext, &[])
    .map_err(|e| ProtoError(format!("cannot seal: {e:?}")))?;
    let mut out = encapped.to_bytes().to_vec();
    out.extend_from_slice(&ciphertext);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_recipient_opens_and_a_changed_byte_is_refused() {
        let (recipient, public) = Recipient::new();
        let (other, _) = Recipient::new();
        let sealed = seal(&public, b"the keys").unwrap();
        assert_eq!(recipient.open(&sealed).unwrap(), b"the keys");
        assert!(other.open(&sealed).is_err());
        let mut changed = sealed.clone();
        let last = changed.len() - 1;
        changed[last] ^= 1;
        assert!(recipient.open(&changed).is_err());
        assert!(recipient.open(&sealed[..10]).is_err());
        assert!(seal(b"short", b"x").is_err());
    }

    #[test]
    fn payloads_round_trip() {
        let mut p = payload_with_guest();
        p.tls_chain = vec![ByteBuf::from(vec![1, 2])];
        p.states = BTreeMap::from([("a".into(), ByteBuf::from(b"s".to_vec()))]);
        p.acme_account = Some("{}".into());
        p.challenges = vec![ChallengeRecord {
            name: "app.test".into(),
            certificate: ByteBuf::from(vec![4]),
            key: ByteBuf::from(vec![5]),
        }];
        let back = Payload::decode(&p.encode()).unwrap();
        assert_eq!(back.encode(), p.encode());
        assert!(Payload::decode(b"\xff garbage").is_err());
        // Debug names the key set, never the keys.
        let shown = format!("{p:?}");
        assert!(
            shown.contains("app.test") && !shown.contains("tls_key"),
            "{shown}"
        );
        let b = Bundle {
            payload: ByteBuf::from(p.encode()),
            blobs: vec![ByteBuf::from(vec![1u8; 3])],
        };
        let back = Bundle::decode(&b.encode()).unwrap();
        assert_eq!(back.payload, b.payload);
        assert!(Bundle::decode(b"").is_err());
    }

    #[test]
    fn a_tcp_guest_s_record_keeps_its_port_and_an_older_record_reads_as_http() {
        let mut p = payload_with_guest();
        let http = p.encode();
        p.guests[0].tcp = Some(TcpEntry {
            port: 8080,
            tls: "guest".into(),
        });
        let back = Payload::decode(&p.encode()).unwrap();
        assert_eq!(back.guests[0].tcp, p.guests[0].tcp);
        // An HTTP guest's record has no `tcp` field at all: records sealed
        // before TCP guests existed read the same, as HTTP guests.
        assert!(!http.windows(3).any(|w| w == b"tcp"));
        assert_eq!(Payload::decode(&http).unwrap().guests[0].tcp, None);
    }

    fn payload_with_guest() -> Payload {
        Payload {
            deployment: "app.test:444".into(),
            deployment_key: ByteBuf::from(vec![9u8; 32]),
            lineage: Lineage {
                id: "00".repeat(16),
                created_ms: 7,
            },
            version: 3,
            tls_chain: vec![],
            tls_key: ByteBuf::from(vec![3]),
            states: BTreeMap::new(),
            guests: vec![GuestRecord {
                name: "a".into(),
                route: "/a".into(),
                tcp: None,
                allow: vec![],
                component_sha256: ByteBuf::from(vec![0u8; 32]),
            }],
            acme_account: None,
            challenges: vec![],
        }
    }
}
