//! What the host keeps, and how it is laid out in its store.
//!
//! - `root`: the deployment root as KMS wrapped it ([`RootRecord`]); not
//!   secret, and useless without KMS's consent.
//! - `snapshots/<root id>/<seq>`: one [`Manifest`] per version written,
//!   sealed with the manifest key and bound to the deployment and its
//!   sequence number. The root id names the wrapped root the manifests
//!   belong to ([`root_id`]), so snapshots of a root that lost a race to
//!   be the deployment's (two first enclaves at once) are never mistaken
//!   for the winner's.
//!   It holds the deployment's key material as sync moves it (certificate
//!   and key, ACME account, deployment key, guest table) and names every
//!   guest object by the SHA-256 of its sealed bytes, so no object can be
//!   swapped for another, or an older one of the same guest.
//! - `objects/<sha256>`: one guest's component, or its state slot and
//!   key-value data ([`GuestData`]), each sealed with a key derived for
//!   that guest. Components are written once and named by content, so a
//!   key-value write does not rewrite megabytes of code.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use zeroize::Zeroizing;

use super::keys::{Purpose, Root, SealError};

/// Where the wrapped root is kept.
pub const ROOT: &str = "root";
/// The prefix of manifests.
pub const SNAPSHOTS: &str = "snapshots/";
/// The prefix of guest objects.
pub const OBJECTS: &str = "objects/";

/// Why a snapshot or one of its objects cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// It did not open: changed, truncated, or not this deployment's.
    #[error("{name}: {source}")]
    Sealed {
        /// The store name.
        name: String,
        /// Why.
        source: SealError,
    },
    /// It opened but is not what it should be.
    #[error("{name}: {why}")]
    Malformed {
        /// The store name.
        name: String,
        /// Why.
        why: String,
    },
}

/// The wrapped root, as stored at [`ROOT`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RootRecord {
    /// The deployment it belongs to (also in KMS's encryption context).
    pub deployment: String,
    /// The KMS key that wrapped it.
    pub key: String,
    /// KMS's `CiphertextBlob`.
    #[serde(with = "serde_bytes")]
    pub ciphertext: Vec<u8>,
}

/// A sealed object a manifest names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectRef {
    /// Its store name.
    pub name: String,
    /// SHA-256 of its sealed bytes.
    pub sha256: ByteBuf,
    /// Its size: more is not read.
    pub size: u64,
}

/// The most a manifest or the root record may be: the key material and a
/// guest table, never components or data.
pub const MAX_MANIFEST: u64 = 16 << 20;

/// One guest name's objects.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct GuestObjects {
    /// The component, by the SHA-256 of its plaintext bytes.
    pub components: BTreeMap<String, ObjectRef>,
    /// Its state slot and key-value data, if any.
    pub data: Option<ObjectRef>,
}

/// One version of the deployment, sealed at `snapshots/<seq>`.
#[derive(Serialize, Deserialize)]
pub struct Manifest {
    /// The deployment's name.
    pub deployment: String,
    /// Its sequence number (also in its name and its associated data).
    pub seq: u64,
    /// When it was written, Unix milliseconds, by the enclave's clock.
    pub written_ms: u64,
    /// The key material as sync encodes it
    /// ([`nacre_sync::seal::Payload`]): secret.
    pub payload: ByteBuf,
    /// Each guest name's objects.
    pub guests: BTreeMap<String, GuestObjects>,
}

/// A guest's data: its state slot and its key-value buckets.
#[derive(Default, Serialize, Deserialize)]
pub struct GuestData {
    /// The state slot.
    pub state: Option<ByteBuf>,
    /// Buckets, keys, values.
    pub kv: BTreeMap<String, BTreeMap<String, ByteBuf>>,
}

/// One guest's buckets, keys and values, as the key-value store holds them.
pub type Buckets = BTreeMap<String, BTreeMap<String, Vec<u8>>>;

impl GuestData {
    /// A guest's data from its state slot and its buckets.
    pub fn new(state: Option<&[u8]>, buckets: Buckets) -> GuestData {
        let kv = buckets
            .into_iter()
            .map(|(b, keys)| {
                (
                    b,
                    keys.into_iter()
                        .map(|(k, v)| (k, ByteBuf::from(v)))
                        .collect(),
                )
            })
            .collect();
        GuestData {
            state: state.map(|s| ByteBuf::from(s.to_vec())),
            kv,
        }
    }

    /// The state slot and the buckets, as the stores take them back.
    pub fn into_parts(self) -> (Option<Vec<u8>>, Buckets) {
        let buckets = self
            .kv
            .into_iter()
            .map(|(b, keys)| {
                (
                    b,
                    keys.into_iter().map(|(k, v)| (k, v.into_vec())).collect(),
                )
            })
            .collect();
        (self.state.map(ByteBuf::into_vec), buckets)
    }
}

/// The public name of a wrapped root: 16 bytes of the SHA-256 of KMS's
/// `CiphertextBlob`, in hex.
pub fn root_id(ciphertext: &[u8]) -> String {
    hex::encode(&nacre_sync::seal::sha256(ciphertext)[..16])
}

/// Where the manifests sealed under root `root_id` are.
pub fn snapshots_of(root_id: &str) -> String {
    format!("{SNAPSHOTS}{root_id}/")
}

/// The store name of manifest `seq` under root `root_id`: zero-padded, so
/// names sort as numbers.
pub fn snapshot_name(root_id: &str, seq: u64) -> String {
    format!("{}{seq:020}", snapshots_of(root_id))
}

/// The sequence number a manifest's name under root `root_id` carries.
pub fn snapshot_seq(root_id: &str, name: &str) -> Option<u64> {
    let digits = name.strip_prefix(&snapshots_of(root_id))?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

/// The store name of sealed bytes: their SHA-256.
pub fn object_ref(sealed: &[u8]) -> ObjectRef {
    let sha = nacre_sync::seal::sha256(sealed);
    ObjectRef {
        name: format!("{OBJECTS}{}", hex::encode(sha)),
        sha256: ByteBuf::from(sha.to_vec()),
        size: sealed.len() as u64,
    }
}

fn manifest_aad(deployment: &str, seq: u64) -> Vec<u8> {
    let mut aad = b"nacre snapshot manifest v1\0".to_vec();
    aad.extend_from_slice(deployment.as_bytes());
    aad.push(0);
    aad.extend_from_slice(&seq.to_be_bytes());
    aad
}

fn guest_aad(kind: &str, deployment: &str, guest: &str) -> Vec<u8> {
    let mut aad = format!("nacre {kind} v1\0").into_bytes();
    aad.extend_from_slice(deployment.as_bytes());
    aad.push(0);
    aad.extend_from_slice(guest.as_bytes());
    aad
}

impl Manifest {
    /// Sealed for `snapshots/<seq>`.
    pub fn seal(&self, root: &Root) -> Result<Vec<u8>, SealError> {
        let bytes = cbor(self);
        root.derive(Purpose::Manifest, None)
            .seal(&manifest_aad(&self.deployment, self.seq), &bytes)
    }

    /// Opens `sealed`, read at store name `name` as number `seq`, as
    /// `deployment`'s.
    pub fn open(
        root: &Root,
        deployment: &str,
        (name, seq): (&str, u64),
        sealed: &[u8],
    ) -> Result<Manifest, SnapshotError> {
        let name = name.to_string();
        let plain = root
            .derive(Purpose::Manifest, None)
            .open(&manifest_aad(deployment, seq), sealed)
            .map_err(|source| SnapshotError::Sealed {
                name: name.clone(),
                source,
            })?;
        let manifest: Manifest =
            ciborium::from_reader(&plain[..]).map_err(|e| SnapshotError::Malformed {
                name: name.clone(),
                why: format!("not a manifest: {e}"),
            })?;
        // Authenticated with the name and the deployment, so these hold;
        // checked anyway, as the one place both are read.
        if manifest.seq != seq || manifest.deployment != deployment {
            return Err(SnapshotError::Malformed {
                name,
                why: "names another sequence number or deployment".into(),
            });
        }
        Ok(manifest)
    }
}

/// `component` of `guest`, sealed.
pub fn seal_component(
    root: &Root,
    deployment: &str,
    guest: &str,
    component: &[u8],
) -> Result<Vec<u8>, SealError> {
    root.derive(Purpose::Component, Some(guest))
        .seal(&guest_aad("component", deployment, guest), component)
}

/// `data` of `guest`, sealed.
pub fn seal_data(
    root: &Root,
    deployment: &str,
    guest: &str,
    data: &GuestData,
) -> Result<Vec<u8>, SealError> {
    root.derive(Purpose::GuestData, Some(guest))
        .seal(&guest_aad("guest data", deployment, guest), &cbor(data))
}

/// Checks `sealed` is the object `wanted` names, and opens it as `guest`'s
/// component.
pub fn open_component(
    root: &Root,
    deployment: &str,
    guest: &str,
    wanted: &ObjectRef,
    sealed: &[u8],
) -> Result<Zeroizing<Vec<u8>>, SnapshotError> {
    check_ref(wanted, sealed)?;
    root.derive(Purpose::Component, Some(guest))
        .open(&guest_aad("component", deployment, guest), sealed)
        .map_err(|source| SnapshotError::Sealed {
            name: wanted.name.clone(),
            source,
        })
}

/// Checks `sealed` is the object `wanted` names, and opens it as `guest`'s
/// data.
pub fn open_data(
    root: &Root,
    deployment: &str,
    guest: &str,
    wanted: &ObjectRef,
    sealed: &[u8],
) -> Result<GuestData, SnapshotError> {
    check_ref(wanted, sealed)?;
    let plain = root
        .derive(Purpose::GuestData, Some(guest))
        .open(&guest_aad("guest data", deployment, guest), sealed)
        .map_err(|source| SnapshotError::Sealed {
            name: wanted.name.clone(),
            source,
        })?;
    ciborium::from_reader(&plain[..]).map_err(|e| SnapshotError::Malformed {
        name: wanted.name.clone(),
        why: format!("not guest data: {e}"),
    })
}

fn check_ref(wanted: &ObjectRef, sealed: &[u8]) -> Result<(), SnapshotError> {
    if nacre_sync::seal::sha256(sealed)[..] != wanted.sha256[..] {
        return Err(SnapshotError::Malformed {
            name: wanted.name.clone(),
            why: "its bytes are not the ones the manifest names".into(),
        });
    }
    Ok(())
}

fn cbor<T: Serialize>(value: &T) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::new());
    // Writing CBOR into a Vec fails only on an I/O error, which a Vec
    // never gives.
    let _ = ciborium::into_writer(value, &mut *out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(seq: u64) -> Manifest {
        Manifest {
            deployment: "app.test".into(),
            seq,
            written_ms: 1,
            payload: ByteBuf::from(b"payload".to_vec()),
            guests: BTreeMap::new(),
        }
    }

    #[test]
    fn a_manifest_opens_only_at_its_name_in_its_deployment() {
        let root = Root::from_bytes(&[3; 32]).expect("root");
        let sealed = manifest(7).seal(&root).expect("seal");
        let m = Manifest::open(&root, "app.test", ("m", 7), &sealed).expect("open");
        assert_eq!(m.payload.as_slice(), b"payload");
        // Renamed to another sequence number: the host's rollback or
        // replay under a newer name.
        assert!(Manifest::open(&root, "app.test", ("m", 8), &sealed).is_err());
        assert!(Manifest::open(&root, "other.test", ("m", 7), &sealed).is_err());
        let other = Root::from_bytes(&[4; 32]).expect("root");
        assert!(Manifest::open(&other, "app.test", ("m", 7), &sealed).is_err());
    }

    #[test]
    fn guest_objects_are_bound_to_their_guest_and_reference() {
        let root = Root::from_bytes(&[5; 32]).expect("root");
        let data = GuestData {
            state: Some(ByteBuf::from(b"s".to_vec())),
            kv: BTreeMap::new(),
        };
        let sealed = seal_data(&root, "d", "alpha", &data).expect("seal");
        let r = object_ref(&sealed);
        assert!(open_data(&root, "d", "alpha", &r, &sealed).is_ok());
        // Alpha's data presented as beta's.
        assert!(open_data(&root, "d", "beta", &r, &sealed).is_err());
        // Another object than the manifest names (an older one).
        let older = seal_data(&root, "d", "alpha", &GuestData::default()).expect("seal");
        assert!(open_data(&root, "d", "alpha", &r, &older).is_err());
        let comp = seal_component(&root, "d", "alpha", b"wasm").expect("seal");
        let cr = object_ref(&comp);
        assert!(open_data(&root, "d", "alpha", &cr, &comp).is_err());
        assert_eq!(
            &open_component(&root, "d", "alpha", &cr, &comp).expect("open")[..],
            b"wasm"
        );
    }

    #[test]
    fn snapshot_names_sort_as_numbers() {
        let id = root_id(b"wrapped");
        assert_eq!(id.len(), 32);
        let name = snapshot_name(&id, 12);
        assert_eq!(name, format!("snapshots/{id}/00000000000000000012"));
        assert_eq!(snapshot_seq(&id, &name), Some(12));
        // Another root's manifests are not this one's.
        assert_eq!(snapshot_seq(&root_id(b"other"), &name), None);
        assert_eq!(snapshot_seq(&id, &format!("snapshots/{id}/12")), None);
        assert_eq!(snapshot_seq(&id, "objects/00000000000000000012"), None);
        assert!(snapshot_name(&id, 9) < snapshot_name(&id, 10));
    }
}
