//! The enclave image: `nacre image build` from the static binaries and
//! Debian's kernel package, its PCRs checked against an independent
//! reader (Python), then the image's own kernel, command line and
//! ramdisks booted in QEMU, where the runtime serves the system's curl
//! over TLS and `nacre attest` verifies it. And every input the build
//! must refuse before it writes anything.
//!
//! A test binary of its own, not part of `e2e`: cargo runs test binaries
//! one after another, so building images and booting QEMU (CPU-heavy under
//! TCG) never starve the timing-sensitive end-to-end tests of CPU.

use nacre_tests::{Runtime, bin, guest, nacre, root, sha256_hex, temp_dir};
use sha2::{Digest, Sha384};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Static nacre-init and nacre-runtime, linked once per test process
/// from the test build's own objects (`-C target-feature=+crt-static` on
/// the final link only: seconds, where `scripts/image-binaries`' release
/// build takes ten minutes on two cores). The same code; the release
/// build's reproducibility is `scripts/reproduce`'s to check.
fn image_binaries() -> &'static (PathBuf, PathBuf) {
    static BUILT: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    BUILT.get_or_init(|| {
        let target = bin("nacre")
            .parent()
            .unwrap()
            .parent()
            .unwrap()
            .to_path_buf();
        let dir = target.join("image-test");
        std::fs::create_dir_all(&dir).unwrap();
        let link = |package: &str| {
            let out = dir.join(package);
            let status = nacre_cli::guest_build::cargo()
                .args(["rustc", "--quiet", "-p", package, "--bin", package])
                .arg("--manifest-path")
                .arg(root().join("Cargo.toml"))
                .arg("--target-dir")
                .arg(&target)
                .args([
                    "--",
                    "-C",
                    "target-feature=+crt-static",
                    "-C",
                    "strip=debuginfo",
                    "--emit",
                ])
                .arg(format!("link={}", out.display()))
                .status()
                .expect("run cargo rustc");
            assert!(status.success(), "linking {package} statically failed");
            out
        };
        // nacre-image is a workspace of its own (image/Cargo.toml says
        // why); built into this target directory, `nacre image` finds it
        // beside `nacre`.
        let status = nacre_cli::guest_build::cargo()
            .args(["build", "--quiet", "--locked", "--manifest-path"])
            .arg(root().join("image/Cargo.toml"))
            .arg("--target-dir")
            .arg(&target)
            .status()
            .expect("run cargo build");
        assert!(status.success(), "building nacre-image failed");
        (link("nacre-init"), link("nacre-runtime"))
    })
}

/// deploy/image.toml, the configuration the docs give operators: the
/// kernel's pin lives there only.
fn deploy_config() -> toml::Table {
    let text = std::fs::read_to_string(root().join("deploy/image.toml")).unwrap();
    text.parse().unwrap()
}

/// An image configuration in `dir`: deploy/image.toml with the test's
/// static binaries, then `edit` applied.
fn config(dir: &Path, edit: impl FnOnce(&mut toml::Table)) -> PathBuf {
    let (init, runtime) = image_binaries();
    let mut c = deploy_config();
    c.insert(
        "binaries".into(),
        toml::toml! { init = (init.display().to_string()) runtime = (runtime.display().to_string()) }.into(),
    );
    // deploy/image.toml's guests, with their paths made absolute (the
    // copy lives elsewhere; paths are relative to the file).
    guest("hello");
    if let Some(toml::Value::Array(guests)) = c.get_mut("guest") {
        for g in guests {
            let file = root().join("deploy").join(g["file"].as_str().unwrap());
            g.as_table_mut()
                .unwrap()
                .insert("file".into(), file.display().to_string().into());
        }
    }
    edit(&mut c);
    let path = dir.join("image.toml");
    std::fs::write(&path, toml::to_string(&c).unwrap()).unwrap();
    path
}

/// `nacre image build` (through `nacre`, as an operator runs it).
fn build(config: &Path, out: &Path, extra: &[&str]) -> (bool, String, String) {
    image_binaries();
    // One image build at a time: each keeps a core busy compressing the
    // runtime, and the suite's other tests share the machine's two cores.
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let cache = root().join("target/nacre-image/kernels");
    let mut args = vec![
        "image",
        "build",
        "--config",
        config.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    if !extra.contains(&"--cache") {
        args.extend(["--cache", cache.to_str().unwrap()]);
    }
    args.extend(extra);
    nacre(&args)
}

fn python_pcrs(eif: &Path) -> serde_json::Value {
    let out = Command::new("python3")
        .arg(root().join("tests/clients/eif.py"))
        .arg("pcrs")
        .arg(eif)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn the_image_is_reproducible_and_its_pcrs_agree_with_an_independent_reader() {
    let dir = temp_dir("image-pcrs");
    let cfg = config(&dir, |_| {});
    let (a, b) = (dir.join("a.eif"), dir.join("b.eif"));
    for eif in [&a, &b] {
        let (ok, out, err) = build(&cfg, eif, &[]);
        assert!(ok, "{err}");
        assert!(out.contains("\"PCR0\""), "{out}");
    }
    assert!(
        std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap(),
        "two builds differ"
    );
    let ours: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("a.pcrs.json")).unwrap()).unwrap();
    let theirs = python_pcrs(&a);
    for pcr in ["PCR0", "PCR1", "PCR2"] {
        assert_eq!(ours["Measurements"][pcr], theirs[pcr], "{pcr}");
    }
    assert_eq!(theirs["IsCrcValid"], true);
    let (ok, out, err) = nacre(&["image", "describe", a.to_str().unwrap()]);
    assert!(ok, "{err}");
    let described: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(described["Measurements"], ours["Measurements"]);

    // One flipped byte in a ramdisk: both readers see it.
    let mut bytes = std::fs::read(&a).unwrap();
    let n = bytes.len();
    bytes[n - 100] ^= 1;
    let flipped = dir.join("flipped.eif");
    std::fs::write(&flipped, &bytes).unwrap();
    assert_eq!(python_pcrs(&flipped)["IsCrcValid"], false);
    let (ok, _, err) = nacre(&["image", "describe", flipped.to_str().unwrap()]);
    assert!(!ok && err.contains("CRC"), "{err}");
}

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
        // TCG: the same on every machine (nested KVM here cannot emulate
        // the kernel's BMI2 instructions on MMIO). A standard PC, whose
        // timers (PIT, HPET, ACPI PM) TCG serves reliably: microvm under
        // TCG sometimes stalled calibrating the TSC. Its network card is
        // virtio over PCI, which Debian's kernel has built in.
        let child = Command::new("qemu-system-x86_64")
            .args([
                "-M", "q35", "-accel", "tcg", "-cpu", "max", "-m", "1024", "-smp", "2",
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
            .args(["-device", "virtio-net-pci,netdev=n0"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("run qemu-system-x86_64 (apt-get install qemu-system-x86)");
        Vm { child, console }
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
        // QEMU's microvm: serial console, virtio-mmio devices described
        // on the command line by QEMU itself, and a virtio network card.
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
    let mut vm = Vm::boot(&eif, &dir, port);
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

#[test]
fn bad_inputs_are_refused_before_anything_is_written() {
    let dir = temp_dir("image-bad");
    let out = dir.join("never.eif");
    let refused = |cfg: PathBuf, extra: &[&str], expect: &[&str]| {
        let (ok, _, err) = build(&cfg, &out, extra);
        assert!(!ok, "built with {cfg:?}");
        for e in expect {
            assert!(err.contains(e), "{e:?} not in: {err}");
        }
        assert!(
            !out.exists() && !dir.join("never.pcrs.json").exists(),
            "something was written"
        );
    };
    let dynamic = bin("nacre-runtime").display().to_string();
    refused(
        config(&dir, |c| {
            c["binaries"]
                .as_table_mut()
                .unwrap()
                .insert("runtime".into(), dynamic.clone().into());
        }),
        &[],
        &["dynamically linked", &dynamic, "scripts/image-binaries"],
    );
    refused(
        config(&dir, |c| {
            c["image"]
                .as_table_mut()
                .unwrap()
                .insert("memory_mib".into(), 64.into());
        }),
        &[],
        &["memory_mib", "image.toml", "is 64"],
    );
    let fake = dir.join("fake.deb");
    std::fs::write(&fake, b"!<arch>\nnot a kernel").unwrap();
    refused(
        config(&dir, |_| {}),
        &["--kernel-deb", fake.to_str().unwrap()],
        &["fake.deb", "SHA-256", "pins"],
    );
    let core = dir.join("core.wasm");
    std::fs::write(&core, b"\0asm\x01\0\0\0").unwrap();
    refused(
        config(&dir, |c| {
            c.insert(
                "guest".into(),
                toml::Value::Array(vec![
                    toml::toml! { name = "core" file = (core.display().to_string()) }.into(),
                ]),
            );
        }),
        &[],
        &["--guest core", "core.wasm", "not a component"],
    );
    refused(
        config(&dir, |c| {
            c.insert("runtime".into(), toml::toml! { args = ["--listen", "tcp://127.0.0.1:8443", "--fqdn", "localhost", "--attestation", "dev"] }.into());
        }),
        &[],
        &["refuses the image's [runtime] args", "--dev-root"],
    );
    refused(
        config(&dir, |c| {
            c["image"]
                .as_table_mut()
                .unwrap()
                .insert("memroy_mib".into(), 1.into());
        }),
        &[],
        &["image.toml", "memroy_mib"],
    );
    let empty_cache = dir.join("cache");
    refused(
        config(&dir, |c| {
            c["kernel"].as_table_mut().unwrap().insert(
                "package".into(),
                "linux-image-0.0.0-nacre-none-amd64".into(),
            );
        }),
        &["--cache", empty_cache.to_str().unwrap()],
        &["linux-image-0.0.0-nacre-none-amd64", "apt-get"],
    );

    // describe: a truncated EIF, a file that is not one.
    let cfg = config(&dir, |_| {});
    let good = dir.join("good.eif");
    let (ok, _, err) = build(&cfg, &good, &[]);
    assert!(ok, "{err}");
    let cut = dir.join("cut.eif");
    std::fs::write(&cut, &std::fs::read(&good).unwrap()[..3000]).unwrap();
    let (ok, _, err) = nacre(&["image", "describe", cut.to_str().unwrap()]);
    assert!(
        !ok && err.contains("cut.eif") && err.contains("truncated"),
        "{err}"
    );
    let foreign = dir.join("foreign.eif");
    std::fs::write(&foreign, vec![0x5a; 8192]).unwrap();
    let (ok, _, err) = nacre(&["image", "describe", foreign.to_str().unwrap()]);
    assert!(
        !ok && err.contains("foreign.eif") && err.contains("not an enclave image"),
        "{err}"
    );
}
