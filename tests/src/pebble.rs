//! Pebble, Let's Encrypt's ACME test server (Debian's `pebble`), on
//! loopback: its directory over HTTPS with a test certificate, validating
//! TLS-ALPN-01 challenges on one loopback port, with
//! `pebble-challtestsrv` as the DNS that answers 127.0.0.1 for every name.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use nacre_cli::process::{Stderr, Supervised};

use crate::TestPki;
use crate::fleet::free_port;

/// A running Pebble and its DNS.
pub struct Pebble {
    /// The directory's port on loopback.
    pub port: u16,
    /// The management API's port (roots, intermediates).
    pub management: u16,
    /// The PKI of Pebble's own HTTPS listener: the runtime's `--extra-ca`.
    pub pki: TestPki,
    child: Supervised,
    _dns: Supervised,
}

/// Pebble's ports and PKI, chosen before it runs: a runtime can be
/// pointed at a CA that is not up yet.
pub struct Planned {
    /// Where it will validate TLS-ALPN-01, on loopback.
    pub tls_port: u16,
    /// The directory's port on loopback.
    pub port: u16,
    /// The PKI of its HTTPS listener.
    pub pki: TestPki,
}

impl Planned {
    /// Ports and PKI for a Pebble validating TLS-ALPN-01 on
    /// `127.0.0.1:tls_port`.
    pub fn new(tls_port: u16) -> Planned {
        Planned {
            tls_port,
            port: free_port(),
            pki: TestPki::generate(),
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
    pub fn start(self) -> Pebble {
        Pebble::start_planned(self)
    }
}

impl Pebble {
    /// Starts Pebble validating TLS-ALPN-01 on `127.0.0.1:tls_port` (where
    /// the test puts the public side of a host proxy or a load balancer).
    pub fn start(tls_port: u16) -> Pebble {
        Pebble::start_planned(Planned::new(tls_port))
    }

    fn start_planned(plan: Planned) -> Pebble {
        let Planned {
            tls_port,
            port,
            pki,
        } = plan;
        let (management, dns) = (free_port(), free_port());
        let config = serde_json::json!({
            "pebble": {
                "listenAddress": format!("127.0.0.1:{port}"),
                "managementListenAddress": format!("127.0.0.1:{management}"),
                "certificate": pki.dir.join("cert.pem"),
                "privateKey": pki.dir.join("key.pem"),
                "httpPort": free_port(),
                "tlsPort": tls_port,
                "ocspResponderURL": "",
                "externalAccountBindingRequired": false,
            }
        });
        let file = pki.dir.join("pebble.json");
        std::fs::write(&file, config.to_string()).expect("write the Pebble config");

        // Every name is 127.0.0.1; no AAAA, so validation never tries ::1.
        let mut command = Command::new("sh");
        command.args([
            "-c",
            "exec pebble-challtestsrv \"$@\" 1>&2",
            "sh",
            "-dns01",
            &format!("127.0.0.1:{dns}"),
            "-http01",
            "",
            "-https01",
            "",
            "-tlsalpn01",
            "",
            "-management",
            &format!("127.0.0.1:{}", free_port()),
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
        Pebble {
            port,
            management,
            pki,
            child,
            _dns: dns_child,
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
