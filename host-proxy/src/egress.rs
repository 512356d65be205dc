//! `--egress-listen`: the CONNECT proxy the enclave's outbound TLS runs
//! through. The only thing read is the `CONNECT host:port` head; after the
//! 200 the bytes are the enclave's TLS and are copied unread.

use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use nacre_transport::tunnel::{self, Status, Target, TunnelError};
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
    /// `--egress-allow-private`: names may resolve to loopback, private and
    /// unspecified addresses too.
    pub allow_private: bool,
    /// Per-target connect budget (resolution plus TCP connect).
    pub connect_timeout: Duration,
}

/// Accepts tunnel requests on `listener` forever.
pub async fn serve(listener: Listener, policy: Arc<Policy>, limits: Limits, tasks: TaskTracker) {
    loop {
        let (mut enclave, _) = listener.accept().await;
        let Some(admitted) = limits.admit(Kind::Egress) else {
            let _ = tokio::time::timeout(
                Duration::from_secs(1),
                tunnel::respond(&mut enclave, Status::Unavailable),
            )
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
            let _ = tunnel::respond(&mut enclave, Status::BadRequest).await;
            return;
        }
    };
    // The same rule type the enclave checks with: CONNECT carries TLS or,
    // for `http://` rules, plaintext, and the proxy cannot tell which.
    if !policy.allow.allows(&target.host, target.port, true) {
        tracing::info!(%target, "egress: refused, not in --egress-allow");
        metrics.refused(Kind::Egress, "not_allowed");
        let _ = tunnel::respond(&mut enclave, Status::Forbidden).await;
        return;
    }
    let dialled = tokio::time::timeout(policy.connect_timeout, dial(&target, policy))
        .await
        .unwrap_or_else(|_| {
            Err(Dial::Failed(io::Error::new(
                io::ErrorKind::TimedOut,
                "connect timed out",
            )))
        });
    let origin = match dialled {
        Ok(s) => s,
        Err(Dial::Refused(why)) => {
            tracing::info!(%target, "egress: refused, {why}");
            metrics.refused(Kind::Egress, "address_not_allowed");
            let _ = tunnel::respond(&mut enclave, Status::Forbidden).await;
            return;
        }
        Err(Dial::Failed(e)) => {
            tracing::info!(%target, error = %e, "egress: target unreachable");
            metrics.refused(Kind::Egress, "unreachable");
            let _ = tunnel::respond(&mut enclave, Status::BadGateway).await;
            return;
        }
    };
    if tunnel::respond(&mut enclave, Status::Established)
        .await
        .is_err()
    {
        return;
    }
    tracing::debug!(%target, "egress: tunnel open");
    relay::copy(Stream::Tcp(origin), enclave, limits, Kind::Egress).await;
}

/// Why a name may not lead to `ip`, if it may not: a name in the allow list
/// stands for a public service, and DNS (which the operator's resolver or
/// whoever controls that zone answers) must not turn it into a way into the
/// parent's own network. Link-local, where the instance metadata service
/// (the parent's credentials) lives, is never dialled by name; loopback,
/// private and unspecified addresses only with `--egress-allow-private`.
fn forbidden(ip: IpAddr, allow_private: bool) -> Option<&'static str> {
    // ::ffff:a.b.c.d reaches the same IPv4 host.
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    let metadata = match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => {
            v6.is_unicast_link_local() || v6 == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)
        }
    };
    if metadata {
        return Some("link-local (instance metadata)");
    }
    if allow_private {
        return None;
    }
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            if v4.is_loopback() {
                Some("loopback")
            } else if v4.is_private() {
                Some("private (RFC 1918)")
            } else if a == 100 && (64..128).contains(&b) {
                Some("shared (RFC 6598)")
            } else if a == 0 {
                Some("unspecified")
            } else if v4.is_broadcast() || v4.is_multicast() {
                Some("broadcast or multicast")
            } else {
                None
            }
        }
        IpAddr::V6(v6) => {
            if v6.is_loopback() {
                Some("loopback")
            } else if v6.is_unique_local() {
                Some("private (fc00::/7)")
            } else if v6.is_unspecified() {
                Some("unspecified")
            } else if v6.is_multicast() {
                Some("broadcast or multicast")
            } else {
                None
            }
        }
    }
}

/// The resolved addresses the proxy may dial for `target`, and why the
/// others were dropped. An IP literal in the allow list is taken as meant.
fn usable(
    target: &Target,
    resolved: Vec<SocketAddr>,
    allow_private: bool,
) -> (Vec<SocketAddr>, Option<String>) {
    let literal = target.host.parse::<IpAddr>().is_ok();
    let mut refused = None;
    let ok = resolved
        .into_iter()
        .filter(|a| {
            let why = (!literal)
                .then(|| forbidden(a.ip(), allow_private))
                .flatten();
            if let Some(why) = why {
                let flag = if why.starts_with("link-local") {
                    "only an IP-literal rule reaches it"
                } else {
                    "names reach it only with --egress-allow-private"
                };
                refused = Some(format!(
                    "{} resolves to the {why} address {}: {flag}",
                    target.host,
                    a.ip()
                ));
            }
            why.is_none()
        })
        .collect();
    (ok, refused)
}

/// How dialling a target failed.
enum Dial {
    /// Every address the name resolved to is one a name may not reach.
    Refused(String),
    /// Resolution or every connection attempt failed.
    Failed(io::Error),
}

/// Resolves on this host (the enclave has no resolver) and connects to the
/// first usable address that answers.
async fn dial(target: &Target, policy: &Policy) -> Result<TcpStream, Dial> {
    let resolved = tokio::net::lookup_host((target.host.as_str(), target.port))
        .await
        .map_err(Dial::Failed)?;
    let (addrs, refused) = usable(target, resolved.collect(), policy.allow_private);
    if addrs.is_empty()
        && let Some(why) = refused
    {
        return Err(Dial::Refused(why));
    }
    let mut last = None;
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(s) => {
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Err(e) => last = Some(e),
        }
    }
    Err(Dial::Failed(last.unwrap_or_else(|| {
        io::Error::other("the name has no addresses")
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_a_name_may_not_reach() {
        for ip in [
            "169.254.169.254",
            "169.254.0.1",
            "fe80::1",
            "fd00:ec2::254",
            "::ffff:169.254.169.254",
        ] {
            let why = forbidden(ip.parse().unwrap(), true).unwrap_or_default();
            assert!(why.starts_with("link-local"), "{ip}: {why}");
        }
        for (ip, kind) in [
            ("127.0.0.1", "loopback"),
            ("127.8.9.10", "loopback"),
            ("::1", "loopback"),
            ("::ffff:127.0.0.1", "loopback"),
            ("10.1.2.3", "private"),
            ("172.16.0.1", "private"),
            ("172.31.255.255", "private"),
            ("192.168.1.1", "private"),
            ("::ffff:10.0.0.1", "private"),
            ("fc00::1", "private"),
            ("fd12:3456::1", "private"),
            ("fd00:ec2::1", "private"),
            ("100.64.0.1", "shared"),
            ("100.127.255.255", "shared"),
            ("0.0.0.0", "unspecified"),
            ("0.1.2.3", "unspecified"),
            ("::", "unspecified"),
            ("255.255.255.255", "broadcast"),
            ("224.0.0.1", "multicast"),
            ("ff02::1", "multicast"),
        ] {
            let why = forbidden(ip.parse().unwrap(), false).unwrap_or_default();
            assert!(why.contains(kind), "{ip}: {why:?}");
            assert_eq!(
                forbidden(ip.parse().unwrap(), true),
                None,
                "{ip} with the flag"
            );
        }
        for ip in [
            "93.184.216.34",
            "172.32.0.1",
            "100.128.0.1",
            "2606:2800:220:1::1",
            "1.1.1.1",
        ] {
            assert_eq!(forbidden(ip.parse().unwrap(), false), None, "{ip}");
        }
    }

    #[test]
    fn names_are_filtered_but_literals_are_taken_as_meant() {
        let addrs: Vec<SocketAddr> = vec![
            "169.254.169.254:80".parse().unwrap(),
            "127.0.0.1:80".parse().unwrap(),
            "93.184.216.34:80".parse().unwrap(),
        ];
        let name = Target {
            host: "api.example".into(),
            port: 80,
        };
        let (ok, refused) = usable(&name, addrs.clone(), false);
        assert_eq!(ok, vec![addrs[2]]);
        let why = refused.unwrap_or_default();
        assert!(why.contains("--egress-allow-private"), "{why}");
        let (ok, _) = usable(&name, addrs.clone(), true);
        assert_eq!(
            ok,
            vec![addrs[1], addrs[2]],
            "the flag never admits link-local"
        );
        let literal = Target {
            host: "127.0.0.1".into(),
            port: 80,
        };
        assert_eq!(usable(&literal, addrs.clone(), false).0, addrs);
    }
}
