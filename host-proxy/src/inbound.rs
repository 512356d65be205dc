//! `--inbound LISTEN=TARGET`: clients' TLS bytes to the enclave, unread.

use nacre_transport::{Address, Listener, connect};
use tokio_util::task::TaskTracker;

use crate::metrics::Kind;
use crate::relay::{self, Limits};

/// Accepts on `listener` forever, relaying each connection to `target`.
pub async fn serve(listener: Listener, target: Address, limits: Limits, tasks: TaskTracker) {
    loop {
        let (client, _peer) = listener.accept().await;
        // Over the cap the connection is dropped at once: the client sees a
        // reset and retries, and the enclave is spared the load.
        let Some(admitted) = limits.admit(Kind::Inbound) else {
            continue;
        };
        let target = target.clone();
        let limits = limits.clone();
        tasks.spawn(async move {
            let _admitted = admitted;
            match connect(&target).await {
                Ok(enclave) => relay::copy(client, enclave, &limits, Kind::Inbound).await,
                Err(e) => {
                    limits.metrics.refused(Kind::Inbound, "target_unreachable");
                    tracing::warn!(%target, error = %e, "inbound: enclave unreachable");
                }
            }
        });
    }
}
