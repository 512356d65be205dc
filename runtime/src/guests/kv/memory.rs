//! [`MemoryKv`]: every guest's key-value data in the runtime's memory,
//! with the quotas of `--kv-max-keys` and `--kv-max-bytes`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use super::{
    KeyValue, KvLimits, KvResult, MAX_BUCKETS, MAX_VALUE, PAGE, Pair, check_count, check_key, other,
};
use crate::guests::GuestName;
use crate::guests::bindings::wasi::keyvalue::store;

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

    /// Runs `f` on bucket `b` of `namespace` with the lock held: each call
    /// is atomic.
    fn with<R>(
        &self,
        namespace: &str,
        b: &str,
        f: impl FnOnce(&mut BTreeMap<String, Vec<u8>>, &mut Usage<'_>) -> KvResult<R>,
    ) -> KvResult<R> {
        let mut all = self.lock()?;
        // `open` made both; a handle never outlives its bucket.
        let ns = all.get_mut(namespace).ok_or(store::Error::NoSuchStore)?;
        let bucket = ns.buckets.get_mut(b).ok_or(store::Error::NoSuchStore)?;
        let mut usage = Usage {
            keys: &mut ns.keys,
            bytes: &mut ns.bytes,
            limits: self.limits,
            generation: &self.generation,
        };
        // Under the one lock: only this call moves the generation now.
        let before = self.generation.load(Ordering::Acquire);
        let r = f(bucket, &mut usage);
        ns.dirty |= self.generation.load(Ordering::Acquire) != before;
        r
    }

    fn open_bucket(&self, namespace: &str, name: &str) -> KvResult<()> {
        let mut all = self.lock()?;
        if !all.contains_key(namespace) {
            all.insert(namespace.to_owned(), Namespace::default());
        }
        let ns = all.get_mut(namespace).ok_or(store::Error::NoSuchStore)?;
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

fn check_batch(keys: &[String]) -> KvResult<()> {
    check_count(keys.len())?;
    keys.iter().try_for_each(|k| check_key(k))
}

impl KeyValue for MemoryKv {
    fn open(&self, ns: &GuestName, bucket: &str) -> KvResult<()> {
        self.open_bucket(ns.as_str(), bucket)
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

    fn get(&self, ns: &GuestName, b: &str, key: &str) -> KvResult<Option<Vec<u8>>> {
        check_key(key)?;
        self.with(ns.as_str(), b, |bucket, _| Ok(bucket.get(key).cloned()))
    }

    fn set(&self, ns: &GuestName, b: &str, key: String, value: Vec<u8>) -> KvResult<()> {
        self.with(ns.as_str(), b, |bucket, usage| {
            usage.set(bucket, key, value)
        })
    }

    fn delete(&self, ns: &GuestName, b: &str, key: &str) -> KvResult<()> {
        check_key(key)?;
        self.with(ns.as_str(), b, |bucket, usage| {
            usage.delete(bucket, key);
            Ok(())
        })
    }

    fn exists(&self, ns: &GuestName, b: &str, key: &str) -> KvResult<bool> {
        check_key(key)?;
        self.with(ns.as_str(), b, |bucket, _| Ok(bucket.contains_key(key)))
    }

    fn list_keys(
        &self,
        ns: &GuestName,
        b: &str,
        cursor: Option<u64>,
    ) -> KvResult<store::KeyResponse> {
        let skip = usize::try_from(cursor.unwrap_or(0)).unwrap_or(usize::MAX);
        self.with(ns.as_str(), b, |bucket, _| {
            let keys: Vec<String> = bucket.keys().skip(skip).take(PAGE).cloned().collect();
            let next = skip.saturating_add(keys.len());
            let cursor = (next < bucket.len()).then_some(next as u64);
            Ok(store::KeyResponse { keys, cursor })
        })
    }

    fn increment(&self, ns: &GuestName, b: &str, key: String, delta: u64) -> KvResult<u64> {
        self.with(ns.as_str(), b, |bucket, usage| {
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

    fn get_many(&self, ns: &GuestName, b: &str, keys: Vec<String>) -> KvResult<Vec<Option<Pair>>> {
        check_batch(&keys)?;
        self.with(ns.as_str(), b, |bucket, _| {
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

    fn set_many(&self, ns: &GuestName, b: &str, key_values: Vec<Pair>) -> KvResult<()> {
        check_count(key_values.len())?;
        self.with(ns.as_str(), b, |bucket, usage| {
            key_values
                .into_iter()
                .try_for_each(|(k, v)| usage.set(bucket, k, v))
        })
    }

    fn delete_many(&self, ns: &GuestName, b: &str, keys: Vec<String>) -> KvResult<()> {
        check_batch(&keys)?;
        self.with(ns.as_str(), b, |bucket, usage| {
            keys.iter().for_each(|k| usage.delete(bucket, k));
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guests::kv::{MAX_KEY, PAGE};

    fn bucket(kv: &MemoryKv, ns: &str, name: &str) -> String {
        kv.open_bucket(ns, name).unwrap();
        name.to_string()
    }

    #[test]
    fn export_and_import_keep_data_usage_and_count_changes() {
        let limits = KvLimits {
            max_keys: 3,
            max_bytes: 100,
        };
        let kv = MemoryKv::new(limits);
        let g0 = kv.generation();
        let b = bucket(&kv, "a", "box");
        let set = |kv: &MemoryKv, k: &str, v: &[u8]| {
            kv.with("a", &b, |bkt, u| u.set(bkt, k.into(), v.to_vec()))
        };
        set(&kv, "k1", b"one").unwrap();
        set(&kv, "k2", b"two").unwrap();
        let g1 = kv.generation();
        assert!(g1 > g0, "writes move the generation");
        // A read does not.
        kv.with("a", &b, |bkt, _| Ok(bkt.get("k1").cloned()))
            .unwrap();
        assert_eq!(kv.generation(), g1);

        let copy = MemoryKv::new(limits);
        copy.import(kv.export());
        assert_eq!(copy.export(), kv.export());
        assert_eq!(copy.usage(), kv.usage());
        assert!(copy.generation() > 0, "an import is a change");
        assert_eq!(kv.take_dirty(), BTreeSet::from(["a".to_string()]));
        assert!(kv.take_dirty().is_empty(), "taken");
        assert!(copy.take_dirty().is_empty(), "an import is stored already");
        assert_eq!(copy.namespaces(), vec!["a".to_string()]);
        assert_eq!(copy.export_namespace("a"), kv.export()["a"]);
        // The quota counts what was imported: one key left.
        set(&copy, "k3", b"3").unwrap();
        let e = set(&copy, "k4", b"4").unwrap_err();
        assert!(matches!(&e, store::Error::Other(m) if m.contains("--kv-max-keys")));
    }

    #[test]
    fn quotas_refuse_without_changing_anything() {
        let kv = MemoryKv::new(KvLimits {
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
        let kv = MemoryKv::new(KvLimits {
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
        // The bucket limit counts buckets as they are opened.
        for i in 0..MAX_BUCKETS {
            let _ = kv.open_bucket("c", &format!("b{i}"));
        }
        assert!(kv.open_bucket("c", "one-more").is_err());
        assert!(kv.open_bucket("c", "b0").is_ok(), "reopening is fine");
        assert!(check_batch(&vec![String::new(); PAGE + 1]).is_err());
    }
}
