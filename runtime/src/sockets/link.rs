//! `wasi:sockets/tcp`, `tcp-create-socket` and `ip-name-lookup`, linked
//! by hand over [`VirtualSocket`] and [`Resolved`] (in place of
//! wasmtime-wasi's, which open operating-system sockets). The types are
//! wasmtime-wasi's generated ones, so guests see the same interfaces.

use std::net::SocketAddr;
use std::sync::Arc;

use wasmtime::StoreContextMut;
use wasmtime::component::{Linker, LinkerInstance, Resource, ResourceType};
use wasmtime_wasi::p2::bindings::sockets::network::{
    ErrorCode, IpAddress, IpAddressFamily, IpSocketAddress,
};
use wasmtime_wasi::p2::bindings::sockets::tcp::ShutdownType;
use wasmtime_wasi::p2::{DynInputStream, DynOutputStream, DynPollable, Network};

use super::lookup::Resolved;
use super::pipe::GuestEnds;
use super::{SocketsCtx, SocketsView, VirtualSocket};

/// The version guests' imports are matched against (any 0.2.x).
const VERSION: &str = "0.2.12";

type Socket = Resource<VirtualSocket>;
type Answer<T> = wasmtime::Result<(Result<T, ErrorCode>,)>;

/// Adds the three interfaces to `linker`.
pub(crate) fn add_to_linker<T: SocketsView>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    let mut create = linker.instance(&format!("wasi:sockets/tcp-create-socket@{VERSION}"))?;
    create.func_wrap(
        "create-tcp-socket",
        |mut store: StoreContextMut<'_, T>, (family,): (IpAddressFamily,)| -> Answer<Socket> {
            let (table, ctx) = store.data_mut().virtual_sockets();
            match VirtualSocket::new(ctx.clone(), family) {
                Ok(s) => Ok((Ok(table.push(s)?),)),
                Err(e) => Ok((Err(e),)),
            }
        },
    )?;
    let mut tcp = linker.instance(&format!("wasi:sockets/tcp@{VERSION}"))?;
    tcp.resource(
        "tcp-socket",
        ResourceType::host::<VirtualSocket>(),
        |mut store, rep| {
            let (table, _) = store.data_mut().virtual_sockets();
            table.delete(Resource::<VirtualSocket>::new_own(rep))?;
            Ok(())
        },
    )?;
    link_lifecycle(&mut tcp)?;
    link_addresses(&mut tcp)?;
    link_options(&mut tcp)?;
    link_lookup(linker)
}

/// Runs `f` on the socket behind `this`.
fn with<T: SocketsView, R>(
    store: &mut StoreContextMut<'_, T>,
    this: &Socket,
    f: impl FnOnce(&mut VirtualSocket) -> R,
) -> wasmtime::Result<R> {
    let (table, _) = store.data_mut().virtual_sockets();
    Ok(f(table.get_mut(this)?))
}

/// Pushes a connection's streams into the table.
fn streams<T: SocketsView>(
    store: &mut StoreContextMut<'_, T>,
    ends: GuestEnds,
) -> wasmtime::Result<(Resource<DynInputStream>, Resource<DynOutputStream>)> {
    let (table, _) = store.data_mut().virtual_sockets();
    let input: DynInputStream = Box::new(ends.input);
    let output: DynOutputStream = Box::new(ends.output);
    Ok((table.push(input)?, table.push(output)?))
}

fn link_lifecycle<T: SocketsView>(tcp: &mut LinkerInstance<'_, T>) -> wasmtime::Result<()> {
    tcp.func_wrap(
        "[method]tcp-socket.start-bind",
        |mut store,
         (this, _net, addr): (Socket, Resource<Network>, IpSocketAddress)|
         -> Answer<()> {
            with(&mut store, &this, |s| {
                (s.start_bind(SocketAddr::from(addr)),)
            })
        },
    )?;
    tcp.func_wrap(
        "[method]tcp-socket.finish-bind",
        |mut store, (this,): (Socket,)| -> Answer<()> {
            with(&mut store, &this, |s| (s.finish_bind(),))
        },
    )?;
    tcp.func_wrap(
        "[method]tcp-socket.start-connect",
        |mut store,
         (this, _net, addr): (Socket, Resource<Network>, IpSocketAddress)|
         -> Answer<()> {
            with(&mut store, &this, |s| {
                (s.start_connect(SocketAddr::from(addr)),)
            })
        },
    )?;
    tcp.func_wrap(
        "[method]tcp-socket.finish-connect",
        |mut store,
         (this,): (Socket,)|
         -> Answer<(Resource<DynInputStream>, Resource<DynOutputStream>)> {
            match with(&mut store, &this, |s| s.finish_connect())? {
                Ok(ends) => Ok((Ok(streams(&mut store, ends)?),)),
                Err(e) => Ok((Err(e),)),
            }
        },
    )?;
    tcp.func_wrap(
        "[method]tcp-socket.start-listen",
        |mut store, (this,): (Socket,)| -> Answer<()> {
            with(&mut store, &this, |s| (s.start_listen(),))
        },
    )?;
    tcp.func_wrap(
        "[method]tcp-socket.finish-listen",
        |mut store, (this,): (Socket,)| -> Answer<()> {
            with(&mut store, &this, |s| (s.finish_listen(),))
        },
    )?;
    tcp.func_wrap(
        "[method]tcp-socket.accept",
        |mut store,
         (this,): (Socket,)|
         -> Answer<(Socket, Resource<DynInputStream>, Resource<DynOutputStream>)> {
            match with(&mut store, &this, |s| s.accept())? {
                Ok((socket, ends)) => {
                    let (input, output) = streams(&mut store, ends)?;
                    let (table, _) = store.data_mut().virtual_sockets();
                    Ok((Ok((table.push(socket)?, input, output)),))
                }
                Err(e) => Ok((Err(e),)),
            }
        },
    )?;
    tcp.func_wrap(
        "[method]tcp-socket.subscribe",
        |mut store, (this,): (Socket,)| {
            let (table, _) = store.data_mut().virtual_sockets();
            let pollable: Resource<DynPollable> = wasmtime_wasi::p2::subscribe(table, this)?;
            Ok((pollable,))
        },
    )?;
    tcp.func_wrap(
        "[method]tcp-socket.shutdown",
        |mut store, (this, how): (Socket, ShutdownType)| -> Answer<()> {
            let send = matches!(how, ShutdownType::Send | ShutdownType::Both);
            with(&mut store, &this, |s| (s.shutdown(send),))
        },
    )
}

fn link_addresses<T: SocketsView>(tcp: &mut LinkerInstance<'_, T>) -> wasmtime::Result<()> {
    tcp.func_wrap(
        "[method]tcp-socket.local-address",
        |mut store, (this,): (Socket,)| -> Answer<IpSocketAddress> {
            with(&mut store, &this, |s| {
                (s.local_address().map(IpSocketAddress::from),)
            })
        },
    )?;
    tcp.func_wrap(
        "[method]tcp-socket.remote-address",
        |mut store, (this,): (Socket,)| -> Answer<IpSocketAddress> {
            with(&mut store, &this, |s| {
                (s.remote_address().map(IpSocketAddress::from),)
            })
        },
    )?;
    tcp.func_wrap(
        "[method]tcp-socket.is-listening",
        |mut store, (this,): (Socket,)| with(&mut store, &this, |s| (s.is_listening(),)),
    )?;
    tcp.func_wrap(
        "[method]tcp-socket.address-family",
        |mut store, (this,): (Socket,)| with(&mut store, &this, |s| (s.family(),)),
    )
}

/// Socket options: accepted and remembered nowhere (there is no kernel
/// socket under them); the getters answer fixed, plausible values.
fn link_options<T: SocketsView>(tcp: &mut LinkerInstance<'_, T>) -> wasmtime::Result<()> {
    fn setter<
        T: SocketsView,
        V: wasmtime::component::ComponentType + wasmtime::component::Lift + 'static,
    >(
        tcp: &mut LinkerInstance<'_, T>,
        name: &str,
    ) -> wasmtime::Result<()> {
        tcp.func_wrap(
            &format!("[method]tcp-socket.set-{name}"),
            |_store, (_this, _value): (Socket, V)| -> Answer<()> { Ok((Ok(()),)) },
        )
    }
    fn getter<T: SocketsView, V>(
        tcp: &mut LinkerInstance<'_, T>,
        name: &str,
        value: V,
    ) -> wasmtime::Result<()>
    where
        V: wasmtime::component::ComponentType
            + wasmtime::component::Lower
            + Copy
            + Send
            + Sync
            + 'static,
    {
        tcp.func_wrap(
            &format!("[method]tcp-socket.{name}"),
            move |_store, (_this,): (Socket,)| -> Answer<V> { Ok((Ok(value),)) },
        )
    }
    setter::<T, u64>(tcp, "listen-backlog-size")?;
    getter(tcp, "keep-alive-enabled", false)?;
    setter::<T, bool>(tcp, "keep-alive-enabled")?;
    getter(tcp, "keep-alive-idle-time", 7_200_000_000_000u64)?;
    setter::<T, u64>(tcp, "keep-alive-idle-time")?;
    getter(tcp, "keep-alive-interval", 75_000_000_000u64)?;
    setter::<T, u64>(tcp, "keep-alive-interval")?;
    getter(tcp, "keep-alive-count", 9u32)?;
    setter::<T, u32>(tcp, "keep-alive-count")?;
    getter(tcp, "hop-limit", 64u8)?;
    setter::<T, u8>(tcp, "hop-limit")?;
    getter(tcp, "receive-buffer-size", 65_536u64)?;
    setter::<T, u64>(tcp, "receive-buffer-size")?;
    getter(tcp, "send-buffer-size", 65_536u64)?;
    setter::<T, u64>(tcp, "send-buffer-size")
}

fn link_lookup<T: SocketsView>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    let mut lookup = linker.instance(&format!("wasi:sockets/ip-name-lookup@{VERSION}"))?;
    lookup.resource(
        "resolve-address-stream",
        ResourceType::host::<Resolved>(),
        |mut store, rep| {
            let (table, _) = store.data_mut().virtual_sockets();
            table.delete(Resource::<Resolved>::new_own(rep))?;
            Ok(())
        },
    )?;
    lookup.func_wrap(
        "resolve-addresses",
        |mut store: StoreContextMut<'_, T>,
         (_net, name): (Resource<Network>, String)|
         -> Answer<Resource<Resolved>> {
            let (table, ctx): (_, &Arc<SocketsCtx>) = store.data_mut().virtual_sockets();
            match ctx.resolve(&name) {
                Ok(addrs) => Ok((Ok(table.push(Resolved(addrs.into()))?),)),
                Err(e) => Ok((Err(e),)),
            }
        },
    )?;
    lookup.func_wrap(
        "[method]resolve-address-stream.resolve-next-address",
        |mut store, (this,): (Resource<Resolved>,)| -> Answer<Option<IpAddress>> {
            let (table, _) = store.data_mut().virtual_sockets();
            let next = table.get_mut(&this)?.0.pop_front();
            Ok((Ok(next.map(IpAddress::from)),))
        },
    )?;
    lookup.func_wrap(
        "[method]resolve-address-stream.subscribe",
        |mut store, (this,): (Resource<Resolved>,)| {
            let (table, _) = store.data_mut().virtual_sockets();
            let pollable: Resource<DynPollable> = wasmtime_wasi::p2::subscribe(table, this)?;
            Ok((pollable,))
        },
    )
}
