//! `--egress-listen`: the CONNECT proxy the enclave's outbound TLS runs
//! through. The only thing read is the `CONNECT host:port` head; after the
//! 200 the bytes are the enclave's TLS and are copied unread.

use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use nacre_transport::tunnel::{self, Target, TunnelError};
use nacre_transport::{AllowList, Listener, Stream};
use tokio::net::TcpStream;
use tokio_util::task::TaskTracker;

use crate::metrics::Kind;
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
        let limits = limits.clone();
        tasks.spawn(async move {
            let _admitted = admitted;
            handle(enclave, &policy, &limits).await;
        });
    }
}

async fn handle(mut enclave: Stream, policy: &Policy, limits: &Limits) {
    let metrics = &limits.metrics;
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
    let dialled = tokio::time::timeout(policy.connect_timeout, dial(&target))
        .await
        .unwrap_or_else(|_| Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out")));
    let origin = match dialled {
        Ok(s) => s,
        Err(e) => {
            tracing::info!(%target, error = %e, "egress: target unreachable");
            metrics.refused(Kind::Egress, "unreachable");
            let _ = tunnel::respond(&mut enclave, 502).await;
            return;
        }
    };
    if tunnel::respond(&mut enclave, 200).await.is_err() {
        return;
    }
    tracing::debug!(%target, "egress: tunnel open");
    relay::copy(Stream::Tcp(origin), enclave, limits, Kind::Egress).await;
}

/// Whether `ip` is link-local, where a cloud instance's metadata service
/// lives (169.254.169.254, fd00:ec2::254): the parent's credentials.
fn is_metadata(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        // ::ffff:169.254.169.254 reaches the same service over IPv4.
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.is_link_local(),
            None => {
                v6.is_unicast_link_local()
                    || v6 == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)
            }
        },
    }
}

/// The resolved addresses the proxy may dial for `target`, and why any were
/// dropped. A name is never followed to a link-local address: an allowed
/// domain whose DNS is pointed at the instance metadata service would
/// otherwise hand the enclave the parent's credentials. An IP literal in the
/// allow list is taken as meant.
fn usable(target: &Target, resolved: Vec<SocketAddr>) -> (Vec<SocketAddr>, Option<io::Error>) {
    let literal = target.host.parse::<IpAddr>().is_ok();
    let (ok, dropped): (Vec<_>, Vec<_>) = resolved
        .into_iter()
        .partition(|a| literal || !is_metadata(a.ip()));
    let refused = dropped.last().map(|a| {
        io::Error::other(format!(
            "{} resolves to the link-local address {}, which is never dialled by name",
            target.host,
            a.ip()
        ))
    });
    (ok, refused)
}

/// Resolves on this host (the enclave has no resolver) and connects to the
/// first usable address that answers.
async fn dial(target: &Target) -> io::Result<TcpStream> {
    let resolved = tokio::net::lookup_host((target.host.as_str(), target.port)).await?;
    let (addrs, mut last) = usable(target, resolved.collect());
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(s) => {
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("the name has no addresses")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_addresses_are_recognised() {
        for ip in [
            "169.254.169.254",
            "169.254.0.1",
            "fe80::1",
            "fd00:ec2::254",
            "::ffff:169.254.169.254",
        ] {
            assert!(is_metadata(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "127.0.0.1",
            "10.0.0.1",
            "93.184.216.34",
            "::1",
            "fd00:ec2::1",
        ] {
            assert!(!is_metadata(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn names_are_not_followed_to_link_local_but_literals_are() {
        let addrs: Vec<SocketAddr> = vec![
            "169.254.169.254:80".parse().unwrap(),
            "93.184.216.34:80".parse().unwrap(),
        ];
        let name = Target {
            host: "metadata.example".into(),
            port: 80,
        };
        let (ok, refused) = usable(&name, addrs.clone());
        assert_eq!(ok, vec![addrs[1]]);
        let why = refused.map(|e| e.to_string()).unwrap_or_default();
        assert!(why.contains("never dialled by name"), "{why}");
        let literal = Target {
            host: "169.254.169.254".into(),
            port: 80,
        };
        assert_eq!(usable(&literal, addrs.clone()).0, addrs);
    }
}
