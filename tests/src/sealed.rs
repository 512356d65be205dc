//! One sealed enclave (`--kms-key`) and its parent instance: a host proxy
//! keeping the store and handing over credentials, with recording relays
//! on the egress link (KMS's TLS) and the control link (the store, the
//! credentials, logs), as the host sees them.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use nacre_cli::process::{Stderr, Supervised};
use nacre_transport::Address;

use crate::kms::Kms;
use crate::net::{HostProxy, Relay, unix_in};
use crate::{Runtime, TOKEN, bin, sha256_hex, temp_dir};

/// A parent instance for one sealed enclave.
pub struct Parent {
    /// Its host proxy.
    pub proxy: HostProxy,
    /// Everything on the egress link (KMS, through `CONNECT`).
    pub egress: Relay,
    /// Everything on the control link (the store, credentials, logs).
    pub control: Relay,
    dir: PathBuf,
}

impl Parent {
    /// A host proxy keeping the store in `store`, letting the enclave
    /// reach `kms`, and the relays in front of it.
    pub async fn start(kms: &Kms, store: &Path) -> Parent {
        Parent::start_with(kms, store, &[]).await
    }

    /// As [`Parent::start`], with more host proxy flags.
    pub async fn start_with(kms: &Kms, store: &Path, extra: &[String]) -> Parent {
        let dir = temp_dir("parent");
        let mut args = vec![
            "--inbound".to_string(),
            format!("tcp://127.0.0.1:0={}", unix_in(&dir, "runtime.sock")),
            "--egress-listen".into(),
            unix_in(&dir, "egress.sock"),
            "--control-listen".into(),
            unix_in(&dir, "control.sock"),
        ];
        args.extend(kms.proxy_flags(store));
        args.extend(extra.iter().cloned());
        let proxy = HostProxy::start(&args);
        let relay = |name: &str| unix_in(&dir, name).parse::<Address>().expect("address");
        let egress = Relay::start(
            relay("relay-egress.sock"),
            proxy.egress.clone().expect("an egress listener"),
        )
        .await;
        let control = Relay::start(relay("relay-control.sock"), relay("control.sock")).await;
        Parent {
            proxy,
            egress,
            control,
            dir,
        }
    }

    /// The runtime's flags behind this parent: its links, the dev root it
    /// keeps across restarts, KMS, and a metrics listener on loopback.
    pub fn flags(&self, kms: &Kms, dev_root: &Path) -> Vec<String> {
        let mut flags = vec![
            "--egress".to_string(),
            self.egress.listen.to_string(),
            "--control".into(),
            self.control.listen.to_string(),
            "--dev-root".into(),
            dev_root.display().to_string(),
            "--metrics-listen".into(),
            "tcp://127.0.0.1:0".into(),
        ];
        flags.extend(kms.runtime_flags());
        flags
    }

    /// Where the runtime listens (the proxy's inbound target).
    pub fn listen(&self) -> String {
        unix_in(&self.dir, "runtime.sock")
    }

    /// Whether a runtime answers connections behind this parent now.
    pub fn is_served(&self) -> bool {
        std::os::unix::net::UnixStream::connect(self.dir.join("runtime.sock")).is_ok()
    }

    /// Starts the runtime with `flags` and waits until it serves; clients
    /// go through the proxy.
    pub fn start_runtime(&self, program: Option<&Path>, flags: &[String]) -> Runtime {
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        let program = program.map_or_else(|| bin("nacre-runtime"), Path::to_path_buf);
        let mut rt = Runtime::start_program(&program, &[], &self.listen(), &flags, false);
        rt.via(self.proxy.inbound_tcp());
        rt
    }

    /// Starts the runtime with `flags` without waiting for it to serve:
    /// for the starts that must not.
    pub fn spawn_runtime(&self, program: Option<&Path>, flags: &[String]) -> Supervised {
        let program = program.map_or_else(|| bin("nacre-runtime"), Path::to_path_buf);
        let mut command = Command::new(program);
        command
            .args(["--listen", &self.listen(), "--fqdn", "localhost"])
            .args(["--attestation", "dev"])
            .args(["--admin-token-sha256", &sha256_hex(TOKEN.as_bytes())])
            .args(flags)
            .env("NACRE_LOG", "info,nacre_runtime=debug,openraft=warn");
        Supervised::spawn(command, Stderr::Keep { watch: true })
            .expect("spawn nacre-runtime")
            .report_on_panic()
    }
}

/// Waits up to `limit` for a line of `child`'s output containing
/// `needle`; the line.
pub fn wait_for_line(child: &mut Supervised, limit: Duration, needle: &str) -> String {
    child
        .wait_for(limit, |l| l.contains(needle).then(|| l.to_string()))
        .unwrap_or_else(|e| panic!("no line with {needle:?}: {e}\n{}", child.output()))
}

/// The names in the store under `prefix` (its objects' files, at any
/// depth), sorted.
pub fn stored(store: &Path, prefix: &str) -> Vec<String> {
    fn walk(store: &Path, dir: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = e.path();
            if path.is_dir() {
                walk(store, &path, out);
            } else if let Ok(name) = path.strip_prefix(store) {
                let name = name.to_string_lossy().into_owned();
                // A write in progress: the host proxy's temporary file.
                if !name.contains("#tmp-") {
                    out.push(name);
                }
            }
        }
    }
    let mut names = Vec::new();
    walk(store, &store.join(prefix), &mut names);
    names.sort();
    names
}
