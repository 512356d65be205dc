//! The image's own kernel, command line and ramdisks boot in QEMU and
//! serve the system's curl over attested TLS.

use crate::{build, config, image_binaries};
use nacre_tests::{Runtime, guest, nacre, root, sha256_hex, temp_dir};
use sha2::{Digest, Sha384};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A loopback port nobody listens on now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// QEMU with the EIF's own kernel, command line and ramdisks (taken out
/// by the Python reader), user-mode networking forwarding `port`; killed
/// on drop.
struct Vm {
    child: std::process::Child,
    console: PathBuf,
}

impl Vm {
    fn boot(eif: &Path, dir: &Path, port: u16) -> Vm {
        let parts = dir.join("parts");
        let status = Command::new("python3")
            .arg(root().join("tests/clients/eif.py"))
            .args(["extract".as_ref(), eif.as_os_str(), parts.as_os_str()])
            .status()
            .unwrap();
        assert!(status.success());
        let cmdline = std::fs::read_to_string(parts.join("cmdline")).unwrap();
        let console = dir.join("console.log");
        // As a Nitro Enclave is made: QEMU's microvm with no ACPI and no
        // PCI, so the kernel learns where its virtio-mmio devices (here
        // the network card) are only from the virtio_mmio.device= words
        // QEMU adds to the command line, as Nitro's are named on it. TCG:
        // the same on every machine (nested KVM here cannot emulate the
        // kernel's BMI2 instructions on MMIO).
        let child = Command::new("qemu-system-x86_64")
            .args([
                "-M",
                "microvm,acpi=off,pcie=off",
                "-accel",
                "tcg",
                "-cpu",
                "max",
                "-m",
                "1024",
                "-smp",
                "2",
            ])
            .args(["-nodefaults", "-no-user-config", "-nographic", "-no-reboot"])
            .arg("-serial")
            .arg(format!("file:{}", console.display()))
            .arg("-kernel")
            .arg(parts.join("kernel"))
            .arg("-initrd")
            .arg(parts.join("initrd"))
            .args(["-append", &cmdline])
            .args([
                "-netdev",
                &format!("user,id=n0,hostfwd=tcp:127.0.0.1:{port}-:8443"),
            ])
            .args(["-device", "virtio-net-device,netdev=n0"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("run qemu-system-x86_64 (apt-get install qemu-system-x86)");
        Vm { child, console }
    }

    /// Boots, and boots once more if the kernel never reached the init
    /// within a minute: emulated timers on a loaded machine sometimes
    /// stall a microvm's kernel before it runs anything of the image's
    /// (the console shows where), which says nothing about the image.
    fn boot_reaching_init(eif: &Path, dir: &Path, port: u16) -> Vm {
        let started = Instant::now();
        let mut vm = Vm::boot(eif, dir, port);
        while started.elapsed() < Duration::from_secs(60) {
            if vm.console().contains("nacre-init: starting") || vm.exited() {
                return vm;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        eprintln!(
            "the kernel did not reach the init in 60 s; booting again. Its console:\n{}",
            vm.console()
        );
        drop(vm);
        Vm::boot(eif, dir, port)
    }

    fn exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }

    fn console(&self) -> String {
        std::fs::read_to_string(&self.console).unwrap_or_default()
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn curl(args: &[&str]) -> (bool, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10"])
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn the_image_boots_in_qemu_and_serves_attested_tls() {
    let dir = temp_dir("image-vm");
    // The dev CA the image's runtime signs documents with, and that the
    // client trusts: made by a runtime on this machine, baked into the
    // image as files.
    let dev_root = {
        let rt = Runtime::start(&[]);
        rt.dev_root.clone()
    };
    let hello = guest("hello");
    let cfg = config(&dir, |c| {
        let kernel = c["kernel"].as_table_mut().unwrap();
        // QEMU's microvm: serial console, virtio-mmio devices named on the
        // command line by QEMU itself (as Nitro's are), found through the
        // image's own module, and a virtio network card.
        kernel.insert(
            "cmdline".into(),
            "console=ttyS0 reboot=t panic=-1 random.trust_cpu=on".into(),
        );
        let modules = kernel["modules"].as_array_mut().unwrap();
        for m in [
            "net/core/failover",
            "drivers/net/net_failover",
            "drivers/net/virtio_net",
        ] {
            modules.push(m.into());
        }
        c.insert(
            "network".into(),
            toml::toml! { name = "eth0" address = "10.0.2.15/24" }.into(),
        );
        c.insert(
            "runtime".into(),
            toml::toml! {
                args = ["--listen", "tcp://0.0.0.0:8443", "--fqdn", "localhost", "--attestation", "dev", "--dev-root", "/nacre/files/dev-ca", "--wait-for-app"]
                env = { NACRE_LOG = "info" }
            }
            .into(),
        );
        c.insert("guest".into(), toml::Value::Array(vec![toml::toml! { name = "hello" file = (hello.display().to_string()) options = "route=/" }.into()]));
        let file = |name: &str, mode: &str| -> toml::Value {
            toml::toml! { source = (dev_root.join(name).display().to_string()) path = (format!("dev-ca/{name}")) mode = mode }.into()
        };
        c.insert(
            "file".into(),
            toml::Value::Array(vec![file("root.pem", "644"), file("root.key", "600")]),
        );
    });
    let eif = dir.join("vm.eif");
    let (ok, _, err) = build(&cfg, &eif, &[]);
    assert!(ok, "{err}");
    let port = free_port();
    let started = Instant::now();
    let mut vm = Vm::boot_reaching_init(&eif, &dir, port);
    let url = format!("https://127.0.0.1:{port}/");
    let answered = loop {
        let (ok, body) = curl(&["-k", &url]);
        if ok {
            break body;
        }
        let exited = vm.exited();
        let console = vm.console();
        assert!(
            started.elapsed() < Duration::from_secs(180) && !exited,
            "no answer from the VM; its console:\n{console}"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    eprintln!(
        "the VM answered {:.1} s after QEMU started",
        started.elapsed().as_secs_f64()
    );
    assert!(answered.to_lowercase().contains("hello"), "{answered}");
    let (ok, code) = curl(&[
        "-k",
        "--http2",
        "-o",
        "/dev/null",
        "-w",
        "%{http_version} %{http_code}",
        &url,
    ]);
    assert!(ok && code == "2 200", "{code}");

    // The runtime's dev attestation: signed by the baked-in CA, PCR0 the
    // SHA-384 of the runtime binary, the manifest naming hello's code.
    let (_, runtime) = image_binaries();
    let pcr0 = format!(
        "0={}",
        hex::encode(Sha384::digest(std::fs::read(runtime).unwrap()))
    );
    let hello_pin = format!("hello={}", sha256_hex(&std::fs::read(&hello).unwrap()));
    let root_pem = dev_root.join("root.pem");
    let (ok, out, err) = nacre(&[
        "attest",
        &url,
        "--root",
        root_pem.to_str().unwrap(),
        "--pcr",
        &pcr0,
        "--guest",
        &hello_pin,
    ]);
    assert!(ok && out.contains("\"verified\": true"), "{out}{err}");

    let console = vm.console();
    for line in [
        "nacre-init: mount /proc, /sys, /dev, /tmp: ok",
        "nacre-init: load /nacre/modules/virtio_mmio.ko.xz: ok",
        "nacre_virtio_mmio: device [mem 0x",
        "nacre-init: load /nacre/modules/nacre_virtio_mmio.ko: ok",
        "nacre-init: load /nacre/modules/nsm.ko.xz: ok",
        "nacre-init: bring up lo: ok",
        "nacre-init: configure eth0 as 10.0.2.15/24: ok",
        "nacre-init: not inside a Nitro Enclave (no /dev/nsm): no boot heartbeat",
        "nacre-init: starting /nacre/bin/nacre-runtime",
    ] {
        assert!(
            console.contains(line),
            "no {line:?} on the console:\n{console}"
        );
    }
}
