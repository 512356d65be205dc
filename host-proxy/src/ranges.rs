//! Which addresses a name in the egress allow list may lead to.
//!
//! A name stands for a public service, and its DNS answer is whatever the
//! operator's resolver, or whoever controls that zone, says. Every address
//! that is not a public unicast one is refused to names by default, so an
//! allowed name cannot be pointed into the parent's own network. IPv6 forms
//! that carry an IPv4 address (IPv4-mapped, IPv4-compatible, NAT64 and
//! 6to4) are judged by the IPv4 address they reach, since the kernel or a
//! translator on the path delivers them there.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why a name may not lead to an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    /// What the address is, e.g. `loopback` or `private (RFC 1918)`.
    pub kind: &'static str,
    /// The IPv6 form the address came in when it carries an IPv4 address,
    /// e.g. `NAT64 (64:ff9b::/96)`; `kind` then describes that IPv4
    /// address.
    pub via: Option<&'static str>,
    /// Link-local (the instance metadata service and the parent's
    /// credentials): no flag lets a name reach it.
    pub never: bool,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.via {
            Some(via) => write!(f, "{} address (embedded in {via})", self.kind),
            None => write!(f, "{} address", self.kind),
        }
    }
}

const LINK_LOCAL: &str = "link-local (instance metadata)";

/// Why a name may not lead to `ip`, or None for a public unicast address.
pub fn refusal(ip: IpAddr) -> Option<Refusal> {
    match ip {
        IpAddr::V4(v4) => v4_kind(v4).map(|kind| Refusal {
            kind,
            via: None,
            never: kind == LINK_LOCAL,
        }),
        IpAddr::V6(v6) => v6_refusal(v6),
    }
}

/// The special-purpose IPv4 ranges (IANA's registry, plus multicast).
fn v4_kind(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    let kind = if ip.is_link_local() {
        LINK_LOCAL
    } else if ip.is_loopback() {
        "loopback"
    } else if ip.is_private() {
        "private (RFC 1918)"
    } else if a == 100 && (64..128).contains(&b) {
        "shared (RFC 6598)"
    } else if a == 0 {
        "unspecified (0.0.0.0/8)"
    } else if ip.is_broadcast() {
        "broadcast"
    } else if ip.is_multicast() {
        "multicast"
    } else if a >= 240 {
        "reserved (240.0.0.0/4)"
    } else if ip.is_documentation() {
        "documentation"
    } else if a == 198 && (b & 0xfe) == 18 {
        "benchmarking (198.18.0.0/15)"
    } else if a == 192 && b == 0 && c == 0 {
        "IETF protocol assignments (192.0.0.0/24)"
    } else if a == 192 && b == 88 && c == 99 {
        "6to4 relay anycast (192.88.99.0/24)"
    } else {
        return None;
    };
    Some(kind)
}

/// The IPv6 special-purpose ranges; those carrying an IPv4 address are
/// judged by it.
fn v6_refusal(ip: Ipv6Addr) -> Option<Refusal> {
    let s = ip.segments();
    let embedded = |via, v4: Ipv4Addr| {
        v4_kind(v4).map(|kind| Refusal {
            kind,
            via: Some(via),
            never: kind == LINK_LOCAL,
        })
    };
    let low32 = Ipv4Addr::from_bits(ip.to_bits() as u32);
    match s {
        // Before ::/96: these two are IPv6's own loopback and unspecified.
        [0, 0, 0, 0, 0, 0, 0, 0] => return plain("unspecified"),
        [0, 0, 0, 0, 0, 0, 0, 1] => return plain("loopback"),
        [0, 0, 0, 0, 0, 0xffff, _, _] => return embedded("IPv4-mapped (::ffff:0:0/96)", low32),
        [0, 0, 0, 0, 0, 0, _, _] => return embedded("IPv4-compatible (::/96)", low32),
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => return embedded("NAT64 (64:ff9b::/96)", low32),
        [0x2002, hi, lo, ..] => {
            let v4 = Ipv4Addr::from_bits((u32::from(hi) << 16) | u32::from(lo));
            return embedded("6to4 (2002::/16)", v4);
        }
        _ => {}
    }
    if ip.is_unicast_link_local() || ip == METADATA_V6 {
        return Some(Refusal {
            kind: LINK_LOCAL,
            via: None,
            never: true,
        });
    }
    let kind = if ip.is_unique_local() {
        "private (fc00::/7)"
    } else if s[0] & 0xffc0 == 0xfec0 {
        "site-local (fec0::/10)"
    } else if ip.is_multicast() {
        "multicast"
    } else if s[..3] == [0x64, 0xff9b, 1] {
        // The embedding's prefix length is the local network's choice, so
        // the IPv4 address cannot be read back; the translator is local.
        "local-use NAT64 (64:ff9b:1::/48)"
    } else if s[..2] == [0x2001, 0] {
        // The client's IPv4 address is the relay's to choose.
        "Teredo (2001::/32)"
    } else if s[0] == 0x2001 && s[1] < 0x200 && !ietf_global(s) {
        "IETF protocol assignments (2001::/23)"
    } else if s[..2] == [0x2001, 0xdb8] || s[0] & 0xfff0 == 0x3ff0 {
        "documentation"
    } else if s[..4] == [0x100, 0, 0, 0] {
        "discard-only (100::/64)"
    } else if s[0] == 0x5f00 {
        "segment routing (5f00::/16)"
    } else {
        return None;
    };
    plain(kind)
}

/// The instance metadata service's IPv6 address, on Nitro instances.
const METADATA_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254);

fn plain(kind: &'static str) -> Option<Refusal> {
    Some(Refusal {
        kind,
        via: None,
        never: false,
    })
}

/// The parts of 2001::/23 that IANA lists as globally reachable: AMT
/// (2001:3::/32), AS112-v6 (2001:4:112::/48), ORCHIDv2 and DETs
/// (2001:20::/27), and the PCP and TURN anycast addresses.
fn ietf_global(s: [u16; 8]) -> bool {
    s[1] == 3
        || s[1..3] == [4, 0x112]
        || (0x20..0x40).contains(&s[1])
        || (s[1..7] == [1, 0, 0, 0, 0, 0] && matches!(s[7], 1 | 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(ip: &str) -> Option<Refusal> {
        refusal(ip.parse().expect("a test address"))
    }

    #[test]
    fn public_addresses_pass() {
        for ip in [
            "93.184.216.34",
            "1.1.1.1",
            "172.32.0.1",
            "100.128.0.1",
            "198.20.0.1",
            "192.0.1.1",
            "223.255.255.255",
            "2606:2800:220:1::1",
            "2001:4860:4860::8888",
            "2001:3::1",
            "2001:4:112::1",
            "2001:20::1",
            "2001:200::1",
            // Public IPv4 addresses in IPv6 forms reach that public host.
            "::ffff:93.184.216.34",
            "::93.184.216.34",
            "64:ff9b::5db8:d822",
            "2002:5db8:d822::1",
        ] {
            assert_eq!(check(ip), None, "{ip}");
        }
    }

    #[test]
    fn link_local_is_never_reached() {
        for ip in [
            "169.254.169.254",
            "169.254.0.1",
            "fe80::1",
            "fd00:ec2::254",
            "::ffff:169.254.169.254",
            "::169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "2002:a9fe:a9fe::",
        ] {
            let r = check(ip).unwrap_or_else(|| panic!("{ip} passed"));
            assert!(r.never && r.kind.starts_with("link-local"), "{ip}: {r:?}");
        }
    }

    #[test]
    fn special_ranges_are_refused_by_kind() {
        let table = [
            ("127.0.0.1", "loopback", None),
            ("127.8.9.10", "loopback", None),
            ("::1", "loopback", None),
            ("10.1.2.3", "private", None),
            ("172.16.0.1", "private", None),
            ("172.31.255.255", "private", None),
            ("192.168.1.1", "private", None),
            ("fc00::1", "private", None),
            ("fd12:3456::1", "private", None),
            ("fd00:ec2::1", "private", None),
            ("fec0::1", "site-local", None),
            ("100.64.0.1", "shared", None),
            ("100.127.255.255", "shared", None),
            ("0.0.0.0", "unspecified", None),
            ("0.1.2.3", "unspecified", None),
            ("::", "unspecified", None),
            ("255.255.255.255", "broadcast", None),
            ("224.0.0.1", "multicast", None),
            ("239.1.2.3", "multicast", None),
            ("ff02::1", "multicast", None),
            ("240.0.0.1", "reserved", None),
            ("198.18.0.1", "benchmarking", None),
            ("198.19.255.255", "benchmarking", None),
            ("192.0.2.1", "documentation", None),
            ("198.51.100.7", "documentation", None),
            ("203.0.113.9", "documentation", None),
            ("2001:db8::1", "documentation", None),
            ("3fff::1", "documentation", None),
            ("192.0.0.8", "IETF", None),
            ("192.88.99.1", "6to4 relay", None),
            ("2001::1", "Teredo", None),
            ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "Teredo", None),
            ("2001:2::1", "IETF", None),
            ("2001:10::1", "IETF", None),
            ("64:ff9b:1::a00:1", "local-use NAT64", None),
            ("64:ff9b:1:ffff::5db8:d822", "local-use NAT64", None),
            ("100::1", "discard-only", None),
            ("5f00::1", "segment routing", None),
            // IPv6 forms carrying a non-public IPv4 address.
            ("::ffff:127.0.0.1", "loopback", Some("IPv4-mapped")),
            ("::ffff:10.0.0.1", "private", Some("IPv4-mapped")),
            ("::127.0.0.1", "loopback", Some("IPv4-compatible")),
            ("::10.0.0.1", "private", Some("IPv4-compatible")),
            ("::0.0.0.2", "unspecified", Some("IPv4-compatible")),
            ("64:ff9b::7f00:1", "loopback", Some("NAT64")),
            ("64:ff9b::10.0.0.1", "private", Some("NAT64")),
            ("64:ff9b::100.64.0.1", "shared", Some("NAT64")),
            ("2002:7f00:0001::", "loopback", Some("6to4")),
            ("2002:c0a8:0101::1", "private", Some("6to4")),
            ("2002:0a00:0001:1::", "private", Some("6to4")),
        ];
        for (ip, kind, via) in table {
            let r = check(ip).unwrap_or_else(|| panic!("{ip} passed"));
            assert!(r.kind.contains(kind) && !r.never, "{ip}: {r:?}");
            assert_eq!(
                r.via.map(|v| v.split(' ').next()),
                via.map(Some),
                "{ip}: {r:?}"
            );
        }
    }

    #[test]
    fn refusals_read_as_addresses() {
        let r = check("64:ff9b::7f00:1").unwrap_or_else(|| panic!("passed"));
        assert_eq!(
            r.to_string(),
            "loopback address (embedded in NAT64 (64:ff9b::/96))"
        );
        let r = check("10.0.0.1").unwrap_or_else(|| panic!("passed"));
        assert_eq!(r.to_string(), "private (RFC 1918) address");
    }
}
