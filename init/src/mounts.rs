//! The kernel's file systems. The initramfs is the root and stays
//! writable; the runtime keeps its dev CA and scratch files under `/tmp`.

use nix::mount::{MsFlags, mount};
use std::fs;

/// Mounts `/proc`, `/sys`, `/dev` (devtmpfs: the kernel creates `/dev/nsm`
/// and `/dev/vsock` there as their drivers load) and `/tmp`.
pub fn mount_all() -> Result<(), String> {
    let quiet = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    for (fs_type, target, flags) in [
        ("proc", "/proc", quiet),
        ("sysfs", "/sys", quiet),
        ("devtmpfs", "/dev", MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC),
        ("tmpfs", "/tmp", MsFlags::MS_NOSUID | MsFlags::MS_NODEV),
    ] {
        fs::create_dir_all(target).map_err(|e| format!("cannot create {target}: {e}"))?;
        mount(Some(fs_type), target, Some(fs_type), flags, None::<&str>)
            .map_err(|e| format!("cannot mount {fs_type} on {target}: {e}"))?;
    }
    Ok(())
}
