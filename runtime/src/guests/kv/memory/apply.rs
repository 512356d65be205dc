//! [`MemoryKv::apply`]: one [`KvOp`] on the data, under the lock.
//!
//! Deterministic: the answer and the data after it depend only on the data
//! before and the operation (with its quotas), never on the clock, the
//! order of a hash map or this enclave's flags. A replicated store applies
//! the same log on every enclave and gets the same data and replies
//! everywhere.

use std::collections::BTreeMap;

use super::{MAX_BATCH_BYTES, MemoryKv, Usage};
use crate::guests::GuestName;
use crate::guests::kv::{
    KvLimits, KvOp, KvReply, KvResult, MAX_VALUE, PAGE, Pair, check_count, check_key, other,
};

type Bucket = BTreeMap<String, Vec<u8>>;

impl MemoryKv {
    /// Applies `op` to namespace `ns`, writes checked against `limits`
    /// (the quotas travel with the operation, so every copy of a
    /// replicated store checks the same ones). Every operation, reads too;
    /// the reply is the one [`crate::guests::kv::KeyValue::call`] gives.
    pub fn apply(&self, ns: &GuestName, op: &KvOp, limits: KvLimits) -> KvResult<KvReply> {
        self.run(ns.as_str(), op.clone(), limits)
    }

    /// [`MemoryKv::apply`] on an owned operation, whose values move into
    /// the store.
    pub(super) fn run(&self, ns: &str, op: KvOp, limits: KvLimits) -> KvResult<KvReply> {
        match op {
            KvOp::Open { bucket } => self.open_bucket(ns, &bucket).map(|()| KvReply::Unit),
            KvOp::Get { bucket, key } => {
                check_key(&key)?;
                self.with(ns, &bucket, limits, |b, _| {
                    Ok(KvReply::Value(b.get(&key).cloned()))
                })
            }
            KvOp::Exists { bucket, key } => {
                check_key(&key)?;
                self.with(ns, &bucket, limits, |b, _| {
                    Ok(KvReply::Bool(b.contains_key(&key)))
                })
            }
            KvOp::ListKeys { bucket, cursor } => {
                self.with(ns, &bucket, limits, |b, _| Ok(list_keys(b, cursor)))
            }
            KvOp::GetMany { bucket, keys } => {
                check_batch(&keys)?;
                self.with(ns, &bucket, limits, |b, _| get_many(b, keys))
            }
            KvOp::Set { bucket, key, value } => self.with(ns, &bucket, limits, |b, usage| {
                usage.set(b, key, value).map(|()| KvReply::Unit)
            }),
            KvOp::Delete { bucket, key } => {
                check_key(&key)?;
                self.with(ns, &bucket, limits, |b, usage| {
                    usage.delete(b, &key);
                    Ok(KvReply::Unit)
                })
            }
            KvOp::Increment { bucket, key, delta } => self.with(ns, &bucket, limits, |b, usage| {
                increment(b, usage, key, delta)
            }),
            KvOp::CompareAndSwap {
                bucket,
                key,
                old,
                new,
            } => {
                check_key(&key)?;
                check_value(&key, old.as_deref().unwrap_or_default())?;
                check_value(&key, &new)?;
                self.with(ns, &bucket, limits, |b, usage| {
                    compare_and_swap(b, usage, key, old, new)
                })
            }
            KvOp::SetMany { bucket, pairs } => {
                check_count(pairs.len())?;
                self.with(ns, &bucket, limits, |b, usage| {
                    pairs
                        .into_iter()
                        .try_for_each(|(k, v)| usage.set(b, k, v))
                        .map(|()| KvReply::Unit)
                })
            }
            KvOp::DeleteMany { bucket, keys } => {
                check_batch(&keys)?;
                self.with(ns, &bucket, limits, |b, usage| {
                    keys.iter().for_each(|k| usage.delete(b, k));
                    Ok(KvReply::Unit)
                })
            }
        }
    }
}

/// At most one page of keys, each within its limit.
pub(super) fn check_batch(keys: &[String]) -> KvResult<()> {
    check_count(keys.len())?;
    keys.iter().try_for_each(|k| check_key(k))
}

/// A value within [`MAX_VALUE`], as a set would require it.
fn check_value(key: &str, value: &[u8]) -> KvResult<()> {
    if value.len() > MAX_VALUE {
        return Err(other(format!(
            "value for {key:?} is {} bytes; the limit is {MAX_VALUE}",
            value.len()
        )));
    }
    Ok(())
}

/// A page of keys from `cursor` on, in key order.
fn list_keys(bucket: &Bucket, cursor: Option<u64>) -> KvReply {
    let skip = usize::try_from(cursor.unwrap_or(0)).unwrap_or(usize::MAX);
    let keys: Vec<String> = bucket.keys().skip(skip).take(PAGE).cloned().collect();
    let next = skip.saturating_add(keys.len());
    let cursor = (next < bucket.len()).then_some(next as u64);
    KvReply::Keys { keys, cursor }
}

/// The values of `keys`, in order, within [`MAX_BATCH_BYTES`].
fn get_many(bucket: &Bucket, keys: Vec<String>) -> KvResult<KvReply> {
    let total: usize = keys
        .iter()
        .filter_map(|k| bucket.get(k).map(Vec::len))
        .sum();
    if total > MAX_BATCH_BYTES {
        return Err(other(format!(
            "get-many would return {total} bytes; the limit is {MAX_BATCH_BYTES}: ask for fewer keys"
        )));
    }
    let values: Vec<Option<Pair>> = keys
        .into_iter()
        .map(|k| bucket.get(&k).cloned().map(|v| (k, v)))
        .collect();
    Ok(KvReply::Values(values))
}

/// Adds `delta` to the counter under `key`.
fn increment(
    bucket: &mut Bucket,
    usage: &mut Usage<'_>,
    key: String,
    delta: u64,
) -> KvResult<KvReply> {
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
    Ok(KvReply::Number(next))
}

/// Stores `new` under `key` when its value is `old` (`None`: absent). A
/// mismatch changes nothing and meets no quota, as nothing is stored; a
/// match is a set, with a set's quota checks.
fn compare_and_swap(
    bucket: &mut Bucket,
    usage: &mut Usage<'_>,
    key: String,
    old: Option<Vec<u8>>,
    new: Vec<u8>,
) -> KvResult<KvReply> {
    if bucket.get(&key).map(Vec::as_slice) != old.as_deref() {
        return Ok(KvReply::Bool(false));
    }
    usage.set(bucket, key, new)?;
    Ok(KvReply::Bool(true))
}
