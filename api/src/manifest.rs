//! The guest manifest (docs/attestation.md): the exact bytes a runtime serves at
//! `/enclave/manifest`, whose SHA-256 every runtime document binds.
//!
//! The runtime writes it and clients read it with the same types, so the
//! two can never disagree about its layout or about which paths a route
//! covers.

use serde::{Deserialize, Serialize};

/// The manifest layout version this crate reads and writes.
pub const MANIFEST_VERSION: u32 = 1;

/// `{"version":1,"guests":[{"name","route","sha256","allow"}...]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Layout version ([`MANIFEST_VERSION`]).
    pub version: u32,
    /// Every deployed guest, sorted by name.
    pub guests: Vec<ManifestEntry>,
}

/// One guest of a [`Manifest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestEntry {
    /// Guest name.
    pub name: String,
    /// Route prefix it serves.
    pub route: String,
    /// Lower-case hex SHA-256 of its component.
    pub sha256: String,
    /// Outbound destinations it may reach.
    pub allow: Vec<String>,
    /// For a TCP guest (whose `route` is empty: it serves no HTTP path),
    /// its port and where its clients' TLS ends; absent for HTTP guests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpEntry>,
}

/// A TCP guest's public port and where its clients' TLS ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TcpEntry {
    /// The port clients connect to.
    pub port: u16,
    /// `enclave`: the runtime ends TLS under the deployment's certificate;
    /// `guest`: the bytes reach the guest as sent, which does its own TLS.
    pub tls: String,
}

/// Why manifest bytes could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed manifest: {0}")]
pub struct ManifestError(String);

impl Manifest {
    /// A manifest of `guests`, sorted by name as the layout requires.
    pub fn new(mut guests: Vec<ManifestEntry>) -> Manifest {
        guests.sort_by(|a, b| a.name.cmp(&b.name));
        Manifest {
            version: MANIFEST_VERSION,
            guests,
        }
    }

    /// The canonical bytes: no insignificant whitespace, fields in layout
    /// order. Clients hash exactly these.
    pub fn to_bytes(&self) -> Vec<u8> {
        // Strings, numbers and lists of them always serialize.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Reads manifest bytes as a client received them.
    pub fn from_slice(bytes: &[u8]) -> Result<Manifest, ManifestError> {
        let m: Manifest =
            serde_json::from_slice(bytes).map_err(|e| ManifestError(e.to_string()))?;
        if m.version != MANIFEST_VERSION {
            return Err(ManifestError(format!(
                "version {} (this client reads version {MANIFEST_VERSION})",
                m.version
            )));
        }
        Ok(m)
    }

    /// The guest named `name`.
    pub fn guest(&self, name: &str) -> Option<&ManifestEntry> {
        self.guests.iter().find(|g| g.name == name)
    }

    /// The other guests that serve some path under `name`'s route: a
    /// longer route inside it (or an equal one) wins those paths, so the
    /// code answering there is theirs, not `name`'s.
    pub fn nested_under(&self, name: &str) -> Vec<&ManifestEntry> {
        let Some(outer) = self.guest(name) else {
            return Vec::new();
        };
        self.guests
            .iter()
            .filter(|g| {
                g.name != name
                    && !outer.route.is_empty()
                    && !g.route.is_empty()
                    && strip_route(&outer.route, &g.route).is_some()
            })
            .collect()
    }
}

/// If `path` falls under `route` (on a segment boundary), the rest of it as
/// the guest sees it, always starting with `/`. Route `/` covers every path.
///
/// ```
/// use nacre_api::strip_route;
/// assert_eq!(strip_route("/api", "/api/v1"), Some("/v1"));
/// assert_eq!(strip_route("/api", "/api"), Some("/"));
/// assert_eq!(strip_route("/api", "/apiary"), None);
/// assert_eq!(strip_route("/", "/x"), Some("/x"));
/// ```
pub fn strip_route<'a>(route: &str, path: &'a str) -> Option<&'a str> {
    if route == "/" {
        return Some(path);
    }
    let rest = path.strip_prefix(route)?;
    if rest.is_empty() {
        Some("/")
    } else if rest.starts_with('/') {
        Some(rest)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, route: &str) -> ManifestEntry {
        ManifestEntry {
            name: name.into(),
            route: route.into(),
            sha256: "00".repeat(32),
            allow: vec![],
            tcp: None,
        }
    }

    #[test]
    fn canonical_bytes_round_trip() {
        let m = Manifest::new(vec![entry("b", "/b"), entry("a", "/")]);
        let bytes = m.to_bytes();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(
            text.starts_with(r#"{"version":1,"guests":[{"name":"a","route":"/","sha256":"#),
            "{text}"
        );
        assert_eq!(Manifest::from_slice(&bytes).unwrap(), m);
        assert!(Manifest::from_slice(b"[]").is_err());
        let v2 = text.replace(r#""version":1"#, r#""version":2"#);
        assert!(
            Manifest::from_slice(v2.as_bytes())
                .unwrap_err()
                .to_string()
                .contains("version 2")
        );
    }

    #[test]
    fn nested_routes_are_found_on_segment_boundaries() {
        let m = Manifest::new(vec![
            entry("app", "/app"),
            entry("login", "/app/login"),
            entry("apple", "/apple"),
            entry("root", "/"),
        ]);
        let names =
            |n: &str| -> Vec<String> { m.nested_under(n).iter().map(|g| g.name.clone()).collect() };
        assert_eq!(names("app"), ["login"]);
        assert_eq!(names("login"), Vec::<String>::new());
        assert_eq!(names("root"), ["app", "apple", "login"]);
        assert_eq!(names("absent"), Vec::<String>::new());
    }
}
