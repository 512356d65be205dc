//! Pebble, Let's Encrypt's ACME test server (Debian's `pebble`), on
//! loopback: its directory over HTTPS with a test certificate, validating
//! TLS-ALPN-01 challenges on one loopback port, with
//! `pebble-challtestsrv` as the DNS that answers 127.0.0.1 for every name.
//!
//! Both bind port 0 and the ports they got are read from /proc (neither
//! prints them, nor takes a socket handed over); the directory's port,
//! which a runtime may be given before Pebble runs, is held by the test
//! and forwards to Pebble's.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use nacre_cli::process::{Stderr, Supervised};

use crate::TestPki;
use crate::fleet::Forwarder;
use crate::net::{closed_port, wait_for_bound_ports};

/// A running Pebble and its DNS.
pub struct Pebble {
    /// The directory's port on loopback (held by the test, forwarding to
    /// the one Pebble bound).
    pub port: u16,
    /// The management API's port (roots, intermediates).
    pub management: u16,
    /// The PKI of Pebble's own HTTPS listener: the runtime's `--extra-ca`.
    pub pki: TestPki,
    child: Supervised,
    _dns: Supervised,
    _directory: Forwarder,
    /// Where Pebble would validate HTTP-01 (never asked for): a port held
    /// where nothing listens.
    _http01: tokio::net::TcpSocket,
}

/// Pebble's directory port and PKI, chosen before it runs: a runtime can
/// be pointed at a CA that is not up yet (connections to the port are
/// refused until it is).
pub struct Planned {
    /// Where it will validate TLS-ALPN-01, on loopback.
    pub tls_port: u16,
    /// The directory's port on loopback.
    pub port: u16,
    /// The PKI of its HTTPS listener.
    pub pki: TestPki,
    directory: Forwarder,
}

impl Planned {
    /// A directory port and PKI for a Pebble validating TLS-ALPN-01 on
    /// `127.0.0.1:tls_port`.
    pub fn new(tls_port: u16) -> Planned {
        let directory = Forwarder::held();
        Planned {
            tls_port,
            port: directory.port,
            pki: TestPki::generate(),
            directory,
        }
    }

    /// The directory URL it will serve (`--acme-directory`).
    pub fn directory(&self) -> String {
        format!("https://localhost:{}/dir", self.port)
    }

    /// Its HTTPS listener's CA, for `--extra-ca`.
    pub fn extra_ca(&self) -> PathBuf {
        self.pki.dir.join("ca.pem")
    }

    /// Starts it.
    pub async fn start(self) -> Pebble {
        Pebble::start_planned(self).await
    }
}

impl Pebble {
    /// Starts Pebble validating TLS-ALPN-01 on `127.0.0.1:tls_port` (where
    /// the test puts the public side of a host proxy or a load balancer).
    pub async fn start(tls_port: u16) -> Pebble {
        Pebble::start_planned(Planned::new(tls_port)).await
    }

    async fn start_planned(plan: Planned) -> Pebble {
        let Planned {
            tls_port,
            port,
            pki,
            directory,
        } = plan;
        let (http01_port, http01) = closed_port();
        let (dns_child, dns) = start_dns();
        let child = start_pebble(&pki, dns, http01_port, tls_port);
        let (own, management) = directory_and_management(&child, &pki).await;
        directory.point_to(own);
        Pebble {
            port,
            management,
            pki,
            child,
            _dns: dns_child,
            _directory: directory,
            _http01: http01,
        }
    }

    /// The directory URL the runtime is given (`--acme-directory`).
    pub fn directory(&self) -> String {
        format!("https://localhost:{}/dir", self.port)
    }

    /// Pebble's own HTTPS CA, for `--extra-ca`.
    pub fn extra_ca(&self) -> PathBuf {
        self.pki.dir.join("ca.pem")
    }

    /// The root Pebble issues under (a fresh one per run), from its
    /// management API, written to a file for `curl --cacert`.
    pub async fn root_file(&self) -> PathBuf {
        let client = reqwest::Client::builder()
            .add_root_certificate(
                reqwest::Certificate::from_pem(self.pki.ca_pem.as_bytes()).expect("the test CA"),
            )
            .build()
            .expect("a client");
        let pem = client
            .get(format!("https://localhost:{}/roots/0", self.management))
            .send()
            .await
            .expect("Pebble's management API")
            .text()
            .await
            .expect("the root");
        assert!(pem.contains("BEGIN CERTIFICATE"), "{pem}");
        let file = self.pki.dir.join("issuing-root.pem");
        std::fs::write(&file, pem).expect("write the root");
        file
    }

    /// Orders Pebble has taken so far, from its log.
    pub fn orders(&self) -> usize {
        self.log().matches("Added order").count()
    }

    /// Certificates Pebble has issued so far, from its log.
    pub fn issued(&self) -> usize {
        self.log().matches("Issued certificate serial").count()
    }

    /// What Pebble logged.
    pub fn log(&self) -> String {
        self.child.output()
    }
}

/// pebble-challtestsrv as Pebble's DNS, every name 127.0.0.1 (no AAAA,
/// so validation never tries ::1); the child, and its DNS port.
fn start_dns() -> (Supervised, u16) {
    let mut command = Command::new("sh");
    command.args([
        "-c",
        "exec pebble-challtestsrv \"$@\" 1>&2",
        "sh",
        "-dns01",
        "127.0.0.1:0",
        "-http01",
        "",
        "-https01",
        "",
        "-tlsalpn01",
        "",
        "-management",
        "127.0.0.1:0",
        "-defaultIPv4",
        "127.0.0.1",
        "-defaultIPv6",
        "",
    ]);
    let mut dns_child = Supervised::spawn(command, Stderr::Keep { watch: true })
        .expect("spawn pebble-challtestsrv (apt-get install pebble)")
        .report_on_panic();
    dns_child
        .wait_for(Duration::from_secs(30), |l| {
            l.contains("Starting management server").then_some(())
        })
        .unwrap_or_else(|e| panic!("pebble-challtestsrv did not start: {e}"));
    // DNS over UDP and TCP, and the management API.
    let bound = wait_for_bound_ports(dns_child.pid(), 2, 1, Duration::from_secs(30));
    let dns = bound.udp[0];
    (dns_child, dns)
}

/// Pebble itself, with the test CA's certificate, validating TLS-ALPN-01
/// on `tls_port` and asking `dns` for every name.
fn start_pebble(pki: &TestPki, dns: u16, http01_port: u16, tls_port: u16) -> Supervised {
    let config = serde_json::json!({
        "pebble": {
            "listenAddress": "127.0.0.1:0",
            "managementListenAddress": "127.0.0.1:0",
            "certificate": pki.dir.join("cert.pem"),
            "privateKey": pki.dir.join("key.pem"),
            "httpPort": http01_port,
            "tlsPort": tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
        }
    });
    let file = pki.dir.join("pebble.json");
    std::fs::write(&file, config.to_string()).expect("write the Pebble config");
    let mut command = Command::new("sh");
    command
        .args(["-c", "exec pebble \"$@\" 1>&2", "sh", "-config"])
        .arg(&file)
        .args(["-dnsserver", &format!("127.0.0.1:{dns}")])
        // No random sleeps before validation, no nonces refused for
        // practice, a fresh validation for every order.
        .env("PEBBLE_VA_NOSLEEP", "1")
        .env("PEBBLE_WFE_NONCEREJECT", "0")
        .env("PEBBLE_AUTHZREUSE", "0");
    let mut child = Supervised::spawn(command, Stderr::Keep { watch: true })
        .expect("spawn pebble (apt-get install pebble)")
        .report_on_panic();
    child
        .wait_for(Duration::from_secs(30), |l| {
            l.contains("ACME directory available at").then_some(())
        })
        .unwrap_or_else(|e| panic!("pebble did not start: {e}"));
    child
}

/// Pebble's two ports, told apart: the one that serves /dir is the
/// directory, the other the management API.
async fn directory_and_management(child: &Supervised, pki: &TestPki) -> (u16, u16) {
    let bound = wait_for_bound_ports(child.pid(), 2, 0, Duration::from_secs(30));
    let client = reqwest::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(pki.ca_pem.as_bytes()).expect("the test CA"),
        )
        .build()
        .expect("a client");
    let mut serves_dir = Vec::new();
    for p in &bound.tcp {
        let r = client
            .get(format!("https://localhost:{p}/dir"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("Pebble's port {p}: {e}"));
        serves_dir.push(r.status().is_success());
    }
    match (bound.tcp.as_slice(), serves_dir.as_slice()) {
        ([a, b], [true, false]) => (*a, *b),
        ([a, b], [false, true]) => (*b, *a),
        _ => panic!("Pebble listens on {bound:?}, serving /dir: {serves_dir:?}"),
    }
}
