//! One life of a TCP guest's long-lived instance: `wasi:cli/run`, which
//! listens with `wasi:sockets` on the address its guest was given.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use wasmtime::{Store, UpdateDeadline};

use super::GuestEngine;
use super::engine::Code;
use super::host::{Host, Listening};
use super::registry::Guest;
use crate::sockets::Listen;

/// How one life of a TCP guest's instance ended.
#[derive(Debug)]
pub(crate) enum TcpExit {
    /// `run` returned success: the guest stopped listening on its own.
    Returned,
    /// `run` returned an error (`exit(1)`, a `main` that failed).
    Failed,
    /// The guest trapped, ran out of memory, or could not be started.
    Trapped(String),
}

/// Runs one instance of TCP guest `guest` until `run` returns or traps
/// (a caller that drops the future tears it down, with its connections).
/// It holds one of its guest's instances and its memory counts against
/// the guest's and the runtime's limits, as an HTTP guest's does; it has
/// no deadline, and yields its thread at every epoch tick.
pub(crate) async fn run_tcp(
    engine: &GuestEngine,
    guest: &Arc<Guest>,
    listen: Listen,
    idle: Duration,
) -> TcpExit {
    let Code::Tcp(pre) = &guest.code else {
        return TcpExit::Trapped("not a TCP guest".into());
    };
    let Ok(_permit) = guest.share.instances.clone().try_acquire_owned() else {
        return TcpExit::Trapped(format!(
            "no instance free: its limit of {} (--guest-instances) is in use",
            guest.share.max_instances
        ));
    };
    let limits = engine.limits();
    let host = Host::new(
        &guest.config,
        guest.sha256,
        &limits,
        (engine.memory(), guest.share.clone()),
        engine.enclave(),
        engine.egress(),
        guest.stats.clone(),
        Some(Listening { listen, idle }),
    );
    let mut store = Store::new(engine.engine(), host);
    store.limiter(|h| &mut h.limits);
    store.set_epoch_deadline(1);
    // No deadline: a TCP guest runs for as long as it is deployed. It
    // shares its thread at every tick, as a spinning HTTP guest does.
    store.epoch_deadline_callback(|_| {
        Ok(UpdateDeadline::YieldCustom(
            1,
            Box::pin(tokio::task::yield_now()),
        ))
    });
    let ran = async {
        let command = pre.instantiate_async(&mut store).await?;
        command.wasi_cli_run().call_run(&mut store).await
    }
    .await;
    match ran {
        Ok(Ok(())) => TcpExit::Returned,
        Ok(Err(())) => TcpExit::Failed,
        Err(e) => {
            guest.stats.traps.fetch_add(1, Ordering::Relaxed);
            let starved = store.data().limits.starved;
            let why = format!("{e:#}");
            TcpExit::Trapped(if starved {
                format!("{why} (its memory limit was reached)")
            } else {
                why
            })
        }
    }
}
