//! [`MemoryKv`]: every guest's key-value data in the runtime's memory,
//! with the quotas of `--kv-max-keys` and `--kv-max-bytes`. The operations
//! themselves are in [`apply`].

mod apply;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use super::{
    KeyValue, KvError, KvFuture, KvLimits, KvOp, KvResult, MAX_BUCKETS, MAX_VALUE,
    check_identifier, check_key, other,
};
use crate::guests::GuestName;

/// Bytes of values one `get-many` may return: the runtime builds the answer
/// before the guest sees it, so the guest's own memory limit is no bound.
const MAX_BATCH_BYTES: usize = 16 << 20;

#[derive(Default)]
struct Namespace {
    buckets: HashMap<String, BTreeMap<String, Vec<u8>>>,
    keys: u64,
    bytes: u64,
    /// Changed since the snapshot writer last took it, so it copies and
    /// seals only the namespaces that changed.
    dirty: bool,
}

/// Every guest's key-value data in the runtime's memory, for the life of
/// the process: today's store.
pub struct MemoryKv {
    limits: KvLimits,
    namespaces: Mutex<HashMap<String, Namespace>>,
    /// Counts changes, so a snapshot writer sees there is something new
    /// without reading the data.
    generation: AtomicU64,
}

/// Every guest's buckets, keys and values, as a snapshot keeps them.
pub type KvExport = BTreeMap<String, BTreeMap<String, BTreeMap<String, Vec<u8>>>>;

impl MemoryKv {
    /// An empty store with these quotas.
    pub fn new(limits: KvLimits) -> MemoryKv {
        MemoryKv {
            limits,
            namespaces: Mutex::new(HashMap::new()),
            generation: AtomicU64::new(0),
        }
    }

    /// The namespaces changed since the last call.
    pub fn take_dirty(&self) -> BTreeSet<String> {
        let Ok(mut all) = self.lock() else {
            return BTreeSet::new();
        };
        all.iter_mut()
            .filter_map(|(name, ns)| std::mem::take(&mut ns.dirty).then(|| name.clone()))
            .collect()
    }

    /// Every namespace holding a bucket.
    pub fn namespaces(&self) -> Vec<String> {
        self.lock()
            .map(|all| all.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// One namespace's buckets, keys and values.
    pub fn export_namespace(&self, ns: &str) -> BTreeMap<String, BTreeMap<String, Vec<u8>>> {
        let Ok(all) = self.lock() else {
            return BTreeMap::new();
        };
        all.get(ns)
            .map(|n| {
                n.buckets
                    .iter()
                    .map(|(b, keys)| (b.clone(), keys.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Marks `namespaces` changed again (their snapshot was not written).
    pub fn mark_all(&self, namespaces: BTreeSet<String>) {
        if let Ok(mut all) = self.lock() {
            for name in namespaces {
                if let Some(ns) = all.get_mut(&name) {
                    ns.dirty = true;
                }
            }
        }
    }

    /// Changes so far: any write, delete or new bucket.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Every guest's data, by guest name, bucket and key.
    pub fn export(&self) -> KvExport {
        let Ok(all) = self.lock() else {
            return KvExport::new();
        };
        all.iter()
            .map(|(name, ns)| {
                let buckets = ns
                    .buckets
                    .iter()
                    .map(|(b, keys)| (b.clone(), keys.clone()))
                    .collect();
                (name.clone(), buckets)
            })
            .collect()
    }

    /// Replaces every guest's data with `data` (a snapshot's, already
    /// stored, so nothing is marked dirty): usage is counted again; data
    /// over a quota lowered since stays, and further writes fail until it
    /// is under.
    pub fn import(&self, data: KvExport) {
        let Ok(mut all) = self.lock() else {
            return;
        };
        all.clear();
        for (name, buckets) in data {
            let mut ns = Namespace::default();
            for (bucket, keys) in buckets {
                for (k, v) in &keys {
                    ns.keys += 1;
                    ns.bytes += (k.len() + v.len()) as u64;
                }
                ns.buckets.insert(bucket, keys);
            }
            all.insert(name, ns);
        }
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    fn lock(&self) -> KvResult<std::sync::MutexGuard<'_, HashMap<String, Namespace>>> {
        self.namespaces
            .lock()
            .map_err(|_| other("key-value store unavailable".into()))
    }

    /// Whether namespace `ns` holds `bucket`: a replicated store may skip
    /// ordering an `open` of a bucket that is there already.
    pub fn has_bucket(&self, ns: &GuestName, bucket: &str) -> bool {
        self.lock().is_ok_and(|all| {
            all.get(ns.as_str())
                .is_some_and(|n| n.buckets.contains_key(bucket))
        })
    }

    /// The quotas this store was made with (`--kv-max-keys`,
    /// `--kv-max-bytes`): what [`KeyValue::call`] applies operations with.
    pub fn limits(&self) -> KvLimits {
        self.limits
    }

    /// Runs `f` on bucket `b` of `namespace` with the lock held, writes
    /// checked against `limits`: each call is atomic.
    fn with<R>(
        &self,
        namespace: &str,
        b: &str,
        limits: KvLimits,
        f: impl FnOnce(&mut BTreeMap<String, Vec<u8>>, &mut Usage<'_>) -> KvResult<R>,
    ) -> KvResult<R> {
        let mut all = self.lock()?;
        // `open` made both; a handle never outlives its bucket.
        let ns = all.get_mut(namespace).ok_or(KvError::NoSuchStore)?;
        let bucket = ns.buckets.get_mut(b).ok_or(KvError::NoSuchStore)?;
        let mut usage = Usage {
            keys: &mut ns.keys,
            bytes: &mut ns.bytes,
            limits,
            generation: &self.generation,
        };
        // Under the one lock: only this call moves the generation now.
        let before = self.generation.load(Ordering::Acquire);
        let r = f(bucket, &mut usage);
        ns.dirty |= self.generation.load(Ordering::Acquire) != before;
        r
    }

    /// Opens bucket `name` of `namespace`, making both when missing, within
    /// [`MAX_BUCKETS`].
    fn open_bucket(&self, namespace: &str, name: &str) -> KvResult<()> {
        check_identifier(name)?;
        let mut all = self.lock()?;
        if !all.contains_key(namespace) {
            all.insert(namespace.to_owned(), Namespace::default());
        }
        let ns = all.get_mut(namespace).ok_or(KvError::NoSuchStore)?;
        // Made here, under the limit, so handles can never create buckets
        // past it later.
        if !ns.buckets.contains_key(name) {
            if ns.buckets.len() >= MAX_BUCKETS {
                return Err(other(format!(
                    "this guest already has {MAX_BUCKETS} buckets, the limit"
                )));
            }
            ns.buckets.insert(name.to_owned(), BTreeMap::new());
            self.generation.fetch_add(1, Ordering::AcqRel);
            ns.dirty = true;
        }
        Ok(())
    }
}

/// One guest's running totals, checked before every write.
struct Usage<'a> {
    keys: &'a mut u64,
    bytes: &'a mut u64,
    limits: KvLimits,
    generation: &'a AtomicU64,
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
        self.generation.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    fn delete(&mut self, bucket: &mut BTreeMap<String, Vec<u8>>, key: &str) {
        if let Some(v) = bucket.remove(key) {
            *self.keys -= 1;
            *self.bytes -= (key.len() + v.len()) as u64;
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
    }
}

impl KeyValue for MemoryKv {
    fn call<'a>(&'a self, ns: &'a GuestName, op: KvOp) -> KvFuture<'a> {
        // Applied at once, under the lock: nothing to wait for. The owned
        // operation moves its values into the store rather than copying.
        Box::pin(std::future::ready(self.run(ns.as_str(), op, self.limits)))
    }

    fn max_bytes(&self) -> u64 {
        self.limits.max_bytes
    }

    fn usage(&self) -> Vec<(String, u64, u64)> {
        let Ok(all) = self.lock() else {
            return Vec::new();
        };
        let mut usage: Vec<_> = all
            .iter()
            .map(|(name, ns)| (name.clone(), ns.keys, ns.bytes))
            .collect();
        usage.sort();
        usage
    }
}
