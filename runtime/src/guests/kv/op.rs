//! Key-value calls as data: [`KvOp`] in, [`KvReply`] or [`KvError`] out.
//!
//! Every host function becomes one operation on one bucket, so a store can
//! run it here ([`super::MemoryKv::apply`]) or carry it elsewhere first, a
//! replicated log for instance, and apply it on every copy. All three
//! types are serde-serialisable; byte strings go as CBOR byte strings
//! (`serde_bytes`), not as arrays of numbers four times their size.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::Pair;
use crate::guests::bindings::wasi::keyvalue::store;

/// One key-value operation of a guest on one of its buckets. The guest's
/// namespace travels beside it, taken from the runtime's record of the
/// caller, never from the guest.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum KvOp {
    /// Opens the bucket, making it when missing.
    Open {
        /// The bucket's identifier.
        bucket: String,
    },
    /// The value of `key`.
    Get {
        /// The bucket.
        bucket: String,
        /// The key.
        key: String,
    },
    /// Whether `key` is present.
    Exists {
        /// The bucket.
        bucket: String,
        /// The key.
        key: String,
    },
    /// A page of keys, from `cursor` on.
    ListKeys {
        /// The bucket.
        bucket: String,
        /// Where the page starts (`None`: the first key).
        cursor: Option<u64>,
    },
    /// The values of `keys`, in order.
    GetMany {
        /// The bucket.
        bucket: String,
        /// The keys.
        keys: Vec<String>,
    },
    /// Stores `value` under `key`.
    Set {
        /// The bucket.
        bucket: String,
        /// The key.
        key: String,
        /// The value.
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
    },
    /// Removes `key`, if present.
    Delete {
        /// The bucket.
        bucket: String,
        /// The key.
        key: String,
    },
    /// Adds `delta` to the decimal number under `key` (absent: 0).
    Increment {
        /// The bucket.
        bucket: String,
        /// The key.
        key: String,
        /// What to add.
        delta: u64,
    },
    /// Stores `new` under `key` if its value is `old` (`None`: absent).
    CompareAndSwap {
        /// The bucket.
        bucket: String,
        /// The key.
        key: String,
        /// The value expected, or `None` for "no value".
        #[serde(with = "serde_bytes")]
        old: Option<Vec<u8>>,
        /// The value to store on a match.
        #[serde(with = "serde_bytes")]
        new: Vec<u8>,
    },
    /// Stores every pair.
    SetMany {
        /// The bucket.
        bucket: String,
        /// Keys and values.
        #[serde(with = "pairs")]
        pairs: Vec<Pair>,
    },
    /// Removes every key present.
    DeleteMany {
        /// The bucket.
        bucket: String,
        /// The keys.
        keys: Vec<String>,
    },
}

impl KvOp {
    /// Whether the operation only reads: a replicated store may answer it
    /// from its own copy rather than order it among the writes.
    pub fn is_read(&self) -> bool {
        matches!(
            self,
            KvOp::Get { .. } | KvOp::Exists { .. } | KvOp::ListKeys { .. } | KvOp::GetMany { .. }
        )
    }

    /// An upper bound of the operation's encoded size, when that is cheap
    /// to know (one key, one value: their lengths and a little framing);
    /// `None` for the batches, whose size only encoding them tells.
    pub fn size_bound(&self) -> Option<usize> {
        // CBOR frames each string or byte string with at most 9 bytes,
        // and the variant and field names add a few dozen.
        const FRAMING: usize = 128;
        let carried = match self {
            KvOp::Open { bucket } | KvOp::ListKeys { bucket, .. } => bucket.len(),
            KvOp::Get { bucket, key }
            | KvOp::Exists { bucket, key }
            | KvOp::Delete { bucket, key }
            | KvOp::Increment { bucket, key, .. } => bucket.len() + key.len(),
            KvOp::Set { bucket, key, value } => bucket.len() + key.len() + value.len(),
            KvOp::CompareAndSwap {
                bucket,
                key,
                old,
                new,
            } => bucket.len() + key.len() + old.as_ref().map_or(0, Vec::len) + new.len(),
            KvOp::GetMany { .. } | KvOp::SetMany { .. } | KvOp::DeleteMany { .. } => return None,
        };
        Some(carried + FRAMING)
    }

    /// The bucket the operation acts on.
    pub fn bucket(&self) -> &str {
        match self {
            KvOp::Open { bucket }
            | KvOp::Get { bucket, .. }
            | KvOp::Exists { bucket, .. }
            | KvOp::ListKeys { bucket, .. }
            | KvOp::GetMany { bucket, .. }
            | KvOp::Set { bucket, .. }
            | KvOp::Delete { bucket, .. }
            | KvOp::Increment { bucket, .. }
            | KvOp::CompareAndSwap { bucket, .. }
            | KvOp::SetMany { bucket, .. }
            | KvOp::DeleteMany { bucket, .. } => bucket,
        }
    }
}

/// What an operation answered, when it succeeded.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum KvReply {
    /// Done, nothing to say (open, set, delete and the batch writes).
    Unit,
    /// A value, or none (get).
    Value(#[serde(with = "serde_bytes")] Option<Vec<u8>>),
    /// Yes or no (exists, compare-and-swap).
    Bool(bool),
    /// A number (increment).
    Number(u64),
    /// A page of keys and where the next starts (list-keys).
    Keys {
        /// The keys, in order.
        keys: Vec<String>,
        /// The cursor of the next page (`None`: this was the last).
        cursor: Option<u64>,
    },
    /// Each key asked for with its value, or none (get-many).
    Values(#[serde(with = "optional_pairs")] Vec<Option<Pair>>),
}

/// Why an operation failed: the `wasi:keyvalue` error the guest sees, in a
/// form that serialises.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Error)]
pub enum KvError {
    /// The bucket does not exist.
    #[error("no such bucket")]
    NoSuchStore,
    /// Not the caller's to use.
    #[error("access denied")]
    AccessDenied,
    /// Anything else: a limit, a quota, a bad identifier; the message says
    /// which.
    #[error("{0}")]
    Other(String),
}

impl From<store::Error> for KvError {
    fn from(e: store::Error) -> KvError {
        match e {
            store::Error::NoSuchStore => KvError::NoSuchStore,
            store::Error::AccessDenied => KvError::AccessDenied,
            store::Error::Other(m) => KvError::Other(m),
        }
    }
}

impl From<KvError> for store::Error {
    fn from(e: KvError) -> store::Error {
        match e {
            KvError::NoSuchStore => store::Error::NoSuchStore,
            KvError::AccessDenied => store::Error::AccessDenied,
            KvError::Other(m) => store::Error::Other(m),
        }
    }
}

/// The answer expected for one kind of operation, taken out of a
/// [`KvReply`]; any other kind is a store's bug, told to the guest as an
/// error rather than a trap.
impl KvReply {
    fn unexpected(self, wanted: &str) -> KvError {
        KvError::Other(format!(
            "key-value store answered {self:?} where {wanted} was due"
        ))
    }

    /// The answer of open, set, delete and the batch writes.
    pub(crate) fn into_unit(self) -> Result<(), KvError> {
        match self {
            KvReply::Unit => Ok(()),
            other => Err(other.unexpected("nothing")),
        }
    }

    /// The answer of get.
    pub(crate) fn into_value(self) -> Result<Option<Vec<u8>>, KvError> {
        match self {
            KvReply::Value(v) => Ok(v),
            other => Err(other.unexpected("a value")),
        }
    }

    /// The answer of exists and compare-and-swap.
    pub(crate) fn into_bool(self) -> Result<bool, KvError> {
        match self {
            KvReply::Bool(b) => Ok(b),
            other => Err(other.unexpected("a boolean")),
        }
    }

    /// The answer of increment.
    pub(crate) fn into_number(self) -> Result<u64, KvError> {
        match self {
            KvReply::Number(n) => Ok(n),
            other => Err(other.unexpected("a number")),
        }
    }

    /// The answer of list-keys, as the guest receives it.
    pub(crate) fn into_keys(self) -> Result<store::KeyResponse, KvError> {
        match self {
            KvReply::Keys { keys, cursor } => Ok(store::KeyResponse { keys, cursor }),
            other => Err(other.unexpected("keys")),
        }
    }

    /// The answer of get-many.
    pub(crate) fn into_values(self) -> Result<Vec<Option<Pair>>, KvError> {
        match self {
            KvReply::Values(v) => Ok(v),
            other => Err(other.unexpected("values")),
        }
    }
}

/// A [`Pair`] as serde writes it, its value a byte string.
#[derive(Serialize)]
struct PairOut<'a>(&'a str, #[serde(with = "serde_bytes")] &'a [u8]);

/// A [`Pair`] as serde reads it.
#[derive(Deserialize)]
struct PairIn(String, #[serde(with = "serde_bytes")] Vec<u8>);

/// `Vec<Pair>` with byte-string values.
mod pairs {
    use serde::{Deserialize as _, Deserializer, Serializer};

    use super::{Pair, PairIn, PairOut};

    pub(super) fn serialize<S: Serializer>(pairs: &[Pair], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(pairs.iter().map(|(k, v)| PairOut(k, v)))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Pair>, D::Error> {
        let read = Vec::<PairIn>::deserialize(d)?;
        Ok(read.into_iter().map(|PairIn(k, v)| (k, v)).collect())
    }
}

/// `Vec<Option<Pair>>` with byte-string values.
mod optional_pairs {
    use serde::{Deserialize as _, Deserializer, Serializer};

    use super::{Pair, PairIn, PairOut};

    pub(super) fn serialize<S: Serializer>(
        values: &[Option<Pair>],
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_seq(
            values
                .iter()
                .map(|p| p.as_ref().map(|(k, v)| PairOut(k, v))),
        )
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Vec<Option<Pair>>, D::Error> {
        let read = Vec::<Option<PairIn>>::deserialize(d)?;
        Ok(read
            .into_iter()
            .map(|p| p.map(|PairIn(k, v)| (k, v)))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip<T: Serialize + serde::de::DeserializeOwned>(v: &T) -> (T, Vec<u8>) {
        let mut bytes = Vec::new();
        ciborium::into_writer(v, &mut bytes).expect("encode");
        (ciborium::from_reader(&bytes[..]).expect("decode"), bytes)
    }

    #[test]
    fn ops_replies_and_errors_round_trip_through_cbor() {
        let ops = [
            KvOp::Open { bucket: "b".into() },
            KvOp::ListKeys {
                bucket: "b".into(),
                cursor: Some(7),
            },
            KvOp::CompareAndSwap {
                bucket: "b".into(),
                key: "k".into(),
                old: None,
                new: vec![1, 2],
            },
            KvOp::CompareAndSwap {
                bucket: "b".into(),
                key: "k".into(),
                old: Some(vec![]),
                new: vec![3],
            },
            KvOp::SetMany {
                bucket: "b".into(),
                pairs: vec![("k".into(), vec![0; 3]), ("l".into(), vec![])],
            },
        ];
        for op in &ops {
            assert_eq!(&round_trip(op).0, op);
        }
        let replies = [
            Ok(KvReply::Value(Some(vec![9; 4]))),
            Ok(KvReply::Value(None)),
            Ok(KvReply::Values(vec![None, Some(("k".into(), vec![1]))])),
            Ok(KvReply::Keys {
                keys: vec!["a".into()],
                cursor: None,
            }),
            Err(KvError::Other("quota".into())),
            Err(KvError::NoSuchStore),
        ];
        for r in &replies {
            assert_eq!(&round_trip(r).0, r);
        }
        // A 1,000-byte value costs about 1,000 bytes, not one per number.
        let (_, bytes) = round_trip(&KvOp::Set {
            bucket: "b".into(),
            key: "k".into(),
            value: vec![200; 1000],
        });
        assert!(bytes.len() < 1100, "{} bytes", bytes.len());
    }

    #[test]
    fn reads_buckets_and_error_conversions() {
        let get = KvOp::Get {
            bucket: "b".into(),
            key: "k".into(),
        };
        assert!(get.is_read());
        assert_eq!(get.bucket(), "b");
        let open = KvOp::Open { bucket: "o".into() };
        assert!(!open.is_read(), "open may make the bucket");
        assert_eq!(open.bucket(), "o");
        for e in [
            KvError::NoSuchStore,
            KvError::AccessDenied,
            KvError::Other("m".into()),
        ] {
            assert_eq!(KvError::from(store::Error::from(e.clone())), e);
        }
        assert!(KvReply::Unit.into_bool().is_err());
    }

    #[test]
    fn size_bounds_are_never_below_the_encoding() {
        let long = "x".repeat(300);
        let ops = [
            KvOp::Open {
                bucket: long.clone(),
            },
            KvOp::Get {
                bucket: long.clone(),
                key: long.clone(),
            },
            KvOp::Increment {
                bucket: "b".into(),
                key: long.clone(),
                delta: u64::MAX,
            },
            KvOp::Set {
                bucket: "b".into(),
                key: long.clone(),
                value: vec![255; 70_000],
            },
            KvOp::CompareAndSwap {
                bucket: long.clone(),
                key: long,
                old: Some(vec![1; 65_536]),
                new: vec![2; 65_536],
            },
        ];
        for op in &ops {
            let bound = op.size_bound().expect("one key, one value");
            assert!(round_trip(op).1.len() <= bound, "{op:?}");
        }
        let batch = KvOp::DeleteMany {
            bucket: "b".into(),
            keys: vec!["k".into(); 3],
        };
        assert_eq!(
            batch.size_bound(),
            None,
            "a batch is encoded to be measured"
        );
    }
}
