//! `nacre-init`: PID 1 of a Nacre enclave image.
//!
//! The kernel runs it from the image's first ramdisk. It mounts the
//! kernel's file systems, loads the modules the image names, brings up
//! `lo` (and, in an image made for a VM, one configured interface), sends
//! the Nitro boot heartbeat when it runs inside an enclave, then starts the
//! runtime with the image's flags and waits. Each step is one line on the
//! console; a failed step is reported there and the machine powers off, as
//! does the end of the runtime, so the host sees the enclave stop instead
//! of a kernel panic or a silent hang.

mod heartbeat;
mod modules;
mod mounts;
mod net;
mod supervise;

use nacre_init::{BootPlan, PLAN_PATH};
use std::fmt::Display;

fn main() {
    // Mounting over /proc or powering off is for a VM's or an enclave's
    // PID 1 only: refuse anywhere else (a developer running it by hand).
    if std::process::id() != 1 {
        eprintln!(
            "nacre-init is the first process of a Nacre enclave image and runs only as PID 1; build an image with `nacre image build`"
        );
        std::process::exit(2);
    }
    say("starting");
    let outcome = boot();
    match &outcome {
        Ok(status) => say(format_args!("the runtime ended: {status}")),
        Err(e) => say(format_args!("boot failed: {e}")),
    }
    supervise::power_off();
}

/// One console line per step: the operator reads the boot on the
/// enclave's console (`nitro-cli console`) or the VM's serial port.
/// Never panics: with no console to write to (a write to /dev/console
/// that fails), PID 1 must go on booting, since its exit panics the kernel.
pub(crate) fn say(what: impl Display) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout(), "nacre-init: {what}");
}

/// Runs one step and reports it on the console.
fn step<T>(name: &str, f: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    match f() {
        Ok(v) => {
            say(format_args!("{name}: ok"));
            Ok(v)
        }
        Err(e) => Err(format!("{name}: {e}")),
    }
}

fn boot() -> Result<String, String> {
    step("mount /proc, /sys, /dev, /tmp", mounts::mount_all)?;
    let plan = step(&format!("read {PLAN_PATH}"), read_plan)?;
    for module in &plan.modules {
        step(&format!("load {module}"), || {
            modules::load(module, &plan.params_from)
        })?;
    }
    step("bring up lo", || net::up("lo"))?;
    if let Some(iface) = &plan.network {
        step(
            &format!("configure {} as {}", iface.name, iface.address),
            || net::configure(iface),
        )?;
    }
    if heartbeat::in_enclave() {
        step("boot heartbeat to the parent", heartbeat::send)?;
    } else {
        say("not inside a Nitro Enclave (no /dev/nsm): no boot heartbeat");
    }
    say(format_args!("starting {}", plan.runtime));
    supervise::run(&plan)
}

fn read_plan() -> Result<BootPlan, String> {
    let text = std::fs::read(PLAN_PATH).map_err(|e| format!("cannot read it: {e}"))?;
    serde_json::from_slice(&text).map_err(|e| format!("it is not a boot plan: {e}"))
}
