//! `--egress-listen`: the CONNECT proxy the enclave's outbound TLS runs
//! through. The only thing read is the `CONNECT host:port` head; after the
//! 200 the bytes are the enclave's TLS and are copied unread.

use std::sync::Arc;
use std::time::Duration;

use nacre_transport::tunnel::{self, Target, TunnelError};
use nacre_transport::{AllowList, Listener, Stream};
use tokio::net::TcpStream;
use tokio_util::task::TaskTracker;

use crate::metrics::{Kind, Metrics};
use crate::relay::{self, Limits};

/// How long the enclave may take to send its CONNECT head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// What the proxy lets through.
pub struct Policy {
    /// `--egress-allow`; empty refuses everything.
    pub allow: AllowList,
    /// Per-target connect budget (resolution plus TCP connect).
    pub connect_timeout: Duration,
}

/// Accepts tunnel requests on `listener` forever.
pub async fn serve(listener: Listener, policy: Arc<Policy>, limits: Limits, tasks: TaskTracker) {
    loop {
        let (mut enclave, _) = listener.accept().await;
        let Some(admitted) = limits.admit(Kind::Egress) else {
            let _ =
                tokio::time::timeout(Duration::from_secs(1), tunnel::respond(&mut enclave, 503))
                    .await;
            continue;
        };
        let policy = policy.clone();
        let metrics = limits.metrics.clone();
        tasks.spawn(async move {
            let _admitted = admitted;
            handle(enclave, &policy, &metrics).await;
        });
    }
}

async fn handle(mut enclave: Stream, policy: &Policy, metrics: &Metrics) {
    let target = match tokio::time::timeout(HEAD_TIMEOUT, tunnel::accept(&mut enclave)).await {
        Ok(Ok(t)) => t,
        Ok(Err(TunnelError::Io(_))) | Err(_) => {
            metrics.refused(Kind::Egress, "no_request");
            return;
        }
        Ok(Err(e)) => {
            tracing::info!(error = %e, "egress: bad request");
            metrics.refused(Kind::Egress, "malformed");
            let _ = tunnel::respond(&mut enclave, 400).await;
            return;
        }
    };
    // The same rule type the enclave checks with: CONNECT carries TLS or,
    // for `http://` rules, plaintext, and the proxy cannot tell which.
    if !policy.allow.allows(&target.host, target.port, true) {
        tracing::info!(%target, "egress: refused, not in --egress-allow");
        metrics.refused(Kind::Egress, "not_allowed");
        let _ = tunnel::respond(&mut enclave, 403).await;
        return;
    }
    let origin = match tokio::time::timeout(policy.connect_timeout, dial(&target)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::info!(%target, error = %e, "egress: target unreachable");
            metrics.refused(Kind::Egress, "unreachable");
            let _ = tunnel::respond(&mut enclave, 502).await;
            return;
        }
        Err(_) => {
            tracing::info!(%target, "egress: connect timed out");
            metrics.refused(Kind::Egress, "unreachable");
            let _ = tunnel::respond(&mut enclave, 502).await;
            return;
        }
    };
    if tunnel::respond(&mut enclave, 200).await.is_err() {
        return;
    }
    tracing::debug!(%target, "egress: tunnel open");
    relay::copy(Stream::Tcp(origin), enclave, metrics, Kind::Egress).await;
}

/// Resolves on this host (the enclave has no resolver) and connects to the
/// first address that answers.
async fn dial(target: &Target) -> std::io::Result<TcpStream> {
    let mut last = None;
    for addr in tokio::net::lookup_host((target.host.as_str(), target.port)).await? {
        match TcpStream::connect(addr).await {
            Ok(s) => {
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("the name has no addresses")))
}
