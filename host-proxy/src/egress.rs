//! `--egress-listen`: the CONNECT proxy the enclave's outbound TLS runs
//! through. The only thing read is the `CONNECT host:port` head; after the
//! 200 the bytes are the enclave's TLS and are copied unread.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use nacre_transport::tunnel::{self, Status, Target, TunnelError};
use nacre_transport::{AllowList, Listener, Stream};
use tokio::net::TcpStream;
use tokio_util::task::TaskTracker;

use crate::metrics::Kind;
use crate::ranges;
use crate::relay::{self, Limits};

/// How long the enclave may take to send its CONNECT head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// What the proxy lets through.
pub struct Policy {
    /// `--egress-allow`; empty (with no `private_to`) refuses everything.
    pub allow: AllowList,
    /// `--egress-allow-private-to`: destinations allowed whose names may
    /// also resolve to non-public addresses (loopback, private, ...), such
    /// as the other enclaves of a deployment on the parent's network.
    pub private_to: AllowList,
    /// `--egress-allow-private`: every allowed name may resolve to
    /// non-public addresses.
    pub private_everywhere: bool,
    /// Per-target connect budget (resolution plus TCP connect).
    pub connect_timeout: Duration,
}

impl Policy {
    /// Whether a CONNECT to `target` may go out at all. CONNECT carries TLS
    /// or, for `http://` rules, plaintext, and the proxy cannot tell which,
    /// so any rule for the host and port admits it.
    fn allows(&self, target: &Target) -> bool {
        self.allow.allows(&target.host, target.port, true)
            || self.private_to.allows(&target.host, target.port, true)
    }

    /// Whether `target`'s name may resolve to non-public addresses.
    fn private_ok(&self, target: &Target) -> bool {
        self.private_everywhere || self.private_to.allows(&target.host, target.port, true)
    }
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
    if !policy.allows(&target) {
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

/// The resolved addresses the proxy may dial for `target`, and why the
/// others were dropped. An IP literal in the allow list is taken as meant;
/// a name may lead only to public addresses ([`ranges`]), or also to
/// non-public ones other than link-local when `private` (the destination is
/// in `--egress-allow-private-to`, or `--egress-allow-private` is given).
fn usable(
    target: &Target,
    resolved: Vec<SocketAddr>,
    private: bool,
) -> (Vec<SocketAddr>, Option<String>) {
    let literal = target.host.parse::<IpAddr>().is_ok();
    let mut refused = None;
    let ok = resolved
        .into_iter()
        .filter(|a| {
            let why = (!literal)
                .then(|| ranges::refusal(a.ip()))
                .flatten()
                .filter(|r| r.never || !private);
            if let Some(why) = why {
                let fix = if why.never {
                    "only an IP-literal rule reaches it".to_string()
                } else {
                    format!("a name reaches it only with --egress-allow-private-to {target}")
                };
                refused = Some(format!(
                    "{} resolves to {}, a {why}: {fix}",
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
    let (addrs, refused) = usable(target, resolved.collect(), policy.private_ok(target));
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

    fn target(host: &str, port: u16) -> Target {
        Target {
            host: host.into(),
            port,
        }
    }

    fn rules(list: &[&str]) -> AllowList {
        AllowList(list.iter().map(|r| r.parse().expect("a rule")).collect())
    }

    #[test]
    fn names_are_filtered_but_literals_are_taken_as_meant() {
        let addrs: Vec<SocketAddr> = [
            "169.254.169.254:80",
            "127.0.0.1:80",
            "[64:ff9b::7f00:1]:80",
            "[2002:c0a8:101::]:80",
            "93.184.216.34:80",
        ]
        .iter()
        .map(|a| a.parse().expect("an address"))
        .collect();
        let name = target("api.example", 80);
        let (ok, refused) = usable(&name, addrs.clone(), false);
        assert_eq!(ok, vec![addrs[4]]);
        let why = refused.unwrap_or_default();
        assert!(
            why.contains("private") && why.contains("--egress-allow-private-to api.example:80"),
            "{why}"
        );
        let (ok, _) = usable(&name, addrs.clone(), true);
        assert_eq!(ok, addrs[1..], "the allowance never admits link-local");
        let literal = target("127.0.0.1", 80);
        assert_eq!(usable(&literal, addrs.clone(), false).0, addrs);
    }

    /// `--egress-allow-private-to` lets only its own destinations resolve
    /// into the parent's network, and allows them; other allowed names
    /// stay held to public addresses.
    #[test]
    fn the_private_allowance_is_per_destination() {
        let policy = Policy {
            allow: rules(&["api.example:443", "*.guests.example:443"]),
            private_to: rules(&["leader.internal:444", "*.ec2.internal:444"]),
            private_everywhere: false,
            connect_timeout: Duration::from_secs(1),
        };
        for (host, port, allowed, private) in [
            ("leader.internal", 444, true, true),
            ("ip-10-0-1-23.ec2.internal", 444, true, true),
            ("leader.internal", 443, false, false),
            ("api.example", 443, true, false),
            ("a.guests.example", 443, true, false),
            ("elsewhere.example", 443, false, false),
        ] {
            let t = target(host, port);
            assert_eq!(policy.allows(&t), allowed, "{t} allowed");
            assert_eq!(policy.private_ok(&t), private, "{t} private");
        }
        let everywhere = Policy {
            private_everywhere: true,
            ..policy
        };
        assert!(everywhere.private_ok(&target("api.example", 443)));
    }
}
