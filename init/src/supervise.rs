//! The runtime's life under PID 1: start it with the image's flags and
//! environment, reap every child (PID 1 inherits orphans), and power off
//! when the runtime ends, since an enclave without its runtime serves
//! nothing and the host should see it stop.

use nacre_init::BootPlan;
use nix::sys::reboot::{RebootMode, reboot};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::Pid;
use std::process::Command;

/// Starts the runtime and waits for it to end; says how it ended.
pub fn run(plan: &BootPlan) -> Result<String, String> {
    let child = Command::new(&plan.runtime)
        .args(&plan.args)
        .env_clear()
        .envs(&plan.env)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", plan.runtime))?;
    let runtime = Pid::from_raw(i32::try_from(child.id()).map_err(|_| "pid out of range")?);
    loop {
        match waitpid(None, None) {
            Ok(WaitStatus::Exited(pid, code)) if pid == runtime => {
                return Ok(format!("exit status {code}"));
            }
            Ok(WaitStatus::Signaled(pid, signal, _)) if pid == runtime => {
                return Ok(format!("killed by {signal}"));
            }
            // An orphan reaped, or a stop/continue report.
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(format!("cannot wait for the runtime: {e}")),
        }
    }
}

/// Flushes the console and powers the machine off; PID 1 must never
/// return (the kernel would panic).
pub fn power_off() -> ! {
    nix::unistd::sync();
    let _ = reboot(RebootMode::RB_POWER_OFF);
    // Only reached when reboot(2) is refused (not PID 1: a developer ran
    // the binary by hand).
    std::process::exit(1)
}
