//! `wasi:keyvalue` (store, atomics, batch) and `nacre:enclave/kv-atomics`
//! linked to the store's [`KeyValue`].
//!
//! Every key and value a guest passes is measured where it lies in guest
//! memory, and refused there when over its limit, before the host copies
//! it: a guest cannot make the host allocate more than the limits allow,
//! whatever the size of the list it hands over.
//!
//! Each host function is asynchronous: it turns the guest's arguments into
//! a [`KvOp`] at once, then waits for the store's answer. The future holds
//! only owned data, the store and the caller's name, never guest memory,
//! which may move while it waits.

use std::future::Future;
use std::sync::Arc;

use wasmtime::component::{Linker, LinkerInstance, Resource, ResourceType, WasmList, WasmStr};
use wasmtime::{AsContextMut as _, StoreContextMut};

use super::{
    Bucket, KeyValue, KvOp, KvReply, KvResult, MAX_BUCKET, MAX_KEY, MAX_VALUE, Pair, check_count,
    check_identifier, other,
};
use crate::guests::GuestName;
use crate::guests::bindings::wasi::keyvalue::store;
use crate::guests::view::EnclaveView;

/// What a host function's future gives wasmtime: the guest's result, with
/// the `wasi:keyvalue` error.
type HostFuture<R> =
    Box<dyn Future<Output = wasmtime::Result<(Result<R, store::Error>,)>> + Send + 'static>;

/// One operation ready to run: everything the future needs, owned.
struct Call {
    kv: Arc<dyn KeyValue>,
    ns: GuestName,
    op: KvOp,
}

impl Call {
    /// `op` for the calling guest, in its namespace (from the runtime's
    /// record of the caller, never from the guest).
    fn new<T: EnclaveView>(cx: &mut StoreContextMut<'_, T>, op: KvOp) -> Call {
        let view = cx.data_mut().enclave();
        Call {
            kv: view.ctx.kv.clone(),
            ns: view.caller.name().clone(),
            op,
        }
    }

    async fn run(self) -> KvResult<KvReply> {
        self.kv.call(&self.ns, self.op).await
    }
}

/// The future of a host function: runs `call` (when its arguments passed
/// their checks) and takes the answer out of the reply with `reply`.
fn answer<R: Send + 'static>(
    call: KvResult<Call>,
    reply: fn(KvReply) -> KvResult<R>,
) -> HostFuture<R> {
    Box::new(async move {
        let r = match call {
            Ok(call) => call.run().await.and_then(reply),
            Err(e) => Err(e),
        };
        Ok((r.map_err(store::Error::from),))
    })
}

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

/// The operation `op` makes of bucket `b`'s name, for the calling guest.
fn on_bucket<T: EnclaveView>(
    cx: &mut StoreContextMut<'_, T>,
    b: &Resource<Bucket>,
    op: impl FnOnce(String) -> KvOp,
) -> KvResult<Call> {
    let bucket = cx
        .data_mut()
        .enclave()
        .table
        .get(b)
        .map_err(|_| other("invalid bucket handle".into()))?
        .name
        .clone();
    Ok(Call::new(cx, op(bucket)))
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

/// Adds the three `wasi:keyvalue@0.2.0-draft` interfaces and
/// `nacre:enclave/kv-atomics` to `linker`.
pub(crate) fn add_to_linker<T: EnclaveView>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    let mut store = linker.instance("wasi:keyvalue/store@0.2.0-draft")?;
    add_bucket(&mut store)?;
    add_bucket_methods(&mut store)?;
    add_atomics(linker)?;
    add_batch(linker)?;
    add_compare_and_swap(linker)
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
    store.func_wrap_async("open", |mut cx, (id,): (WasmStr,)| {
        let call = text(&cx, &id, MAX_BUCKET, "bucket identifier").and_then(|name| {
            check_identifier(&name)?;
            Ok((
                name.clone(),
                Call::new(&mut cx, KvOp::Open { bucket: name }),
            ))
        });
        // Unlike the other functions, this future keeps the store: the
        // handle goes into the instance's table once the bucket is open.
        Box::new(async move {
            let opened = match call {
                Ok((name, call)) => call
                    .run()
                    .await
                    .and_then(KvReply::into_unit)
                    .and_then(|()| {
                        cx.data_mut()
                            .enclave()
                            .table
                            .push(Bucket { name })
                            .map_err(|e| other(format!("cannot open bucket: {e}")))
                    }),
                Err(e) => Err(e),
            };
            Ok((opened.map_err(store::Error::from),))
        })
    })?;
    Ok(())
}

/// `wasi:keyvalue/store`'s bucket methods: each key (and value) is
/// checked in guest memory before the bucket is looked up.
fn add_bucket_methods<T: EnclaveView>(store: &mut LinkerInstance<'_, T>) -> wasmtime::Result<()> {
    store.func_wrap_async(
        "[method]bucket.get",
        |mut cx, (b, k): (Resource<Bucket>, WasmStr)| {
            let call = key(&cx, &k)
                .and_then(|key| on_bucket(&mut cx, &b, |bucket| KvOp::Get { bucket, key }));
            answer(call, KvReply::into_value)
        },
    )?;
    store.func_wrap_async(
        "[method]bucket.set",
        |mut cx, (b, k, v): (Resource<Bucket>, WasmStr, WasmList<u8>)| {
            let call = key(&cx, &k).and_then(|key| {
                let value = value(&cx, &v)?;
                on_bucket(&mut cx, &b, |bucket| KvOp::Set { bucket, key, value })
            });
            answer(call, KvReply::into_unit)
        },
    )?;
    store.func_wrap_async(
        "[method]bucket.delete",
        |mut cx, (b, k): (Resource<Bucket>, WasmStr)| {
            let call = key(&cx, &k)
                .and_then(|key| on_bucket(&mut cx, &b, |bucket| KvOp::Delete { bucket, key }));
            answer(call, KvReply::into_unit)
        },
    )?;
    store.func_wrap_async(
        "[method]bucket.exists",
        |mut cx, (b, k): (Resource<Bucket>, WasmStr)| {
            let call = key(&cx, &k)
                .and_then(|key| on_bucket(&mut cx, &b, |bucket| KvOp::Exists { bucket, key }));
            answer(call, KvReply::into_bool)
        },
    )?;
    store.func_wrap_async(
        "[method]bucket.list-keys",
        |mut cx, (b, cursor): (Resource<Bucket>, Option<u64>)| {
            let call = on_bucket(&mut cx, &b, |bucket| KvOp::ListKeys { bucket, cursor });
            answer(call, KvReply::into_keys)
        },
    )?;
    Ok(())
}

/// `wasi:keyvalue/atomics`: `increment`.
fn add_atomics<T: EnclaveView>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    let mut atomics = linker.instance("wasi:keyvalue/atomics@0.2.0-draft")?;
    atomics.func_wrap_async(
        "increment",
        |mut cx, (b, k, delta): (Resource<Bucket>, WasmStr, u64)| {
            let call = key(&cx, &k).and_then(|key| {
                on_bucket(&mut cx, &b, |bucket| KvOp::Increment { bucket, key, delta })
            });
            answer(call, KvReply::into_number)
        },
    )?;
    Ok(())
}

/// `nacre:enclave/kv-atomics`: `compare-and-swap`, its key and both
/// values measured in guest memory as `set`'s are.
fn add_compare_and_swap<T: EnclaveView>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    type Args = (
        Resource<Bucket>,
        WasmStr,
        Option<WasmList<u8>>,
        WasmList<u8>,
    );
    let mut atomics = linker.instance("nacre:enclave/kv-atomics@0.1.0")?;
    atomics.func_wrap_async("compare-and-swap", |mut cx, (b, k, old, new): Args| {
        let call = key(&cx, &k).and_then(|key| {
            let old = old.as_ref().map(|o| value(&cx, o)).transpose()?;
            let new = value(&cx, &new)?;
            on_bucket(&mut cx, &b, |bucket| KvOp::CompareAndSwap {
                bucket,
                key,
                old,
                new,
            })
        });
        answer(call, KvReply::into_bool)
    })?;
    Ok(())
}

/// `wasi:keyvalue/batch`: whole lists are measured in guest memory (see
/// [`keys`] and [`pairs`]) before the bucket is looked up.
fn add_batch<T: EnclaveView>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    let mut batch = linker.instance("wasi:keyvalue/batch@0.2.0-draft")?;
    batch.func_wrap_async(
        "get-many",
        |mut cx, (b, list): (Resource<Bucket>, WasmList<WasmStr>)| {
            let call = keys(&mut cx, &list)
                .and_then(|keys| on_bucket(&mut cx, &b, |bucket| KvOp::GetMany { bucket, keys }));
            answer(call, KvReply::into_values)
        },
    )?;
    batch.func_wrap_async(
        "set-many",
        |mut cx, (b, list): (Resource<Bucket>, WasmList<(WasmStr, WasmList<u8>)>)| {
            let call = pairs(&mut cx, &list)
                .and_then(|pairs| on_bucket(&mut cx, &b, |bucket| KvOp::SetMany { bucket, pairs }));
            answer(call, KvReply::into_unit)
        },
    )?;
    batch.func_wrap_async(
        "delete-many",
        |mut cx, (b, list): (Resource<Bucket>, WasmList<WasmStr>)| {
            let call = keys(&mut cx, &list).and_then(|keys| {
                on_bucket(&mut cx, &b, |bucket| KvOp::DeleteMany { bucket, keys })
            });
            answer(call, KvReply::into_unit)
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
