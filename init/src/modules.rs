//! Kernel modules. The image's kernel (Debian's cloud kernel) builds
//! `vsock`, its virtio transport, `virtio_mmio` and `nsm` as modules.

use nix::kmod::{ModuleInitFlags, finit_module};
use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs::File;

/// `MODULE_INIT_COMPRESSED_FILE` (linux/module.h): the kernel decompresses
/// the file itself. Debian ships modules as `.ko.xz` and builds its kernel
/// with `CONFIG_MODULE_DECOMPRESS`, so the image carries them as shipped.
const COMPRESSED_FILE: u32 = 4;

/// Loads the module at `path` with its parameters from the kernel's
/// command line: its own words, or those of the name `params_from` gives
/// for it.
pub fn load(path: &str, params_from: &BTreeMap<String, String>) -> Result<(), String> {
    let file = File::open(path).map_err(|e| format!("cannot open it: {e}"))?;
    let flags = if path.ends_with(".xz") || path.ends_with(".zst") || path.ends_with(".gz") {
        ModuleInitFlags::from_bits_retain(COMPRESSED_FILE)
    } else {
        ModuleInitFlags::empty()
    };
    let cmdline = std::fs::read_to_string("/proc/cmdline")
        .map_err(|e| format!("cannot read /proc/cmdline: {e}"))?;
    let name = module_name(path);
    let source = params_from.get(&name).cloned().unwrap_or(name);
    let params = CString::new(params_for(source, &cmdline))
        .map_err(|_| "a parameter on the kernel command line holds a NUL byte".to_owned())?;
    finit_module(&file, &params, flags).map_err(|e| format!("the kernel refused it: {e}"))
}

/// The module's name as the kernel knows it: the file's name up to
/// `.ko`, with `-` read as `_`.
fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    file.split(".ko").next().unwrap_or(file).replace('-', "_")
}

/// What modprobe would pass: every `NAME.param=value` word of the
/// command line, without `NAME.`. The kernel applies such words to
/// built-in code only; for a module loaded later, the loader must hand
/// them over (this is how Nitro's `virtio_mmio.device=…` reaches the
/// `virtio_mmio` module).
fn params_for(module: String, cmdline: &str) -> String {
    let prefix = format!("{module}.");
    cmdline
        .split_whitespace()
        .filter_map(|word| {
            word.replace('-', "_")
                .strip_prefix(&prefix)
                .map(|_| word[prefix.len()..].to_owned())
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_modules_parameters_come_from_the_command_line() {
        let cmdline = "console=ttyS0 virtio_mmio.device=4K@0xd0000000:5 nsm.x=1 virtio_mmio.device=4K@0xd0001000:6 virtio_mmiox.y=2\n";
        let name = module_name("/nacre/modules/virtio_mmio.ko.xz");
        assert_eq!(name, "virtio_mmio");
        assert_eq!(
            params_for(name, cmdline),
            "device=4K@0xd0000000:5 device=4K@0xd0001000:6"
        );
        assert_eq!(
            params_for(module_name("/m/vmw-vsock.ko"), "vmw_vsock.a=b"),
            "a=b"
        );
        assert_eq!(params_for("nsm".into(), "console=ttyS0"), "");
    }
}
