//! `wasi:keyvalue` for guests (store, atomics, batch).
//!
//! Each guest name has its own namespace of buckets, held by the runtime
//! for the life of the process: values outlive the per-request instance
//! and survive redeploys under the same name. A guest can only ever name
//! buckets inside its own namespace, because the namespace comes from the
//! runtime's record of who is calling, never from the guest. Quotas (keys
//! and bytes per guest) and size limits turn into errors, never traps.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use super::bindings::wasi::keyvalue::store;

mod link;

pub(crate) use link::add_to_linker;

/// Longest key.
pub(crate) const MAX_KEY: usize = 1024;
/// Largest value.
pub(crate) const MAX_VALUE: usize = 1 << 20;
/// Longest bucket identifier.
pub(crate) const MAX_BUCKET: usize = 128;
/// Buckets per guest.
const MAX_BUCKETS: usize = 64;
/// Keys per `list-keys` page, and per batch call.
pub(crate) const PAGE: usize = 1000;
/// Bytes of values one `get-many` may return: the runtime builds the answer
/// before the guest sees it, so the guest's own memory limit is no bound.
const MAX_BATCH_BYTES: usize = 16 << 20;

/// Per-guest quotas (`--kv-max-keys`, `--kv-max-bytes`).
#[derive(Debug, Clone, Copy)]
pub struct KvLimits {
    /// Keys across all of one guest's buckets.
    pub max_keys: u64,
    /// Bytes of keys plus values across all of one guest's buckets.
    pub max_bytes: u64,
}

#[derive(Default)]
struct Namespace {
    buckets: HashMap<String, BTreeMap<String, Vec<u8>>>,
    keys: u64,
    bytes: u64,
}

/// Every guest's key-value data.
pub struct KvStore {
    limits: KvLimits,
    namespaces: Mutex<HashMap<String, Namespace>>,
}

/// What a guest's `bucket` handle stands for: a bucket in the namespace
/// of the guest holding it (handles live in one instance's table, so the
/// namespace is always the caller's).
pub struct Bucket {
    name: String,
}

pub(crate) type KvResult<T> = Result<T, store::Error>;

/// A key and its value, as batch calls carry them.
pub(crate) type KeyValue = (String, Vec<u8>);

pub(crate) fn other(msg: String) -> store::Error {
    store::Error::Other(msg)
}

impl KvStore {
    /// An empty store with these quotas.
    pub fn new(limits: KvLimits) -> KvStore {
        KvStore {
            limits,
            namespaces: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> KvResult<std::sync::MutexGuard<'_, HashMap<String, Namespace>>> {
        self.namespaces
            .lock()
            .map_err(|_| other("key-value store unavailable".into()))
    }

    /// Runs `f` on bucket `b` of `namespace` with the lock held: each call
    /// is atomic.
    fn with<R>(
        &self,
        namespace: &str,
        b: &Bucket,
        f: impl FnOnce(&mut BTreeMap<String, Vec<u8>>, &mut Usage<'_>) -> KvResult<R>,
    ) -> KvResult<R> {
        let mut all = self.lock()?;
        // `open` made both; a handle never outlives its bucket.
        let ns = all.get_mut(namespace).ok_or(store::Error::NoSuchStore)?;
        let bucket = ns
            .buckets
            .get_mut(&b.name)
            .ok_or(store::Error::NoSuchStore)?;
        let mut usage = Usage {
            keys: &mut ns.keys,
            bytes: &mut ns.bytes,
            limits: self.limits,
        };
        f(bucket, &mut usage)
    }

    pub(crate) fn open(&self, namespace: &str, name: String) -> KvResult<Bucket> {
        if name.len() > MAX_BUCKET {
            return Err(other(format!(
                "bucket identifier is {} bytes; the limit is {MAX_BUCKET}",
                name.len()
            )));
        }
        // Anything path- or namespace-like is refused outright, so an
        // attempt to reach another guest's data is an error, not a quiet
        // miss in one's own namespace.
        if !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
            || name.starts_with('.')
        {
            return Err(other(format!(
                "bucket identifier {name:?} is refused: use letters, digits, '.', '_' and '-' (not first '.'); it names a bucket in this guest's own namespace, and no other is reachable"
            )));
        }
        let mut all = self.lock()?;
        if !all.contains_key(namespace) {
            all.insert(namespace.to_owned(), Namespace::default());
        }
        let ns = all.get_mut(namespace).ok_or(store::Error::NoSuchStore)?;
        // Made here, under the limit, so handles can never create buckets
        // past it later.
        if !ns.buckets.contains_key(&name) {
            if ns.buckets.len() >= MAX_BUCKETS {
                return Err(other(format!(
                    "this guest already has {MAX_BUCKETS} buckets, the limit"
                )));
            }
            ns.buckets.insert(name.clone(), BTreeMap::new());
        }
        Ok(Bucket { name })
    }
}

/// One guest's running totals, checked before every write.
struct Usage<'a> {
    keys: &'a mut u64,
    bytes: &'a mut u64,
    limits: KvLimits,
}

impl Usage<'_> {
    /// Stores `value` under `key`, or fails without changing anything.
    fn set(
        &mut self,
        bucket: &mut BTreeMap<String, Vec<u8>>,
        key: String,
        value: Vec<u8>,
    ) -> KvResult<()> {
        check_key(&key)?;
        if value.len() > MAX_VALUE {
            return Err(other(format!(
                "value for {key:?} is {} bytes; the limit is {MAX_VALUE}",
                value.len()
            )));
        }
        let old = bucket.get(&key).map(|v| (key.len() + v.len()) as u64);
        let new = (key.len() + value.len()) as u64;
        let keys = *self.keys + u64::from(old.is_none());
        let bytes = *self.bytes - old.unwrap_or(0) + new;
        if keys > self.limits.max_keys {
            return Err(other(format!(
                "key quota exceeded: this guest may keep {} keys (--kv-max-keys)",
                self.limits.max_keys
            )));
        }
        if bytes > self.limits.max_bytes {
            return Err(other(format!(
                "byte quota exceeded: this guest may keep {} bytes of keys and values (--kv-max-bytes)",
                self.limits.max_bytes
            )));
        }
        bucket.insert(key, value);
        (*self.keys, *self.bytes) = (keys, bytes);
        Ok(())
    }

    fn delete(&mut self, bucket: &mut BTreeMap<String, Vec<u8>>, key: &str) {
        if let Some(v) = bucket.remove(key) {
            *self.keys -= 1;
            *self.bytes -= (key.len() + v.len()) as u64;
        }
    }
}

pub(crate) fn check_count(n: usize) -> KvResult<()> {
    if n > PAGE {
        return Err(other(format!("{n} keys in one batch; the limit is {PAGE}")));
    }
    Ok(())
}

fn check_batch(keys: &[String]) -> KvResult<()> {
    check_count(keys.len())?;
    keys.iter().try_for_each(|k| check_key(k))
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

/// The operations of `wasi:keyvalue`, each atomic, on bucket `b` of the
/// caller's namespace `ns`.
impl KvStore {
    /// The quotas.
    pub(crate) fn limits(&self) -> KvLimits {
        self.limits
    }

    pub(crate) fn get(&self, ns: &str, b: &Bucket, key: &str) -> KvResult<Option<Vec<u8>>> {
        check_key(key)?;
        self.with(ns, b, |bucket, _| Ok(bucket.get(key).cloned()))
    }

    pub(crate) fn set(&self, ns: &str, b: &Bucket, key: String, value: Vec<u8>) -> KvResult<()> {
        self.with(ns, b, |bucket, usage| usage.set(bucket, key, value))
    }

    pub(crate) fn delete(&self, ns: &str, b: &Bucket, key: &str) -> KvResult<()> {
        check_key(key)?;
        self.with(ns, b, |bucket, usage| {
            usage.delete(bucket, key);
            Ok(())
        })
    }

    pub(crate) fn exists(&self, ns: &str, b: &Bucket, key: &str) -> KvResult<bool> {
        check_key(key)?;
        self.with(ns, b, |bucket, _| Ok(bucket.contains_key(key)))
    }

    pub(crate) fn list_keys(
        &self,
        ns: &str,
        b: &Bucket,
        cursor: Option<u64>,
    ) -> KvResult<store::KeyResponse> {
        let skip = usize::try_from(cursor.unwrap_or(0)).unwrap_or(usize::MAX);
        self.with(ns, b, |bucket, _| {
            let keys: Vec<String> = bucket.keys().skip(skip).take(PAGE).cloned().collect();
            let next = skip.saturating_add(keys.len());
            let cursor = (next < bucket.len()).then_some(next as u64);
            Ok(store::KeyResponse { keys, cursor })
        })
    }

    pub(crate) fn increment(&self, ns: &str, b: &Bucket, key: String, delta: u64) -> KvResult<u64> {
        self.with(ns, b, |bucket, usage| {
            // Decimal text, as wasmtime's key-value host keeps counters.
            let current = match bucket.get(&key) {
                None => 0,
                Some(v) => std::str::from_utf8(v)
                    .ok()
                    .and_then(|s| s.parse::<u64>().ok())
                    .ok_or_else(|| other(format!("{key:?} does not hold a decimal number")))?,
            };
            let next = current
                .checked_add(delta)
                .ok_or_else(|| other(format!("incrementing {key:?} overflows u64")))?;
            usage.set(bucket, key, next.to_string().into_bytes())?;
            Ok(next)
        })
    }

    pub(crate) fn get_many(
        &self,
        ns: &str,
        b: &Bucket,
        keys: Vec<String>,
    ) -> KvResult<Vec<Option<KeyValue>>> {
        check_batch(&keys)?;
        self.with(ns, b, |bucket, _| {
            let total: usize = keys
                .iter()
                .filter_map(|k| bucket.get(k).map(Vec::len))
                .sum();
            if total > MAX_BATCH_BYTES {
                return Err(other(format!(
                    "get-many would return {total} bytes; the limit is {MAX_BATCH_BYTES}: ask for fewer keys"
                )));
            }
            Ok(keys
                .into_iter()
                .map(|k| bucket.get(&k).cloned().map(|v| (k, v)))
                .collect())
        })
    }

    pub(crate) fn set_many(&self, ns: &str, b: &Bucket, key_values: Vec<KeyValue>) -> KvResult<()> {
        check_count(key_values.len())?;
        self.with(ns, b, |bucket, usage| {
            key_values
                .into_iter()
                .try_for_each(|(k, v)| usage.set(bucket, k, v))
        })
    }

    pub(crate) fn delete_many(&self, ns: &str, b: &Bucket, keys: Vec<String>) -> KvResult<()> {
        check_batch(&keys)?;
        self.with(ns, b, |bucket, usage| {
            keys.iter().for_each(|k| usage.delete(bucket, k));
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket(kv: &KvStore, ns: &str, name: &str) -> Bucket {
        kv.open(ns, name.into()).unwrap()
    }

    #[test]
    fn quotas_refuse_without_changing_anything() {
        let kv = KvStore::new(KvLimits {
            max_keys: 2,
            max_bytes: 20,
        });
        let a = bucket(&kv, "a", "");
        let set = |k: &str, v: &[u8]| kv.with("a", &a, |bkt, u| u.set(bkt, k.into(), v.to_vec()));
        set("k1", b"12345").unwrap();
        set("k2", b"12345").unwrap();
        let e = set("k3", b"1").unwrap_err();
        assert!(matches!(&e, store::Error::Other(m) if m.contains("--kv-max-keys")));
        // Replacing a value counts the difference only.
        set("k1", b"1234567890").unwrap();
        let e = set("k1", b"123456789012345").unwrap_err();
        assert!(matches!(&e, store::Error::Other(m) if m.contains("--kv-max-bytes")));
        let got = kv
            .with("a", &a, |bkt, _| Ok(bkt.get("k1").cloned()))
            .unwrap();
        assert_eq!(got.as_deref(), Some(&b"1234567890"[..]));
        // Deleting frees both.
        kv.with("a", &a, |bkt, u| {
            u.delete(bkt, "k2");
            Ok(())
        })
        .unwrap();
        set("k3", b"1").unwrap();
        // Oversized keys and values are errors too.
        assert!(set(&"x".repeat(MAX_KEY + 1), b"").is_err());
    }

    #[test]
    fn namespaces_and_buckets_are_separate() {
        let kv = KvStore::new(KvLimits {
            max_keys: 10,
            max_bytes: 1000,
        });
        kv.with("a", &bucket(&kv, "a", "x"), |b, u| {
            u.set(b, "k".into(), b"a".to_vec())
        })
        .unwrap();
        for (ns, other) in [("b", bucket(&kv, "b", "x")), ("a", bucket(&kv, "a", "y"))] {
            let got = kv.with(ns, &other, |b, _| Ok(b.get("k").cloned())).unwrap();
            assert_eq!(got, None);
        }
        assert!(kv.open("a", "z".repeat(MAX_BUCKET + 1)).is_err());
        for bad in ["../b", "b/x", "b:x", ".hidden", "a%2Fb", "sp ace"] {
            assert!(kv.open("a", bad.into()).is_err(), "{bad}");
        }
        for good in ["", "default", "my-bucket_1.v2"] {
            assert!(kv.open("a", good.into()).is_ok(), "{good}");
        }
        // The bucket limit counts buckets as they are opened.
        for i in 0..MAX_BUCKETS {
            let _ = kv.open("c", format!("b{i}"));
        }
        assert!(kv.open("c", "one-more".into()).is_err());
        assert!(kv.open("c", "b0".into()).is_ok(), "reopening is fine");
        assert!(check_batch(&vec![String::new(); PAGE + 1]).is_err());
    }
}
