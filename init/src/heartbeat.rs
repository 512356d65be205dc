//! The Nitro boot heartbeat. `nitro-cli run-enclave` waits for one byte
//! on the parent's vsock port 9000 and sends it back; without it the
//! enclave is reported as failed to start.

use nacre_init::{HEARTBEAT_BYTE, HEARTBEAT_PORT, PARENT_CID};
use nix::sys::socket::{AddressFamily, SockFlag, SockType, VsockAddr, connect, socket};
use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

/// How long the NSM device may take to appear after its module loads.
const NSM_WAIT: Duration = Duration::from_millis(500);

/// Whether this is a Nitro Enclave: only there does the NSM driver find
/// its device and create `/dev/nsm`. A VM without it (the tests' QEMU)
/// must never send the heartbeat: on a machine that is itself a vsock
/// guest, CID 3 would be someone else.
pub fn in_enclave() -> bool {
    let start = Instant::now();
    loop {
        if Path::new("/dev/nsm").exists() {
            return true;
        }
        if start.elapsed() > NSM_WAIT {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends the heartbeat byte and checks the parent's echo.
pub fn send() -> Result<(), String> {
    let fd = socket(
        AddressFamily::Vsock,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| format!("cannot open a vsock socket: {e}"))?;
    connect(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &VsockAddr::new(PARENT_CID, HEARTBEAT_PORT),
    )
    .map_err(|e| format!("cannot reach the parent's vsock port {HEARTBEAT_PORT}: {e}"))?;
    let mut stream = std::fs::File::from(fd);
    stream
        .write_all(&[HEARTBEAT_BYTE])
        .map_err(|e| format!("cannot send it: {e}"))?;
    let mut echo = [0u8; 1];
    stream
        .read_exact(&mut echo)
        .map_err(|e| format!("no echo: {e}"))?;
    if echo[0] != HEARTBEAT_BYTE {
        return Err(format!(
            "the parent echoed {:#04x}, not {HEARTBEAT_BYTE:#04x}",
            echo[0]
        ));
    }
    Ok(())
}
