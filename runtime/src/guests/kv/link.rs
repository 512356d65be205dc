//! `wasi:keyvalue` (store, atomics, batch) linked to the store's
//! [`KeyValue`].
//!
//! Every key and value a guest passes is measured where it lies in guest
//! memory, and refused there when over its limit, before the host copies
//! it: a guest cannot make the host allocate more than the limits allow,
//! whatever the size of the list it hands over.

use wasmtime::component::{Linker, LinkerInstance, Resource, ResourceType, WasmList, WasmStr};
use wasmtime::{AsContextMut as _, StoreContextMut};

use super::{
    Bucket, KeyValue, KvResult, MAX_BUCKET, MAX_KEY, MAX_VALUE, Pair, check_count,
    check_identifier, other,
};
use crate::guests::GuestName;
use crate::guests::view::EnclaveView;

/// A string from guest memory, copied only when within `max` bytes.
fn text<T: 'static>(
    store: &StoreContextMut<'_, T>,
    s: &WasmStr,
    max: usize,
    what: &str,
) -> KvResult<String> {
    let s = s
        .to_str(store)
        .map_err(|e| other(format!("{what} is not valid UTF-8: {e}")))?;
    if s.len() > max {
        return Err(other(format!(
            "{what} is {} bytes; the limit is {max}",
            s.len()
        )));
    }
    Ok(s.into_owned())
}

/// A value from guest memory, copied only when within [`MAX_VALUE`].
fn value<T: 'static>(store: &StoreContextMut<'_, T>, v: &WasmList<u8>) -> KvResult<Vec<u8>> {
    if v.len() > MAX_VALUE {
        return Err(other(format!(
            "value is {} bytes; the limit is {MAX_VALUE}",
            v.len()
        )));
    }
    Ok(v.as_le_slice(store).to_vec())
}

fn key<T: 'static>(store: &StoreContextMut<'_, T>, k: &WasmStr) -> KvResult<String> {
    text(store, k, MAX_KEY, "key")
}

/// Runs `f` with the store, the calling guest's namespace and bucket `b`.
fn on_bucket<T: EnclaveView, R>(
    store: &mut StoreContextMut<'_, T>,
    b: &Resource<Bucket>,
    f: impl FnOnce(&dyn KeyValue, &GuestName, &str) -> KvResult<R>,
) -> KvResult<R> {
    let view = store.data_mut().enclave();
    let bucket = view
        .table
        .get(b)
        .map_err(|_| other("invalid bucket handle".into()))?;
    f(&*view.ctx.kv, view.caller.name(), &bucket.name)
}

/// Keys from guest memory: at most one page (1,000), each within
/// [`MAX_KEY`].
fn keys<T: 'static>(
    store: &mut StoreContextMut<'_, T>,
    list: &WasmList<WasmStr>,
) -> KvResult<Vec<String>> {
    check_count(list.len())?;
    let handles = list
        .iter(store.as_context_mut())
        .and_then(|it| it.collect::<wasmtime::Result<Vec<_>>>())
        .map_err(|e| other(format!("unreadable key list: {e}")))?;
    handles.iter().map(|k| key(store, k)).collect()
}

/// Adds the three `wasi:keyvalue@0.2.0-draft` interfaces to `linker`.
pub(crate) fn add_to_linker<T: EnclaveView>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    let mut store = linker.instance("wasi:keyvalue/store@0.2.0-draft")?;
    add_bucket(&mut store)?;
    add_bucket_methods(&mut store)?;
    add_atomics(linker)?;
    add_batch(linker)
}

/// `wasi:keyvalue/store`'s `bucket` resource (its handles live in the
/// store's table) and `open`, which checks the identifier before the
/// bucket is opened in the caller's namespace.
fn add_bucket<T: EnclaveView>(store: &mut LinkerInstance<'_, T>) -> wasmtime::Result<()> {
    store.resource("bucket", ResourceType::host::<Bucket>(), |mut cx, rep| {
        cx.data_mut()
            .enclave()
            .table
            .delete(Resource::<Bucket>::new_own(rep))?;
        Ok(())
    })?;
    store.func_wrap("open", |mut cx, (id,): (WasmStr,)| {
        let opened = text(&cx, &id, MAX_BUCKET, "bucket identifier").and_then(|name| {
            check_identifier(&name)?;
            let view = cx.data_mut().enclave();
            view.ctx.kv.open(view.caller.name(), &name)?;
            view.table
                .push(Bucket { name })
                .map_err(|e| other(format!("cannot open bucket: {e}")))
        });
        Ok((opened,))
    })?;
    Ok(())
}

/// `wasi:keyvalue/store`'s bucket methods: each key (and value) is
/// checked in guest memory before the bucket is looked up.
fn add_bucket_methods<T: EnclaveView>(store: &mut LinkerInstance<'_, T>) -> wasmtime::Result<()> {
    store.func_wrap(
        "[method]bucket.get",
        |mut cx, (b, k): (Resource<Bucket>, WasmStr)| {
            let r =
                key(&cx, &k).and_then(|k| on_bucket(&mut cx, &b, |kv, ns, b| kv.get(ns, b, &k)));
            Ok((r,))
        },
    )?;
    store.func_wrap(
        "[method]bucket.set",
        |mut cx, (b, k, v): (Resource<Bucket>, WasmStr, WasmList<u8>)| {
            let r = key(&cx, &k).and_then(|k| {
                let v = value(&cx, &v)?;
                on_bucket(&mut cx, &b, |kv, ns, b| kv.set(ns, b, k, v))
            });
            Ok((r,))
        },
    )?;
    store.func_wrap(
        "[method]bucket.delete",
        |mut cx, (b, k): (Resource<Bucket>, WasmStr)| {
            let r =
                key(&cx, &k).and_then(|k| on_bucket(&mut cx, &b, |kv, ns, b| kv.delete(ns, b, &k)));
            Ok((r,))
        },
    )?;
    store.func_wrap(
        "[method]bucket.exists",
        |mut cx, (b, k): (Resource<Bucket>, WasmStr)| {
            let r =
                key(&cx, &k).and_then(|k| on_bucket(&mut cx, &b, |kv, ns, b| kv.exists(ns, b, &k)));
            Ok((r,))
        },
    )?;
    store.func_wrap(
        "[method]bucket.list-keys",
        |mut cx, (b, cursor): (Resource<Bucket>, Option<u64>)| {
            let r = on_bucket(&mut cx, &b, |kv, ns, b| kv.list_keys(ns, b, cursor));
            Ok((r,))
        },
    )?;
    Ok(())
}

/// `wasi:keyvalue/atomics`: `increment`.
fn add_atomics<T: EnclaveView>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    let mut atomics = linker.instance("wasi:keyvalue/atomics@0.2.0-draft")?;
    atomics.func_wrap(
        "increment",
        |mut cx, (b, k, delta): (Resource<Bucket>, WasmStr, u64)| {
            let r = key(&cx, &k)
                .and_then(|k| on_bucket(&mut cx, &b, |kv, ns, b| kv.increment(ns, b, k, delta)));
            Ok((r,))
        },
    )?;
    Ok(())
}

/// `wasi:keyvalue/batch`: whole lists are measured in guest memory (see
/// [`keys`] and [`pairs`]) before the bucket is looked up.
fn add_batch<T: EnclaveView>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    let mut batch = linker.instance("wasi:keyvalue/batch@0.2.0-draft")?;
    batch.func_wrap(
        "get-many",
        |mut cx, (b, list): (Resource<Bucket>, WasmList<WasmStr>)| {
            let r = keys(&mut cx, &list)
                .and_then(|keys| on_bucket(&mut cx, &b, |kv, ns, b| kv.get_many(ns, b, keys)));
            Ok((r,))
        },
    )?;
    batch.func_wrap(
        "set-many",
        |mut cx, (b, list): (Resource<Bucket>, WasmList<(WasmStr, WasmList<u8>)>)| {
            let r = pairs(&mut cx, &list)
                .and_then(|kvs| on_bucket(&mut cx, &b, |kv, ns, b| kv.set_many(ns, b, kvs)));
            Ok((r,))
        },
    )?;
    batch.func_wrap(
        "delete-many",
        |mut cx, (b, list): (Resource<Bucket>, WasmList<WasmStr>)| {
            let r = keys(&mut cx, &list)
                .and_then(|keys| on_bucket(&mut cx, &b, |kv, ns, b| kv.delete_many(ns, b, keys)));
            Ok((r,))
        },
    )?;
    Ok(())
}

/// The pairs of `set-many`: at most one page (1,000), each key and value
/// within its limit, and all together within the guest's byte quota, all
/// measured in guest memory before anything is copied.
fn pairs<T: EnclaveView>(
    cx: &mut StoreContextMut<'_, T>,
    list: &WasmList<(WasmStr, WasmList<u8>)>,
) -> KvResult<Vec<Pair>> {
    check_count(list.len())?;
    let handles = list
        .iter(cx.as_context_mut())
        .and_then(|it| it.collect::<wasmtime::Result<Vec<_>>>())
        .map_err(|e| other(format!("unreadable key-value list: {e}")))?;
    let quota = cx.data_mut().enclave().ctx.kv.max_bytes();
    let mut total: u64 = 0;
    for (k, v) in &handles {
        let k = k
            .to_str(&*cx)
            .map_err(|e| other(format!("key is not valid UTF-8: {e}")))?;
        total = total.saturating_add((k.len() + v.len()) as u64);
    }
    if total > quota {
        return Err(other(format!(
            "set-many carries {total} bytes; this guest may keep {quota} bytes of keys and values (--kv-max-bytes)"
        )));
    }
    handles
        .iter()
        .map(|(k, v)| Ok((key(cx, k)?, value(cx, v)?)))
        .collect()
}
