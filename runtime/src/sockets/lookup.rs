//! Name lookups for guests: only the names their allow list could reach,
//! each given an address of its own from 198.18.0.0/15 for the life of
//! the instance; the connect maps it back to the name, which is what the
//! tunnel asks the host proxy for. The enclave has no resolver, and the
//! host's answers would be the host's choice.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr};

use wasmtime_wasi::p2::Pollable;

/// The first address handed out: 198.18.0.1.
const BASE: u32 = u32::from_be_bytes([198, 18, 0, 1]);
/// Names one instance may look up; 198.18.0.0/15 holds 131,072.
const MAX_NAMES: u32 = 4096;

/// The names an instance looked up, and their addresses.
#[derive(Default)]
pub(super) struct Names {
    by_name: HashMap<String, Ipv4Addr>,
    by_addr: HashMap<Ipv4Addr, String>,
}

impl Names {
    /// `name`'s address, given now if it has none yet; None past
    /// [`MAX_NAMES`].
    pub(super) fn address_of(&mut self, name: &str) -> Option<IpAddr> {
        if let Some(ip) = self.by_name.get(name) {
            return Some(IpAddr::V4(*ip));
        }
        let n = u32::try_from(self.by_name.len())
            .ok()
            .filter(|n| *n < MAX_NAMES)?;
        let ip = Ipv4Addr::from(BASE + n);
        self.by_name.insert(name.to_string(), ip);
        self.by_addr.insert(ip, name.to_string());
        Some(IpAddr::V4(ip))
    }

    /// The name behind an address this instance was given.
    pub(super) fn name_of(&self, ip: IpAddr) -> Option<String> {
        match ip {
            IpAddr::V4(v4) => self.by_addr.get(&v4).cloned(),
            IpAddr::V6(_) => None,
        }
    }
}

/// Whether `ip` is in the range names are given from (so never a real
/// destination of a guest's connect).
pub(super) fn is_synthetic(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            o[0] == 198 && (o[1] == 18 || o[1] == 19)
        }
        IpAddr::V6(_) => false,
    }
}

/// A lookup's answer (`resolve-address-stream`): known at once.
pub struct Resolved(pub(super) VecDeque<IpAddr>);

#[wasmtime_wasi::async_trait]
impl Pollable for Resolved {
    async fn ready(&mut self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_get_stable_addresses_in_the_range_and_map_back() {
        let mut n = Names::default();
        let a = n.address_of("redis.internal").unwrap();
        let b = n.address_of("db.internal").unwrap();
        assert_ne!(a, b);
        assert_eq!(n.address_of("redis.internal"), Some(a));
        assert!(is_synthetic(a) && is_synthetic(b));
        assert_eq!(n.name_of(a).as_deref(), Some("redis.internal"));
        assert_eq!(n.name_of("198.18.9.9".parse().unwrap()), None);
        assert!(!is_synthetic("127.0.0.1".parse().unwrap()));
        for i in 2..MAX_NAMES {
            assert!(n.address_of(&format!("n{i}.example")).is_some());
        }
        assert_eq!(n.address_of("one-too-many.example"), None);
    }
}
