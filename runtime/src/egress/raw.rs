//! Guests' outbound TCP (`wasi:sockets`): the same policy as their HTTP
//! requests, then a bare `CONNECT` tunnel through the host proxy. The
//! guest's bytes cross it as the guest sends them: a guest that needs
//! them kept from the host runs TLS itself.

use nacre_transport::tunnel::{self, Status, Target, TunnelError};
use nacre_transport::{AllowRule, Stream};

use super::Egress;

/// Why a tunnel was not opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TunnelRefused {
    /// The policy said no, inside the enclave: nothing was sent.
    #[error("{0}")]
    Denied(&'static str),
    /// The host proxy said no, for the reason its status gives.
    #[error("the host proxy answered {0}")]
    Proxy(u16),
    /// The host proxy or the tunnel failed.
    #[error("{0}")]
    Failed(String),
}

impl Egress {
    /// Whether a guest with `allow` may open a TCP connection to
    /// `host:port`: any of its rules for that host and port (plaintext or
    /// not: the runtime cannot see what the guest will speak), within
    /// `--egress-allow`, with an `--egress` proxy to go through.
    pub fn admit_tcp(
        &self,
        allow: &[AllowRule],
        host: &str,
        port: u16,
    ) -> Result<(), TunnelRefused> {
        // `tls: true` matches every rule of the host and port, `http://`
        // ones included.
        if !AllowRule::any_matches(allow, host, port, true) {
            return Err(TunnelRefused::Denied("not in the guest's allow list"));
        }
        if self
            .cap
            .as_ref()
            .is_some_and(|c| !c.allows(host, port, true))
        {
            return Err(TunnelRefused::Denied(
                "not in the runtime's --egress-allow list",
            ));
        }
        if self.proxy.is_none() {
            return Err(TunnelRefused::Denied("this runtime has no --egress proxy"));
        }
        Ok(())
    }

    /// A tunnel to `host:port` through the host proxy, after
    /// [`Egress::admit_tcp`] said yes.
    pub async fn tunnel(&self, host: &str, port: u16) -> Result<Stream, TunnelRefused> {
        let proxy = self
            .proxy
            .as_ref()
            .ok_or(TunnelRefused::Denied("this runtime has no --egress proxy"))?;
        let mut stream = nacre_transport::connect(proxy)
            .await
            .map_err(|e| TunnelRefused::Failed(format!("the host proxy is unreachable: {e}")))?;
        let target = Target {
            host: host.to_string(),
            port,
        };
        match tunnel::open(&mut stream, &target).await {
            Ok(()) => Ok(stream),
            Err(TunnelError::Refused { status, .. }) if status != Status::Established => {
                Err(TunnelRefused::Proxy(status.code()))
            }
            Err(e) => Err(TunnelRefused::Failed(e.to_string())),
        }
    }
}
