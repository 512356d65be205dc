//! The boot plan: what `nacre-image build` writes into an image and what
//! `nacre-init` (PID 1 inside the enclave) carries out.
//!
//! Both sides use this one type, so the image's builder and its init can
//! never disagree on the file's shape. The plan is JSON at [`PLAN_PATH`]
//! in the image's application ramdisk, so it is measured into PCR2 (and
//! PCR0) with the runtime and the guests.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Where the plan is in the image.
pub const PLAN_PATH: &str = "/nacre/boot.json";

/// The Nitro boot heartbeat: the byte the enclave sends to the parent's
/// vsock port [`HEARTBEAT_PORT`] (CID 3) once it has booted, and reads
/// back. `nitro-cli run-enclave` waits for it.
pub const HEARTBEAT_BYTE: u8 = 0xB7;
/// The parent's vsock port for the boot heartbeat.
pub const HEARTBEAT_PORT: u32 = 9000;
/// The parent's vsock CID, as seen from an enclave.
pub const PARENT_CID: u32 = 3;

/// Everything the init does after mounting the kernel's file systems.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootPlan {
    /// Kernel modules to load, in this order (paths in the image;
    /// `.ko.xz` files are handed to the kernel compressed).
    pub modules: Vec<String>,
    /// Modules whose parameters are another name's words on the kernel's
    /// command line (module name to that name): the image's own
    /// `nacre_virtio_mmio` takes the `virtio_mmio.device=…` words that
    /// describe a Nitro Enclave's devices.
    #[serde(default)]
    pub params_from: BTreeMap<String, String>,
    /// An interface to configure besides `lo` (only images made to boot
    /// in a VM have one: an enclave has no network device).
    pub network: Option<Interface>,
    /// The runtime's path in the image.
    pub runtime: String,
    /// The runtime's arguments (without the program's name).
    pub args: Vec<String>,
    /// The runtime's whole environment.
    pub env: BTreeMap<String, String>,
}

/// A network interface and its one IPv4 address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Interface {
    /// The interface's name, for example `eth0`.
    pub name: String,
    /// Its address with the prefix length, for example `10.0.2.15/24`.
    pub address: String,
}

impl Interface {
    /// Splits [`Interface::address`] into the address and the prefix
    /// length, or says what is wrong with it.
    pub fn parsed(&self) -> Result<(std::net::Ipv4Addr, u8), String> {
        let bad = || {
            format!(
                "network address {:?} of {} is not an IPv4 address with a prefix length (for example 10.0.2.15/24)",
                self.address, self.name
            )
        };
        let (addr, len) = self.address.split_once('/').ok_or_else(bad)?;
        let addr = addr.parse().map_err(|_| bad())?;
        let len: u8 = len.parse().map_err(|_| bad())?;
        if len > 32 {
            return Err(bad());
        }
        Ok((addr, len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_or_name_the_fix() {
        let iface = |a: &str| Interface {
            name: "eth0".into(),
            address: a.into(),
        };
        assert_eq!(
            iface("10.0.2.15/24").parsed(),
            Ok(("10.0.2.15".parse().unwrap(), 24))
        );
        for bad in ["10.0.2.15", "10.0.2.15/33", "host/24", "10.0.2/8"] {
            let e = iface(bad).parsed().unwrap_err();
            assert!(e.contains(bad) && e.contains("eth0"), "{e}");
        }
    }

    #[test]
    fn a_misspelt_plan_is_refused() {
        let e = serde_json::from_str::<BootPlan>(
            r#"{"modules":[],"network":null,"runtime":"/r","args":[],"env":{},"modlues":[]}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("modlues"), "{e}");
    }
}
