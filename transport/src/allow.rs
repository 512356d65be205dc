//! Egress allow rules: `HOST:PORT`, `*.DOMAIN:PORT` and `http://HOST:PORT`.
//!
//! The runtime checks a guest's outbound request against these inside the
//! enclave; the host proxy checks every CONNECT against its own list. Both
//! use this type, so a pattern means the same thing on both sides.

use std::fmt;
use std::str::FromStr;

use crate::addr::split_host_port;

/// One allowed destination pattern.
///
/// ```
/// use nacre_transport::AllowRule;
/// let r: AllowRule = "*.example.com:443".parse().unwrap();
/// assert!(r.matches("api.example.com", 443, true));
/// assert!(!r.matches("example.com", 443, true));
/// assert!(!r.matches("api.example.com", 443, false), "plaintext needs http://");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AllowRule {
    /// Lower-case host; for a wildcard, the domain after `*.`.
    host: String,
    wildcard: bool,
    port: u16,
    /// `http://` was written: plaintext HTTP to this destination is allowed.
    plaintext: bool,
}

/// Why a string is not an [`AllowRule`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("allow rule {input:?}: {why} (write HOST:PORT, *.DOMAIN:PORT or http://HOST:PORT)")]
pub struct AllowError {
    input: String,
    why: &'static str,
}

impl FromStr for AllowRule {
    type Err = AllowError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let err = |why| AllowError {
            input: input.to_string(),
            why,
        };
        let (plaintext, rest) = match input.strip_prefix("http://") {
            Some(rest) => (true, rest),
            None => (false, input.strip_prefix("https://").unwrap_or(input)),
        };
        let (host, port) = split_host_port(rest).ok_or_else(|| err("missing :PORT"))?;
        let port: u16 = port
            .parse()
            .map_err(|_| err("the port must be a number from 1 to 65535"))?;
        if port == 0 {
            return Err(err("port 0 is not a destination"));
        }
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let (wildcard, host) = match host.strip_prefix("*.") {
            Some(domain) => (true, domain.to_string()),
            None => (false, host),
        };
        let valid = !host.is_empty()
            && host.len() <= 253
            && host.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            })
            || (!wildcard && host.parse::<std::net::IpAddr>().is_ok());
        if !valid {
            return Err(err(
                "the host must be a DNS name or an IP address; `*` is only allowed as the first label",
            ));
        }
        Ok(AllowRule {
            host,
            wildcard,
            port,
            plaintext,
        })
    }
}

impl AllowRule {
    /// Whether any of `rules` allows `host:port` (see [`AllowRule::matches`]).
    pub fn any_matches(rules: &[AllowRule], host: &str, port: u16, tls: bool) -> bool {
        rules.iter().any(|r| r.matches(host, port, tls))
    }

    /// Whether a request to `host:port` may go out under this rule; `tls`
    /// is false for plaintext `http://` requests, which need a rule written
    /// with `http://`.
    pub fn matches(&self, host: &str, port: u16, tls: bool) -> bool {
        if port != self.port || (!tls && !self.plaintext) {
            return false;
        }
        self.matches_host(host)
    }

    /// Whether this rule's host pattern covers `host`, whatever the port:
    /// a guest's name lookup answers only names some rule could reach.
    pub fn matches_host(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        if self.wildcard {
            host.len() > self.host.len() + 1
                && host.ends_with(&self.host)
                && host.as_bytes()[host.len() - self.host.len() - 1] == b'.'
        } else {
            host == self.host
        }
    }

    /// Whether everything `other` allows is also allowed by `self`: used to
    /// check a guest's list against the runtime's `--egress-allow` cap.
    pub fn covers(&self, other: &AllowRule) -> bool {
        if other.port != self.port || (other.plaintext && !self.plaintext) {
            return false;
        }
        match (self.wildcard, other.wildcard) {
            (false, false) => self.host == other.host,
            (false, true) => false,
            // `*.a.com` covers `x.a.com` and `*.x.a.com`.
            (true, _) => {
                self.matches(&other.host, other.port, !other.plaintext)
                    || (other.wildcard && other.host == self.host)
            }
        }
    }
}

impl fmt::Display for AllowRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.plaintext { "http://" } else { "" };
        let star = if self.wildcard { "*." } else { "" };
        if self.host.contains(':') {
            write!(f, "{scheme}[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}{star}{}:{}", self.host, self.port)
        }
    }
}

impl serde::Serialize for AllowRule {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A list of rules; empty allows nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList(pub Vec<AllowRule>);

impl AllowList {
    /// Whether any rule allows `host:port`.
    pub fn allows(&self, host: &str, port: u16, tls: bool) -> bool {
        AllowRule::any_matches(&self.0, host, port, tls)
    }

    /// The first rule of `wanted` that no rule here covers.
    pub fn first_uncovered<'a>(&self, wanted: &'a [AllowRule]) -> Option<&'a AllowRule> {
        wanted.iter().find(|w| !self.0.iter().any(|c| c.covers(w)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(s: &str) -> AllowRule {
        s.parse().unwrap()
    }

    #[test]
    fn exact_and_wildcard_matching() {
        let r = rule("API.Example.com.:443");
        assert!(r.matches("api.example.com", 443, true));
        assert!(r.matches("API.EXAMPLE.COM.", 443, true));
        assert!(!r.matches("api.example.com", 80, true));
        assert!(!r.matches("xapi.example.com", 443, true));
        let w = rule("*.example.com:443");
        assert!(w.matches("a.b.example.com", 443, true));
        assert!(!w.matches("example.com", 443, true));
        assert!(!w.matches("badexample.com", 443, true));
        assert!(rule("http://h:80").matches("h", 80, false));
        assert!(rule("http://h:80").matches("h", 80, true));
        assert!(rule("[::1]:8443").matches("::1", 8443, true));
    }

    #[test]
    fn cap_coverage() {
        let cap = AllowList(vec![rule("*.example.com:443"), rule("one.test:443")]);
        assert!(
            cap.first_uncovered(&[rule("a.example.com:443"), rule("*.x.example.com:443")])
                .is_none()
        );
        assert_eq!(
            cap.first_uncovered(&[rule("example.com:443")]),
            Some(&rule("example.com:443"))
        );
        assert_eq!(
            cap.first_uncovered(&[rule("http://one.test:443")]),
            Some(&rule("http://one.test:443"))
        );
        assert_eq!(
            cap.first_uncovered(&[rule("*.test:443")]),
            Some(&rule("*.test:443"))
        );
        assert!(cap.first_uncovered(&[rule("*.example.com:443")]).is_none());
    }

    #[test]
    fn display_round_trips_and_errors_name_input() {
        for s in [
            "a.b:443",
            "*.a.b:443",
            "http://h:80",
            "[::1]:1",
            "10.0.0.1:5",
        ] {
            assert_eq!(rule(s).to_string(), s);
        }
        for bad in [
            "nohost",
            "h:0",
            "h:x",
            "a.*.b:443",
            "*:443",
            "bad host:1",
            ":443",
        ] {
            let e = bad.parse::<AllowRule>().unwrap_err().to_string();
            assert!(e.contains(bad), "{e}");
        }
    }
}
