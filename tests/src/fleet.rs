//! Several enclaves of one deployment on one machine, as on EC2: each
//! runtime behind its own host proxy (public listener, sync listener,
//! egress), linked by unix sockets as by vsock, one shared dev root, and a
//! loopback forwarder standing in for the leader's DNS name that a test
//! can point at any enclave.
//!
//! Every port a test names before the process behind it runs (a sync port
//! in another member's allow list, the leader's name, Pebble's validation
//! port) is bound by the test first and held while it runs: a
//! [`Forwarder`] in front of a process that bound a port of its own. No
//! port is found free, released and bound again later by someone else.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nacre_transport::Address;

pub use crate::forwarder::{Forwarder, LeaderName};
use crate::net::{HostProxy, Relay, unix_in};
use crate::{Runtime, bin, temp_dir};

/// The sync ports of a test deployment's members, on the host: each held
/// by the test from the start (peers' allow lists and `--sync-advertise`
/// name it before its member runs), refusing connections until its
/// member's host proxy is up, then forwarding to the port that proxy bound
/// for itself (another one each time the member starts). Reads as the
/// list of port numbers.
pub struct SyncPorts {
    ports: Vec<u16>,
    held: Vec<Forwarder>,
}

impl SyncPorts {
    /// `members` sync ports.
    pub fn hold(members: usize) -> SyncPorts {
        let held: Vec<Forwarder> = (0..members).map(|_| Forwarder::held()).collect();
        SyncPorts {
            ports: held.iter().map(|f| f.port).collect(),
            held,
        }
    }

    /// The forwarder holding `port`.
    fn forwarder(&self, port: u16) -> &Forwarder {
        self.held
            .iter()
            .find(|f| f.port == port)
            .unwrap_or_else(|| panic!("{port} is not one of the sync ports {:?}", self.ports))
    }
}

impl std::ops::Deref for SyncPorts {
    type Target = [u16];

    fn deref(&self) -> &[u16] {
        &self.ports
    }
}

/// A test deployment's common parts: the dev root its members share, the
/// leader's name (pointing at the first member) and each member's sync
/// port.
pub struct Deployment {
    /// The shared dev root.
    pub root: PathBuf,
    /// The leader's name.
    pub name: LeaderName,
    /// The sync port of each member to be.
    pub ports: SyncPorts,
}

impl Deployment {
    /// Room for `members` members, the name pointing at the first.
    pub async fn new(members: usize) -> Deployment {
        let name = LeaderName::start().await;
        let ports = SyncPorts::hold(members);
        name.point_to(ports[0]);
        Deployment {
            root: temp_dir("fleet-root"),
            name,
            ports,
        }
    }

    /// Member `i` as [`MemberSpec::new`] makes it.
    pub fn spec(&self, i: usize) -> MemberSpec<'_> {
        MemberSpec::new(&self.name, &self.root, &self.ports, i)
    }

    /// Starts member `i`.
    pub async fn start(&self, i: usize) -> Member {
        Member::start(self.spec(i)).await
    }
}

/// A leader and a worker, settled.
pub async fn leader_and_worker(d: &Deployment) -> (Member, Member) {
    let leader = d.start(0).await;
    let worker = d.start(1).await;
    within(Duration::from_secs(30), "designation", || async {
        leader.role().await == "leader" && worker.role().await == "worker"
    })
    .await;
    (leader, worker)
}

/// One enclave and its parent instance.
pub struct Member {
    /// Its runtime; clients reach it through the host proxy.
    pub rt: Runtime,
    /// Its host proxy.
    pub proxy: HostProxy,
    /// The port of its sync listener on the host (its host proxy's
    /// `--sync-advertise`).
    pub sync_port: u16,
    /// Everything that crossed its egress link (sync traffic included).
    pub egress: Relay,
    /// Everything that crossed its control link.
    pub control: Relay,
}

/// How to start a member.
pub struct MemberSpec<'a> {
    /// The leader's name.
    pub name: &'a LeaderName,
    /// The dev root all members share.
    pub dev_root: &'a Path,
    /// The sync ports of every member of the test, which each host proxy
    /// must let the enclave reach.
    pub peers: &'a SyncPorts,
    /// This member's sync port (one of `peers`).
    pub sync_port: u16,
    /// The runtime binary (default: this checkout's).
    pub program: Option<PathBuf>,
    /// More runtime flags.
    pub extra: &'a [&'a str],
    /// Start with the test CA's certificate (whose key the test knows);
    /// otherwise the runtime makes its own.
    pub test_certificate: bool,
    /// More host proxy flags.
    pub proxy_extra: &'a [String],
    /// As in production: the host proxy listens on the sync port itself
    /// and the runtime reaches its host proxy directly, through none of
    /// the test's forwarders and relays (in this process). A direct
    /// member's links cannot be cut, and its `egress` and `control`
    /// relays see nothing: for benchmarks.
    pub direct: bool,
}

impl<'a> MemberSpec<'a> {
    /// Member `i` of the deployment whose sync ports are `peers`: this
    /// checkout's runtime, making its own certificate, no extra flags.
    pub fn new(name: &'a LeaderName, dev_root: &'a Path, peers: &'a SyncPorts, i: usize) -> Self {
        MemberSpec {
            name,
            dev_root,
            peers,
            sync_port: peers[i],
            program: None,
            extra: &[],
            test_certificate: false,
            proxy_extra: &[],
            direct: false,
        }
    }
}

impl Member {
    /// Starts the host proxy and the runtime of one enclave.
    pub async fn start(spec: MemberSpec<'_>) -> Member {
        let dir = temp_dir("member");
        let sync_bind = if spec.direct {
            spec.peers.forwarder(spec.sync_port).release();
            spec.sync_port
        } else {
            0
        };
        let mut args = vec![
            "--inbound".to_string(),
            format!("tcp://127.0.0.1:0={}", unix_in(&dir, "runtime.sock")),
            // The sync listener's own port on the host: `sync_port`, held
            // by the test, forwards there (a direct member's proxy listens
            // there itself).
            "--inbound".to_string(),
            format!("tcp://127.0.0.1:{sync_bind}={}", unix_in(&dir, "sync.sock")),
            "--egress-listen".into(),
            unix_in(&dir, "egress.sock"),
            // The host proxy says where peers reach this enclave.
            "--control-listen".into(),
            unix_in(&dir, "control.sock"),
            "--sync-advertise".into(),
            format!("localhost:{}", spec.sync_port),
            // Every enclave of the test lives on loopback: the leader name
            // and the peers, and only they, may resolve there.
            "--egress-allow-private-to".into(),
            format!("localhost:{}", spec.name.port),
        ];
        for p in spec.peers.iter() {
            args.extend([
                "--egress-allow-private-to".to_string(),
                format!("localhost:{p}"),
            ]);
        }
        args.extend(spec.proxy_extra.iter().cloned());
        let proxy = HostProxy::start(&args);
        match proxy.inbound.get(1) {
            Some(Address::Tcp { .. }) if spec.direct => {}
            Some(Address::Tcp { port, .. }) => spec.peers.forwarder(spec.sync_port).point_to(*port),
            other => panic!("no TCP sync inbound listener: {other:?}"),
        }
        let egress = Relay::start(
            unix_in(&dir, "relay-egress.sock")
                .parse::<Address>()
                .expect("address"),
            proxy.egress.clone().expect("an egress listener"),
        )
        .await;
        // The control link too (logs out; with --kms-key, the sealed
        // store and the credentials): recorded as the host sees it.
        let control_relay = Relay::start(
            unix_in(&dir, "relay-control.sock")
                .parse::<Address>()
                .expect("address"),
            unix_in(&dir, "control.sock")
                .parse::<Address>()
                .expect("address"),
        )
        .await;
        let leader = format!("localhost:{}", spec.name.port);
        let (control, relay) = if spec.direct {
            let egress = proxy.egress.clone().expect("an egress listener");
            (unix_in(&dir, "control.sock"), egress.to_string())
        } else {
            (control_relay.listen.to_string(), egress.listen.to_string())
        };
        let sync_listen = unix_in(&dir, "sync.sock");
        let root = spec.dev_root.display().to_string();
        let mut flags = vec![
            "--sync-listen",
            &sync_listen,
            "--fqdn-leader",
            &leader,
            "--control",
            &control,
            "--egress",
            &relay,
            "--dev-root",
            &root,
        ];
        // A test deployment starts in seconds; the default (30 s) is for
        // failovers across real networks.
        if !spec.extra.contains(&"--sync-genesis-after") {
            flags.extend(["--sync-genesis-after", "3s"]);
        }
        // Raft at loopback speed, with room for two busy cores: a dead
        // member is noticed in about a second and removed in four.
        if !spec.extra.iter().any(|f| f.starts_with("--raft-")) {
            flags.extend([
                "--raft-heartbeat",
                "100ms",
                "--raft-election-timeout",
                "600ms-1200ms",
                "--raft-remove-after",
                "4s",
            ]);
        }
        flags.extend_from_slice(spec.extra);
        let program = spec.program.unwrap_or_else(|| bin("nacre-runtime"));
        let mut rt = Runtime::start_program(
            &program,
            &[],
            &unix_in(&dir, "runtime.sock"),
            &flags,
            spec.test_certificate,
        );
        rt.via(proxy.inbound_tcp());
        Member {
            rt,
            proxy,
            sync_port: spec.sync_port,
            egress,
            control: control_relay,
        }
    }

    /// `/enclave/config` as JSON.
    pub async fn config(&self) -> serde_json::Value {
        let (status, body) = self.rt.get("/enclave/config").await;
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).expect("JSON")
    }

    /// Its role in the deployment (`leader`, `worker`, `designating`).
    pub async fn role(&self) -> String {
        self.config().await["sync"]["role"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Its view of the deployment's replicated data (`/enclave/config`'s
    /// `sync.raft`: node, leader, term, voters, learners, applied).
    pub async fn raft(&self) -> serde_json::Value {
        self.config().await["sync"]["raft"].clone()
    }

    /// Whether it leads the replicated data and sync both.
    pub async fn leads(&self) -> bool {
        let c = self.config().await;
        c["sync"]["role"] == "leader" && c["sync"]["raft"]["leader"] == c["sync"]["raft"]["node"]
    }

    /// Its node id in the replicated group (hex; a new one per process).
    pub async fn node_id(&self) -> String {
        self.raft().await["node"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Whether the voters it sees are exactly `members`' nodes: a restarted
    /// enclave is a new node, and the old one must be gone.
    pub async fn voters_are(&self, members: &[&Member]) -> bool {
        let raft = self.raft().await;
        let mut voters: Vec<String> = raft["voters"]
            .as_array()
            .map(|v| {
                v.iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        let mut want = Vec::new();
        for m in members {
            want.push(m.node_id().await);
        }
        voters.sort();
        want.sort();
        voters == want
    }

    /// The voters of the replicated group, as it sees them.
    pub async fn voters(&self) -> usize {
        self.raft().await["voters"].as_array().map_or(0, Vec::len)
    }

    /// Cuts this enclave off from its peers (`true`), as a host that stops
    /// relaying its links would: its own outbound links are held and
    /// refused, and its sync port's forwarder ends what is open and
    /// refuses what comes; or relays again (`false`).
    pub fn isolate(&self, peers: &SyncPorts, on: bool) {
        self.egress.block(on);
        self.egress.stall(on);
        peers.forwarder(self.sync_port).cut(on);
    }

    /// Where the other enclaves reach it.
    pub fn advertise(&self) -> String {
        format!("localhost:{}", self.sync_port)
    }

    /// The SHA-256 of the certificate it serves.
    pub async fn certificate(&self) -> String {
        self.config().await["tls_certificate_sha256"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

/// Polls `check` every 100 ms until it holds; how long that took.
pub async fn within<F, Fut>(limit: Duration, what: &str, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let started = Instant::now();
    while !check().await {
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    started.elapsed()
}

/// A copy of the runtime binary with one byte more at the end: the same
/// program, another image (its PCR0, the SHA-384 of the executable in dev
/// mode, differs).
pub fn other_image() -> PathBuf {
    let copy = temp_dir("other-image").join("nacre-runtime");
    let mut bytes = std::fs::read(bin("nacre-runtime")).expect("the runtime binary");
    bytes.push(0);
    std::fs::write(&copy, bytes).expect("copy");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    copy
}

/// The dev PCR0 of a runtime binary: SHA-384 of the file, hex.
pub fn pcr0(program: &Path) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha384::digest(
        std::fs::read(program).expect("binary"),
    ))
}
