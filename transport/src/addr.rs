//! The one parser for `tcp://`, `unix:` and `vsock://` addresses.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// The CID meaning "any" when listening on vsock (`VMADDR_CID_ANY`).
pub const VSOCK_CID_ANY: u32 = u32::MAX;

/// A listen or connect address.
///
/// ```
/// use nacre_transport::Address;
/// let a: Address = "tcp://127.0.0.1:8443".parse().unwrap();
/// assert_eq!(a.to_string(), "tcp://127.0.0.1:8443");
/// let v: Address = "vsock://any:443".parse().unwrap();
/// assert_eq!(v, Address::Vsock { cid: u32::MAX, port: 443 });
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Address {
    /// `tcp://HOST:PORT`; HOST is an IP literal (`[::1]` for IPv6) or a name.
    Tcp {
        /// Host name or IP literal, without brackets.
        host: String,
        /// TCP port; 0 asks the OS for a free one when listening.
        port: u16,
    },
    /// `unix:PATH`, a Unix domain socket.
    Unix(PathBuf),
    /// `vsock://CID:PORT`; CID `any` is [`VSOCK_CID_ANY`].
    Vsock {
        /// Context identifier of the VM (3 is the parent, 16+ enclaves).
        cid: u32,
        /// vsock port.
        port: u32,
    },
}

/// Why a string is not an [`Address`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AddressError {
    /// The scheme is not one of the three supported.
    #[error(
        "address {input:?} has no known scheme: use tcp://HOST:PORT, unix:PATH or vsock://CID:PORT"
    )]
    UnknownScheme {
        /// The address as given.
        input: String,
    },
    /// `HOST:PORT` part is malformed.
    #[error("address {input:?}: {why}")]
    Malformed {
        /// The address as given.
        input: String,
        /// What is wrong with it, and how to write it instead.
        why: &'static str,
    },
}

impl FromStr for Address {
    type Err = AddressError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let malformed = |why| AddressError::Malformed {
            input: input.to_string(),
            why,
        };
        if let Some(rest) = input.strip_prefix("tcp://") {
            let (host, port) = split_host_port(rest).ok_or_else(|| {
                malformed("expected tcp://HOST:PORT, e.g. tcp://127.0.0.1:8443 or tcp://[::1]:8443")
            })?;
            let port = port
                .parse::<u16>()
                .map_err(|_| malformed("the TCP port must be a number from 0 to 65535"))?;
            if host.is_empty() {
                return Err(malformed(
                    "the host is empty: write tcp://0.0.0.0:PORT to listen everywhere",
                ));
            }
            Ok(Address::Tcp {
                host: host.to_string(),
                port,
            })
        } else if let Some(rest) = input.strip_prefix("unix:") {
            let path = rest.strip_prefix("//").unwrap_or(rest);
            if path.is_empty() {
                return Err(malformed(
                    "the socket path is empty: write unix:/run/nacre.sock",
                ));
            }
            Ok(Address::Unix(PathBuf::from(path)))
        } else if let Some(rest) = input.strip_prefix("vsock://") {
            let (cid, port) = rest.rsplit_once(':').ok_or_else(|| {
                malformed("expected vsock://CID:PORT, e.g. vsock://16:443 or vsock://any:443")
            })?;
            let cid = if cid.eq_ignore_ascii_case("any") {
                VSOCK_CID_ANY
            } else {
                cid.parse::<u32>()
                    .map_err(|_| malformed("the vsock CID must be a number or `any`"))?
            };
            let port = port
                .parse::<u32>()
                .map_err(|_| malformed("the vsock port must be a 32-bit number"))?;
            Ok(Address::Vsock { cid, port })
        } else {
            Err(AddressError::UnknownScheme {
                input: input.to_string(),
            })
        }
    }
}

/// Splits `HOST:PORT` or `[V6]:PORT`.
pub(crate) fn split_host_port(s: &str) -> Option<(&str, &str)> {
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = after.strip_prefix(':')?;
        Some((host, port))
    } else {
        let (host, port) = s.rsplit_once(':')?;
        // A bare IPv6 literal would be ambiguous; insist on brackets.
        if host.contains(':') {
            return None;
        }
        Some((host, port))
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Tcp { host, port } if host.contains(':') => write!(f, "tcp://[{host}]:{port}"),
            Address::Tcp { host, port } => write!(f, "tcp://{host}:{port}"),
            Address::Unix(path) => write!(f, "unix:{}", path.display()),
            Address::Vsock { cid, port } if *cid == VSOCK_CID_ANY => {
                write!(f, "vsock://any:{port}")
            }
            Address::Vsock { cid, port } => write!(f, "vsock://{cid}:{port}"),
        }
    }
}

impl serde::Serialize for Address {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_scheme() {
        assert_eq!(
            "tcp://127.0.0.1:0".parse::<Address>().unwrap(),
            Address::Tcp {
                host: "127.0.0.1".into(),
                port: 0
            }
        );
        assert_eq!(
            "tcp://[::1]:443".parse::<Address>().unwrap(),
            Address::Tcp {
                host: "::1".into(),
                port: 443
            }
        );
        assert_eq!(
            "unix:/tmp/a.sock".parse::<Address>().unwrap(),
            Address::Unix("/tmp/a.sock".into())
        );
        assert_eq!(
            "vsock://16:443".parse::<Address>().unwrap(),
            Address::Vsock { cid: 16, port: 443 }
        );
        assert_eq!(
            "vsock://ANY:8000".parse::<Address>().unwrap(),
            Address::Vsock {
                cid: VSOCK_CID_ANY,
                port: 8000
            }
        );
    }

    #[test]
    fn display_round_trips() {
        for s in [
            "tcp://127.0.0.1:8443",
            "tcp://[::1]:1",
            "unix:/run/x.sock",
            "vsock://3:8001",
            "vsock://any:443",
        ] {
            assert_eq!(s.parse::<Address>().unwrap().to_string(), s);
        }
    }

    #[test]
    fn rejects_with_a_reason() {
        for (input, needle) in [
            ("http://x:1", "no known scheme"),
            ("127.0.0.1:80", "no known scheme"),
            ("tcp://127.0.0.1", "tcp://HOST:PORT"),
            ("tcp://::1:80", "tcp://HOST:PORT"),
            ("tcp://:80", "host is empty"),
            ("tcp://a:70000", "0 to 65535"),
            ("unix:", "path is empty"),
            ("vsock://x:1", "CID must be"),
            ("vsock://3:p", "vsock port"),
            ("vsock://3", "vsock://CID:PORT"),
        ] {
            let err = input.parse::<Address>().unwrap_err().to_string();
            assert!(err.contains(needle), "{input}: {err}");
            assert!(err.contains(input), "error names the input: {err}");
        }
    }
}
