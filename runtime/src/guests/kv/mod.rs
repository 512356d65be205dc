//! `wasi:keyvalue` for guests (store, atomics, batch).
//!
//! Each guest name has its own namespace of buckets: values outlive the
//! per-request instance and survive redeploys under the same name. A guest
//! can only ever name buckets inside its own namespace, because the
//! namespace comes from the runtime's record of who is calling, never from
//! the guest. Quotas (keys and bytes per guest) and size limits turn into
//! errors, never traps.
//!
//! The data lives behind [`KeyValue`]: [`MemoryKv`] keeps it in the
//! runtime's memory for the enclave's life; a replicated or sealed store
//! is another implementation, linked by the same host functions
//! ([`link`]).

mod link;
mod memory;

pub(crate) use link::add_to_linker;
pub use memory::{KvExport, MemoryKv};

use super::GuestName;
use super::bindings::wasi::keyvalue::store;

/// Longest key.
pub(crate) const MAX_KEY: usize = 1024;
/// Largest value.
pub(crate) const MAX_VALUE: usize = 1 << 20;
/// Longest bucket identifier.
pub(crate) const MAX_BUCKET: usize = 128;
/// Buckets per guest.
pub(crate) const MAX_BUCKETS: usize = 64;
/// Keys per `list-keys` page, and per batch call.
pub(crate) const PAGE: usize = 1000;

/// Per-guest quotas (`--kv-max-keys`, `--kv-max-bytes`).
#[derive(Debug, Clone, Copy)]
pub struct KvLimits {
    /// Keys across all of one guest's buckets.
    pub max_keys: u64,
    /// Bytes of keys plus values across all of one guest's buckets.
    pub max_bytes: u64,
}

/// What an operation answers: the value, or the `wasi:keyvalue` error the
/// guest sees.
pub type KvResult<T> = Result<T, store::Error>;

/// A key and its value, as batch calls carry them.
pub type Pair = (String, Vec<u8>);

/// The list-keys answer: a page of keys and where the next one starts.
pub use store::KeyResponse;

/// Key-value data, one namespace per guest name. Every call is atomic;
/// keys, values and batch sizes arrive already checked against
/// [`MAX_KEY`], [`MAX_VALUE`] and [`PAGE`] by the host functions, and a
/// bucket is opened before any handle to it is used.
pub trait KeyValue: Send + Sync + 'static {
    /// Opens `bucket` of namespace `ns`, making it when missing.
    fn open(&self, ns: &GuestName, bucket: &str) -> KvResult<()>;
    /// The value of `key`.
    fn get(&self, ns: &GuestName, b: &str, key: &str) -> KvResult<Option<Vec<u8>>>;
    /// Stores `value` under `key`, within the quotas.
    fn set(&self, ns: &GuestName, b: &str, key: String, value: Vec<u8>) -> KvResult<()>;
    /// Removes `key`, if present.
    fn delete(&self, ns: &GuestName, b: &str, key: &str) -> KvResult<()>;
    /// Whether `key` is present.
    fn exists(&self, ns: &GuestName, b: &str, key: &str) -> KvResult<bool>;
    /// A page of keys from `cursor` on.
    fn list_keys(&self, ns: &GuestName, b: &str, cursor: Option<u64>) -> KvResult<KeyResponse>;
    /// Adds `delta` to the decimal number under `key` (0 when absent).
    fn increment(&self, ns: &GuestName, b: &str, key: String, delta: u64) -> KvResult<u64>;
    /// The values of `keys`, in order.
    fn get_many(&self, ns: &GuestName, b: &str, keys: Vec<String>) -> KvResult<Vec<Option<Pair>>>;
    /// Stores every pair, all or none within the quotas' checks.
    fn set_many(&self, ns: &GuestName, b: &str, key_values: Vec<Pair>) -> KvResult<()>;
    /// Removes every key present.
    fn delete_many(&self, ns: &GuestName, b: &str, keys: Vec<String>) -> KvResult<()>;
    /// Bytes of keys and values one namespace may hold: what a `set-many`
    /// is measured against before anything is copied.
    fn max_bytes(&self) -> u64;
    /// Keys and bytes held per guest name, for metrics.
    fn usage(&self) -> Vec<(String, u64, u64)> {
        Vec::new()
    }
}

/// What a guest's `bucket` handle stands for: a bucket in the namespace of
/// the guest holding it (handles live in one instance's table, so the
/// namespace is always the caller's).
pub struct Bucket {
    name: String,
}

pub(crate) fn other(msg: String) -> store::Error {
    store::Error::Other(msg)
}

pub(crate) fn check_count(n: usize) -> KvResult<()> {
    if n > PAGE {
        return Err(other(format!("{n} keys in one batch; the limit is {PAGE}")));
    }
    Ok(())
}

pub(crate) fn check_key(key: &str) -> KvResult<()> {
    if key.len() > MAX_KEY {
        return Err(other(format!(
            "key is {} bytes; the limit is {MAX_KEY}",
            key.len()
        )));
    }
    Ok(())
}

/// A bucket identifier as guests may write it: anything path- or
/// namespace-like is refused outright, so an attempt to reach another
/// guest's data is an error, not a quiet miss in one's own namespace.
fn check_identifier(name: &str) -> KvResult<()> {
    if name.len() > MAX_BUCKET {
        return Err(other(format!(
            "bucket identifier is {} bytes; the limit is {MAX_BUCKET}",
            name.len()
        )));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        || name.starts_with('.')
    {
        return Err(other(format!(
            "bucket identifier {name:?} is refused: use letters, digits, '.', '_' and '-' (not first '.'); it names a bucket in this guest's own namespace, and no other is reachable"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_identifiers() {
        assert!(check_identifier(&"z".repeat(MAX_BUCKET + 1)).is_err());
        for bad in ["../b", "b/x", "b:x", ".hidden", "a%2Fb", "sp ace"] {
            assert!(check_identifier(bad).is_err(), "{bad}");
        }
        for good in ["", "default", "my-bucket_1.v2"] {
            assert!(check_identifier(good).is_ok(), "{good}");
        }
    }
}
