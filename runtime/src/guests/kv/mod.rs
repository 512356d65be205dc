//! `wasi:keyvalue` for guests (store, atomics, batch), and the
//! compare-and-swap of `nacre:enclave/kv-atomics`.
//!
//! Each guest name has its own namespace of buckets: values outlive the
//! per-request instance and survive redeploys under the same name. A guest
//! can only ever name buckets inside its own namespace, because the
//! namespace comes from the runtime's record of who is calling, never from
//! the guest. Quotas (keys and bytes per guest) and size limits turn into
//! errors, never traps.
//!
//! The data lives behind [`KeyValue`]: each host function becomes one
//! [`KvOp`], answered asynchronously with a [`KvReply`] or a [`KvError`].
//! [`MemoryKv`] keeps the data in the runtime's memory for the enclave's
//! life and applies each operation at once; a replicated store is another
//! implementation (it may order writes in a log, then apply them with
//! [`MemoryKv::apply`] on every copy), linked by the same host functions
//! ([`link`]).

mod link;
mod memory;
mod op;

pub(crate) use link::add_to_linker;
pub use memory::{KvExport, MemoryKv};
pub use op::{KvError, KvOp, KvReply};

use std::future::Future;
use std::pin::Pin;

use super::GuestName;

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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvLimits {
    /// Keys across all of one guest's buckets.
    pub max_keys: u64,
    /// Bytes of keys plus values across all of one guest's buckets.
    pub max_bytes: u64,
}

/// What an operation answers: the value, or the error the guest sees (as
/// [`KvError`], which serialises; the host functions turn it into
/// `wasi:keyvalue`'s own).
pub type KvResult<T> = Result<T, KvError>;

/// A key and its value, as batch calls carry them.
pub type Pair = (String, Vec<u8>);

/// An operation in progress: its reply, or the error the guest sees.
pub type KvFuture<'a> = Pin<Box<dyn Future<Output = KvResult<KvReply>> + Send + 'a>>;

/// Key-value data, one namespace per guest name, driven by operations
/// ([`KvOp`]) so that a store may carry them elsewhere (a replicated log)
/// before answering; hence asynchronous. Every operation is atomic; keys,
/// values and batch sizes arrive already checked against [`MAX_KEY`],
/// [`MAX_VALUE`] and [`PAGE`] by the host functions, and a bucket is opened
/// before any handle to it is used.
pub trait KeyValue: Send + Sync + 'static {
    /// Runs `op` in namespace `ns` (the caller's, from the runtime's
    /// record) and answers with the reply its kind calls for: `Unit` for
    /// open, set, delete and the batch writes, `Value` for get, `Bool` for
    /// exists and compare-and-swap, `Number` for increment, `Keys` for
    /// list-keys and `Values` for get-many.
    fn call<'a>(&'a self, ns: &'a GuestName, op: KvOp) -> KvFuture<'a>;
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

pub(crate) fn other(msg: String) -> KvError {
    KvError::Other(msg)
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
