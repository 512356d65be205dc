//! Guest names, routes and the `--guest NAME=PATH;route=/p;allow=...` flag.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use nacre_api::TcpEntry;
use nacre_transport::AllowRule;

/// A guest name: `[a-z0-9][a-z0-9-]{0,62}`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct GuestName(String);

impl FromStr for GuestName {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let b = s.as_bytes();
        let ok = !b.is_empty()
            && b.len() <= 63
            && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
            && b.iter()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-');
        if ok {
            Ok(GuestName(s.to_string()))
        } else {
            Err(format!(
                "guest name {s:?} is invalid: use 1 to 63 lower-case letters, digits and '-', starting with a letter or digit"
            ))
        }
    }
}

impl GuestName {
    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for GuestName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A route prefix: `/` or `/seg[/seg...]`, never under `/enclave`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct Route(String);

impl FromStr for Route {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let trimmed = if s.len() > 1 {
            s.trim_end_matches('/')
        } else {
            s
        };
        let valid_chars = trimmed
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"/-._~".contains(&c));
        if !trimmed.starts_with('/')
            || !valid_chars
            || trimmed.contains("//")
            || trimmed.len() > 256
        {
            return Err(format!(
                "route {s:?} is invalid: write a path prefix such as /api or / (letters, digits, '-', '.', '_', '~')"
            ));
        }
        // Clients (curl, browsers) resolve `.` and `..` before sending, so
        // a route holding them would never be asked for.
        if trimmed.split('/').any(|seg| seg == "." || seg == "..") {
            return Err(format!(
                "route {s:?} has a '.' or '..' segment, which clients remove before sending: write the path as it will be requested"
            ));
        }
        if trimmed == "/enclave" || trimmed.starts_with("/enclave/") {
            return Err(format!(
                "route {s:?} is reserved: /enclave belongs to the runtime; choose another prefix"
            ));
        }
        Ok(Route(trimmed.to_string()))
    }
}

impl Route {
    /// The default route of a guest: `/NAME`, checked like any other, so a
    /// name whose default route is reserved is refused too.
    pub fn for_name(name: &GuestName) -> Result<Route, String> {
        format!("/{name}").parse().map_err(|e| {
            format!("guest name {name} gives the default route /{name}, which cannot be used ({e}); give the guest another name or an explicit route")
        })
    }

    /// The route as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// If `path` falls under this route (on a segment boundary), the rest of
    /// it as the guest should see it, always starting with `/`.
    pub fn strip<'a>(&self, path: &'a str) -> Option<&'a str> {
        nacre_api::strip_route(&self.0, path)
    }
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a TCP guest's clients' TLS ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpTls {
    /// In the runtime, under the deployment's certificate (the default).
    Enclave,
    /// In the guest: the bytes reach it as clients sent them.
    Guest,
}

impl FromStr for TcpTls {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "enclave" => Ok(TcpTls::Enclave),
            "guest" => Ok(TcpTls::Guest),
            _ => Err(format!(
                "tls={s:?} is not a TLS mode: write tls=enclave (the runtime ends TLS) or tls=guest (the guest does)"
            )),
        }
    }
}

impl fmt::Display for TcpTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TcpTls::Enclave => "enclave",
            TcpTls::Guest => "guest",
        })
    }
}

/// A TCP guest's public port and TLS mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpService {
    /// The port clients connect to, and the only one the guest may bind.
    pub port: u16,
    /// Where clients' TLS ends.
    pub tls: TcpTls,
}

impl TcpService {
    /// The port and TLS mode as the manifest and sealed records write them.
    pub fn entry(&self) -> TcpEntry {
        TcpEntry {
            port: self.port,
            tls: self.tls.to_string(),
        }
    }

    /// Reads [`TcpService::entry`]'s form back, checked as `tcp=` is.
    pub fn from_entry(entry: &TcpEntry) -> Result<TcpService, String> {
        let port = Some(entry.port)
            .filter(|p| *p != 0)
            .ok_or("tcp port 0 is not a port: a TCP guest has a port from 1 to 65535")?;
        Ok(TcpService {
            port,
            tls: entry.tls.parse()?,
        })
    }

    /// `tcp=PORT` and an optional `tls=MODE`, as the flag and the admin
    /// API give them.
    pub fn parse(port: &str, tls: Option<&str>) -> Result<TcpService, String> {
        let port = port
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("tcp={port:?} is not a port: write a number from 1 to 65535"))?;
        let tls = tls.map(str::parse).transpose()?.unwrap_or(TcpTls::Enclave);
        Ok(TcpService { port, tls })
    }
}

/// What a guest is deployed as: name, route and outbound allow list, and
/// for a TCP guest its port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestConfig {
    /// Unique name.
    pub name: GuestName,
    /// Route prefix it serves (an HTTP guest's; a TCP guest serves none).
    pub route: Route,
    /// Destinations it may reach.
    pub allow: Vec<AllowRule>,
    /// A TCP guest's port and TLS mode; None for an HTTP guest.
    pub tcp: Option<TcpService>,
}

impl GuestConfig {
    /// A config with the default route `/NAME` when none is given; fails
    /// when that default is not a usable route (a guest named `enclave`).
    pub fn new(
        name: GuestName,
        route: Option<Route>,
        allow: Vec<AllowRule>,
    ) -> Result<Self, String> {
        let route = match route {
            Some(r) => r,
            None => Route::for_name(&name)?,
        };
        Ok(GuestConfig {
            name,
            route,
            allow,
            tcp: None,
        })
    }

    /// The same guest served as a TCP guest.
    pub fn with_tcp(self, tcp: Option<TcpService>) -> GuestConfig {
        GuestConfig { tcp, ..self }
    }
}

/// A boot guest from `--guest NAME=PATH[;route=/p][;allow=HOST:PORT,...]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootGuest {
    /// Name, route and allow list.
    pub config: GuestConfig,
    /// The `.wasm` component file.
    pub path: PathBuf,
}

impl FromStr for BootGuest {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let mut parts = s.split(';');
        let first = parts.next().unwrap_or_default();
        let (name, path) = first.split_once('=').ok_or_else(|| {
            format!("--guest {s:?}: expected NAME=PATH[;route=/p][;allow=HOST:PORT,...]")
        })?;
        let name: GuestName = name.parse()?;
        if path.is_empty() {
            return Err(format!("--guest {s:?}: the component path is empty"));
        }
        let mut route = None;
        let mut allow = Vec::new();
        let (mut tcp, mut tls) = (None, None);
        for opt in parts.filter(|p| !p.is_empty()) {
            match opt.split_once('=') {
                Some(("route", r)) => route = Some(r.parse()?),
                Some(("tcp", port)) => tcp = Some(port),
                Some(("tls", mode)) => tls = Some(mode),
                Some(("allow", list)) => {
                    for a in list.split(',').filter(|a| !a.is_empty()) {
                        allow.push(
                            a.parse::<AllowRule>()
                                .map_err(|e| format!("--guest {name}: {e}"))?,
                        );
                    }
                }
                _ => {
                    return Err(format!(
                        "--guest {s:?}: unknown option {opt:?}; known: route=/p, allow=HOST:PORT,..., tcp=PORT, tls=enclave|guest"
                    ));
                }
            }
        }
        let tcp =
            tcp_options(tcp, tls, route.is_some()).map_err(|e| format!("--guest {s:?}: {e}"))?;
        Ok(BootGuest {
            config: GuestConfig::new(name, route, allow)
                .map_err(|e| format!("--guest {s:?}: {e}"))?
                .with_tcp(tcp),
            path: PathBuf::from(path),
        })
    }
}

/// A TCP service from `tcp=PORT` and `tls=MODE` (flag or query), refusing
/// `tls` without `tcp` and a route with it.
pub fn tcp_options(
    tcp: Option<&str>,
    tls: Option<&str>,
    has_route: bool,
) -> Result<Option<TcpService>, String> {
    match (tcp, tls) {
        (None, None) => Ok(None),
        (None, Some(_)) => {
            Err("tls= applies to TCP guests only: add tcp=PORT, or drop tls=".into())
        }
        (Some(_), _) if has_route => {
            Err("a TCP guest serves no HTTP route: drop route=, or drop tcp= to serve HTTP".into())
        }
        (Some(port), tls) => TcpService::parse(port, tls).map(Some),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["a", "hello", "0x", "a-b-c", &"a".repeat(63)] {
            assert!(ok.parse::<GuestName>().is_ok(), "{ok}");
        }
        for bad in ["", "-a", "A", "a_b", "a.b", &"a".repeat(64), "héllo", "a/b"] {
            assert!(bad.parse::<GuestName>().is_err(), "{bad}");
        }
    }

    #[test]
    fn routes_strip_on_segment_boundaries() {
        let r: Route = "/api/".parse().unwrap();
        assert_eq!(r.as_str(), "/api");
        assert_eq!(r.strip("/api"), Some("/"));
        assert_eq!(r.strip("/api/x/y"), Some("/x/y"));
        assert_eq!(r.strip("/apix"), None);
        let root: Route = "/".parse().unwrap();
        assert_eq!(root.strip("/anything"), Some("/anything"));
        for bad in [
            "api",
            "/a b",
            "/a//b",
            "/enclave",
            "/enclave/x",
            "/a?b",
            "/a/../b",
            "/..",
            "/.",
            "/a/.",
            "/a/./b",
            "/../enclave",
        ] {
            assert!(bad.parse::<Route>().is_err(), "{bad}");
        }
        let e = "/a/../b".parse::<Route>().unwrap_err();
        assert!(e.contains("'..' segment"), "{e}");
        for good in ["/a.b", "/..a", "/a..", "/.well-known"] {
            assert!(good.parse::<Route>().is_ok(), "{good}");
        }
    }

    #[test]
    fn boot_guest_flag() {
        let g: BootGuest = "hello=/x/hello.wasm;route=/;allow=a.com:443,*.b.com:443"
            .parse()
            .unwrap();
        assert_eq!(g.config.name.as_str(), "hello");
        assert_eq!(g.config.route.as_str(), "/");
        assert_eq!(g.config.allow.len(), 2);
        assert_eq!(g.path, PathBuf::from("/x/hello.wasm"));
        let d: BootGuest = "echo=e.wasm".parse().unwrap();
        assert_eq!(d.config.route.as_str(), "/echo");
        assert!(
            "Bad=x.wasm"
                .parse::<BootGuest>()
                .unwrap_err()
                .contains("Bad")
        );
        assert!(
            "x=y.wasm;color=red"
                .parse::<BootGuest>()
                .unwrap_err()
                .contains("color")
        );
        assert!("nopath".parse::<BootGuest>().is_err());
        // The default route of a guest named `enclave` is reserved.
        let e = "enclave=e.wasm".parse::<BootGuest>().unwrap_err();
        assert!(e.contains("default route /enclave"), "{e}");
        assert!("enclave=e.wasm;route=/e".parse::<BootGuest>().is_ok());
    }

    #[test]
    fn tcp_guest_flag() {
        let g: BootGuest = "echo=e.wasm;tcp=8080".parse().unwrap();
        assert_eq!(
            g.config.tcp,
            Some(TcpService {
                port: 8080,
                tls: TcpTls::Enclave
            })
        );
        let g: BootGuest = "echo=e.wasm;tcp=7000;tls=guest;allow=db.internal:5432"
            .parse()
            .unwrap();
        assert_eq!(g.config.tcp.map(|t| t.tls), Some(TcpTls::Guest));
        for (bad, says) in [
            ("e=e.wasm;tcp=0", "1 to 65535"),
            ("e=e.wasm;tcp=70000", "1 to 65535"),
            ("e=e.wasm;tcp=x", "not a port"),
            ("e=e.wasm;tcp=80;tls=none", "tls=enclave"),
            ("e=e.wasm;tls=guest", "add tcp=PORT"),
            ("e=e.wasm;tcp=80;route=/e", "no HTTP route"),
        ] {
            let e = bad.parse::<BootGuest>().unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
