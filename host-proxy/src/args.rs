//! Command-line flags.

use std::path::PathBuf;
use std::str::FromStr;

use clap::{Parser, ValueEnum};
use nacre_transport::{Address, AllowRule};

use crate::credentials::{CredentialsFrom, Endpoint};

/// The parent-instance proxy of a Nacre enclave: forwards ciphertext in and
/// opens CONNECT tunnels out. It never sees plaintext.
#[derive(Debug, Parser)]
#[command(name = "nacre-host-proxy", version)]
pub struct Args {
    /// Forward every connection on LISTEN to TARGET, bytes only, e.g.
    /// `tcp://0.0.0.0:443=vsock://16:443` (repeatable).
    #[arg(long, value_name = "LISTEN=TARGET")]
    pub inbound: Vec<Inbound>,

    /// Serve the enclave's HTTP CONNECT egress proxy here, e.g.
    /// `vsock://any:8080`.
    #[arg(long, value_name = "ADDR")]
    pub egress_listen: Option<Address>,

    /// Allow CONNECT to HOST:PORT (repeatable; `*.example.com:443`
    /// wildcards). None: every CONNECT is refused.
    #[arg(long, value_name = "HOST:PORT")]
    pub egress_allow: Vec<AllowRule>,

    /// Allow CONNECT to HOST:PORT and let its name resolve to non-public
    /// addresses too: loopback, private (RFC 1918, RFC 6598, fc00::/7) and
    /// the other special ranges (repeatable; `*.DOMAIN:PORT` wildcards).
    /// For destinations on the parent's own network: the other enclaves
    /// of a deployment (their --sync-advertise) and the leader name.
    /// Other allowed names may still resolve to public addresses only.
    /// Link-local addresses (the instance metadata service) stay refused.
    #[arg(long, value_name = "HOST:PORT")]
    pub egress_allow_private_to: Vec<AllowRule>,

    /// The blunt form of --egress-allow-private-to: every allowed name,
    /// guests' destinations included, may resolve to non-public addresses.
    /// Refused by default, as in Stripe's smokescreen: an allowed name
    /// whose DNS points into the parent's network would otherwise reach it.
    /// For development, where every origin is on loopback; it logs a
    /// warning. Link-local addresses stay refused; an IP literal in
    /// --egress-allow is always dialled.
    #[arg(long)]
    pub egress_allow_private: bool,

    /// Take the enclave's control links here (its --control): the runtime's
    /// log records and guests' output lines are written to stdout, one per
    /// line, in --log-format; its store links are served from --store and
    /// --aws-credentials.
    #[arg(long, value_name = "ADDR")]
    pub control_listen: Option<Address>,

    /// Keep the enclave's sealed objects (snapshots of its deployment,
    /// encrypted inside it: the proxy stores ciphertext only) as files in
    /// DIR, which must exist: the proxy does not make it (mkdir -p DIR),
    /// so an unmounted volume is never taken for an empty store. Put it on
    /// durable storage (an EBS volume, not a tmpfs). Without it, the
    /// enclave's store requests fail with a message naming this flag.
    /// Needs --control-listen.
    #[arg(long, value_name = "DIR", requires = "control_listen")]
    pub store: Option<PathBuf>,

    /// Where the AWS credentials the enclave asks for (for its own calls
    /// to KMS) come from: `imds` (the instance role; the production
    /// choice), `env` (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and
    /// AWS_SESSION_TOKEN, read at each request), `file:PATH` (a JSON file
    /// with AccessKeyId, SecretAccessKey and optional Token and
    /// Expiration, read at each request), or `none`.
    #[arg(long, default_value = "none", value_name = "SOURCE")]
    pub aws_credentials: CredentialsFrom,

    /// The instance metadata service, for --aws-credentials imds.
    #[arg(long, value_name = "URL", default_value = "http://169.254.169.254")]
    pub imds_endpoint: Endpoint,

    /// Where the other enclaves of the deployment reach this enclave's sync
    /// listener (the host and port of an --inbound rule to its
    /// --sync-listen), said to the runtime in the control link's Hello:
    /// the one setting that differs between parents of one image, so the
    /// only one the host gives the enclave. Needs --control-listen.
    #[arg(long, value_name = "HOST:PORT", requires = "control_listen", value_parser = parse_advertise)]
    pub sync_advertise: Option<String>,

    /// Serve Prometheus metrics (connections, bytes, refusals) here.
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<Address>,

    /// Connections open at once, for inbound and for egress separately;
    /// more are closed at once (inbound) or answered 503 (egress).
    #[arg(long, default_value_t = 4096, value_name = "N")]
    pub max_connections: usize,

    /// How long an egress target may take to accept a connection before
    /// the enclave gets 502.
    #[arg(long, default_value = "4s", value_name = "DUR")]
    pub connect_timeout: humantime::Duration,

    /// After SIGTERM, how long open connections may take to finish.
    #[arg(long, default_value = "30s", value_name = "DUR")]
    pub drain_timeout: humantime::Duration,

    /// Log format: of this process's log (stderr) and of the enclave's
    /// lines from --control-listen (stdout).
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

/// `--log-format`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// One `--inbound LISTEN=TARGET` route.
#[derive(Debug, Clone)]
pub struct Inbound {
    /// Where clients connect.
    pub listen: Address,
    /// Where their bytes go (the enclave).
    pub target: Address,
}

impl FromStr for Inbound {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // Addresses contain ':' but never '=', so the split is unambiguous.
        let (listen, target) = s.split_once('=').ok_or_else(|| {
            format!("--inbound {s:?}: write LISTEN=TARGET, e.g. tcp://0.0.0.0:443=vsock://16:443")
        })?;
        Ok(Inbound {
            listen: listen
                .parse()
                .map_err(|e| format!("--inbound {s:?}: listen side: {e}"))?,
            target: target
                .parse()
                .map_err(|e| format!("--inbound {s:?}: target side: {e}"))?,
        })
    }
}

/// `--sync-advertise`: a host and a port, as the runtime will check it.
fn parse_advertise(s: &str) -> Result<String, String> {
    nacre_transport::tunnel::Target::parse(s, None)
        .map(|t| t.to_string())
        .map_err(|e| format!("{s:?}: {e} (give HOST:PORT)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inbound_routes_parse_and_name_the_bad_side() {
        let r: Inbound = "tcp://0.0.0.0:443=vsock://16:443".parse().unwrap();
        assert_eq!(r.listen.to_string(), "tcp://0.0.0.0:443");
        assert_eq!(r.target, Address::Vsock { cid: 16, port: 443 });
        let r: Inbound = "unix:/tmp/a.sock=unix:/tmp/b.sock".parse().unwrap();
        assert_eq!(r.target.to_string(), "unix:/tmp/b.sock");
        let e = "tcp://0.0.0.0:443".parse::<Inbound>().unwrap_err();
        assert!(e.contains("LISTEN=TARGET"), "{e}");
        let e = "tcp://0.0.0.0:443=vsock://x:1"
            .parse::<Inbound>()
            .unwrap_err();
        assert!(e.contains("target side"), "{e}");
        let e = "foo=vsock://16:443".parse::<Inbound>().unwrap_err();
        assert!(e.contains("listen side"), "{e}");
    }

    #[test]
    fn flags_parse() {
        let a = Args::try_parse_from([
            "nacre-host-proxy",
            "--inbound",
            "tcp://127.0.0.1:0=unix:/tmp/r.sock",
            "--egress-listen",
            "vsock://any:8080",
            "--egress-allow",
            "*.example.com:443",
        ])
        .unwrap();
        assert_eq!(a.inbound.len(), 1);
        assert_eq!(a.egress_allow[0].to_string(), "*.example.com:443");
        assert!(Args::try_parse_from(["nacre-host-proxy", "--egress-allow", "*:443"]).is_err());
        let a = Args::try_parse_from([
            "nacre-host-proxy",
            "--egress-allow-private-to",
            "leader.internal:444",
            "--egress-allow-private-to",
            "*.ec2.internal:444",
        ])
        .unwrap();
        assert_eq!(a.egress_allow_private_to.len(), 2);
        assert!(!a.egress_allow_private);
        assert!(
            Args::try_parse_from(["nacre-host-proxy", "--egress-allow-private-to", "x"]).is_err()
        );
    }

    #[test]
    fn store_and_credentials_flags_parse() {
        let a = Args::try_parse_from(["nacre-host-proxy", "--control-listen", "vsock://any:9000"])
            .unwrap();
        assert!(a.store.is_none());
        assert_eq!(a.aws_credentials, CredentialsFrom::None);
        assert_eq!(a.imds_endpoint.to_string(), "http://169.254.169.254");
        let a = Args::try_parse_from([
            "nacre-host-proxy",
            "--control-listen",
            "vsock://any:9000",
            "--store",
            "/var/lib/nacre/store",
            "--aws-credentials",
            "imds",
            "--imds-endpoint",
            "http://[fd00:ec2::254]",
        ])
        .unwrap();
        assert_eq!(a.store.unwrap(), PathBuf::from("/var/lib/nacre/store"));
        assert_eq!(a.aws_credentials, CredentialsFrom::Imds);
        assert_eq!(a.imds_endpoint.to_string(), "http://[fd00:ec2::254]");
        // A store nobody can reach, a source that does not exist, an
        // endpoint that is not plain http.
        assert!(Args::try_parse_from(["nacre-host-proxy", "--store", "/x"]).is_err());
        assert!(Args::try_parse_from(["nacre-host-proxy", "--aws-credentials", "file"]).is_err());
        assert!(
            Args::try_parse_from(["nacre-host-proxy", "--imds-endpoint", "https://x"]).is_err()
        );
    }
}

#[cfg(test)]
mod unit_file {
    use super::*;

    /// deploy/nacre-host-proxy.service's command line parses, so the unit
    /// the docs install starts.
    #[test]
    fn the_systemd_unit_starts_with_flags_that_parse() {
        let unit = include_str!("../../deploy/nacre-host-proxy.service");
        let exec = unit
            .split("ExecStart=")
            .nth(1)
            .expect("an ExecStart line")
            .split("\n")
            .scan(true, |more, line| {
                let take = *more;
                *more = line.trim_end().ends_with('\\');
                take.then(|| line.trim_end().trim_end_matches('\\').to_owned())
            })
            .collect::<Vec<_>>()
            .join(" ");
        let words: Vec<&str> = exec.split_whitespace().collect();
        assert_eq!(words[0], "/usr/local/bin/nacre-host-proxy");
        let args = Args::try_parse_from(&words).unwrap_or_else(|e| panic!("{exec}: {e}"));
        assert_eq!(args.inbound.len(), 1);
        assert!(args.control_listen.is_some() && args.egress_listen.is_some());
        // A wrong flag in it would fail the same way.
        let mut broken = words.clone();
        broken.push("--inbund");
        assert!(Args::try_parse_from(&broken).is_err());
    }
}
