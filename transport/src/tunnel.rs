//! The HTTP/1.1 `CONNECT` exchange between the runtime (client, inside the
//! enclave) and the host proxy (server, on the parent).
//!
//! Both sides live here so the request line, the header limits and the
//! status codes they agree on are written once. After the exchange the
//! stream carries the guest's TLS bytes, which neither function looks at.

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::addr::split_host_port;

/// Largest request or response head either side reads: a CONNECT head is a
/// few dozen bytes, so anything near this is not a CONNECT.
pub const MAX_HEAD: usize = 8 * 1024;

/// A `CONNECT` target: the name as the guest wrote it (resolved on the
/// parent) and the port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// DNS name or IP literal, without brackets.
    pub host: String,
    /// Destination port.
    pub port: u16,
}

impl Target {
    /// `HOST:PORT` (`[v6]:PORT` for IPv6), or `HOST` with `default_port`.
    pub fn parse(s: &str, default_port: Option<u16>) -> Result<Target, String> {
        let (host, port) = match (split_host_port(s), default_port) {
            (Some((h, p)), _) => (
                h,
                p.parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| format!("{s:?}: the port must be 1 to 65535"))?,
            ),
            (None, Some(port)) if !s.contains(':') => (s, port),
            _ => return Err(format!("{s:?}: write HOST:PORT")),
        };
        if host.is_empty() || host.len() > 253 || host.contains('/') {
            return Err(format!("{s:?}: the host is empty, too long or not a name"));
        }
        Ok(Target {
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
            port,
        })
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// The answers the host proxy gives a CONNECT, and what each means to the
/// enclave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// 200: the tunnel is open.
    Established,
    /// 400: not a CONNECT request the proxy reads.
    BadRequest,
    /// 403: the target, or the address its name resolves to, is not
    /// allowed.
    Forbidden,
    /// 502: the target could not be reached.
    BadGateway,
    /// 503: the proxy is at its connection cap.
    Unavailable,
    /// 504: the target did not answer in time.
    GatewayTimeout,
}

impl Status {
    /// The HTTP status code.
    pub fn code(self) -> u16 {
        match self {
            Status::Established => 200,
            Status::BadRequest => 400,
            Status::Forbidden => 403,
            Status::BadGateway => 502,
            Status::Unavailable => 503,
            Status::GatewayTimeout => 504,
        }
    }

    /// The status with this code, if it is one of these.
    pub fn from_code(code: u16) -> Option<Status> {
        [
            Status::Established,
            Status::BadRequest,
            Status::Forbidden,
            Status::BadGateway,
            Status::Unavailable,
            Status::GatewayTimeout,
        ]
        .into_iter()
        .find(|s| s.code() == code)
    }

    fn reason(self) -> &'static str {
        match self {
            Status::Established => "Connection Established",
            Status::BadRequest => "Bad Request",
            Status::Forbidden => "Forbidden",
            Status::BadGateway => "Bad Gateway",
            Status::Unavailable => "Service Unavailable",
            Status::GatewayTimeout => "Gateway Timeout",
        }
    }
}

/// Why a tunnel could not be opened or accepted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TunnelError {
    /// The stream failed or closed during the exchange.
    #[error("tunnel I/O: {0}")]
    Io(#[from] io::Error),
    /// The head grew past [`MAX_HEAD`] without ending.
    #[error("CONNECT head longer than {MAX_HEAD} bytes")]
    HeadTooLarge,
    /// The bytes are not an HTTP/1.1 head of the expected kind.
    #[error("malformed CONNECT exchange: {0}")]
    Malformed(&'static str),
    /// The proxy answered with a status other than 200.
    #[error("the egress proxy answered {} for {target}", status.code())]
    Refused {
        /// What the proxy answered.
        status: Status,
        /// What was asked for.
        target: Target,
    },
}

/// Reads one HTTP head (through the blank line) without reading past it,
/// so whatever follows stays in the stream for the tunnel.
async fn read_head<S: AsyncRead + Unpin>(stream: &mut S) -> Result<Vec<u8>, TunnelError> {
    let mut head = Vec::with_capacity(256);
    let mut byte = [0u8; 1];
    // Byte by byte: a CONNECT head is tiny, and over-reading would swallow
    // the first bytes of the TLS handshake behind it.
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() >= MAX_HEAD {
            return Err(TunnelError::HeadTooLarge);
        }
        if stream.read(&mut byte).await? == 0 {
            return Err(TunnelError::Io(io::ErrorKind::UnexpectedEof.into()));
        }
        head.push(byte[0]);
    }
    Ok(head)
}

/// Client side: asks the proxy on `stream` for a tunnel to `target` and
/// returns once it answered 200.
pub async fn open<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    target: &Target,
) -> Result<(), TunnelError> {
    let request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    stream.flush().await?;
    let head = read_head(stream).await?;
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    match response.parse(&head) {
        Ok(httparse::Status::Complete(_)) => {}
        _ => return Err(TunnelError::Malformed("the proxy's answer is not HTTP/1.1")),
    }
    match response.code.map(Status::from_code) {
        Some(Some(Status::Established)) => Ok(()),
        Some(Some(status)) => Err(TunnelError::Refused {
            status,
            target: target.clone(),
        }),
        Some(None) => Err(TunnelError::Malformed(
            "the proxy answered a status it never sends",
        )),
        None => Err(TunnelError::Malformed("the proxy's answer has no status")),
    }
}

/// Server side: reads a CONNECT request and returns its target. The caller
/// decides, then answers with [`respond`].
pub async fn accept<S: AsyncRead + Unpin>(stream: &mut S) -> Result<Target, TunnelError> {
    let head = read_head(stream).await?;
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(&head) {
        Ok(httparse::Status::Complete(_)) => {}
        _ => return Err(TunnelError::Malformed("not an HTTP/1.1 request")),
    }
    if request.method != Some("CONNECT") {
        return Err(TunnelError::Malformed("only CONNECT is served"));
    }
    let authority = request.path.unwrap_or_default();
    let (host, port) =
        split_host_port(authority).ok_or(TunnelError::Malformed("the target must be HOST:PORT"))?;
    let port = port
        .parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .ok_or(TunnelError::Malformed("the target port must be 1 to 65535"))?;
    if host.is_empty() || host.len() > 253 {
        return Err(TunnelError::Malformed(
            "the target host is empty or too long",
        ));
    }
    Ok(Target {
        host: host.to_string(),
        port,
    })
}

/// Server side: answers a CONNECT request with `status`
/// ([`Status::Established`] opens the tunnel; the others close it).
pub async fn respond<S: AsyncWrite + Unpin>(stream: &mut S, status: Status) -> io::Result<()> {
    let close = if status == Status::Established {
        ""
    } else {
        "Content-Length: 0\r\nConnection: close\r\n"
    };
    let head = format!(
        "HTTP/1.1 {} {}\r\n{close}\r\n",
        status.code(),
        status.reason()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(host: &str, port: u16) -> Target {
        Target {
            host: host.into(),
            port,
        }
    }

    #[tokio::test]
    async fn open_and_accept_agree_and_leave_the_tunnel_bytes() {
        let (mut client, mut server) = tokio::io::duplex(1024);
        let t = target("api.example.com", 443);
        let proxy = tokio::spawn(async move {
            let got = accept(&mut server).await.unwrap();
            respond(&mut server, Status::Established).await.unwrap();
            let mut rest = [0u8; 5];
            server.read_exact(&mut rest).await.unwrap();
            (got, rest)
        });
        open(&mut client, &t).await.unwrap();
        client.write_all(b"\x16\x03\x01hi").await.unwrap();
        let (got, rest) = proxy.await.unwrap();
        assert_eq!(got, t);
        assert_eq!(&rest, b"\x16\x03\x01hi");
    }

    #[tokio::test]
    async fn ipv6_targets_round_trip() {
        let (mut client, mut server) = tokio::io::duplex(1024);
        let t = target("::1", 8443);
        assert_eq!(t.to_string(), "[::1]:8443");
        let proxy = tokio::spawn(async move { accept(&mut server).await.unwrap() });
        let _ = tokio::time::timeout(std::time::Duration::from_millis(200), open(&mut client, &t))
            .await;
        assert_eq!(proxy.await.unwrap(), t);
    }

    #[test]
    fn targets_parse_with_and_without_a_port() {
        assert_eq!(Target::parse("a.test:444", None), Ok(target("a.test", 444)));
        assert_eq!(
            Target::parse("a.test", Some(444)),
            Ok(target("a.test", 444))
        );
        assert_eq!(Target::parse("[::1]:8", None), Ok(target("::1", 8)));
        for bad in ["a.test", ":1", "a.test:0", "a.test:x", "a/b:1", "::1:4"] {
            assert!(Target::parse(bad, None).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn refusals_carry_the_status() {
        for status in [Status::Forbidden, Status::BadGateway] {
            let (mut client, mut server) = tokio::io::duplex(1024);
            tokio::spawn(async move {
                let _ = accept(&mut server).await;
                respond(&mut server, status).await.unwrap();
            });
            match open(&mut client, &target("x.test", 443)).await {
                Err(TunnelError::Refused { status: s, .. }) => assert_eq!(s, status),
                other => panic!("{other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn malformed_requests_are_named() {
        for (input, why) in [
            (&b"GET / HTTP/1.1\r\n\r\n"[..], "only CONNECT"),
            (b"CONNECT nohost HTTP/1.1\r\n\r\n", "HOST:PORT"),
            (b"CONNECT h:0 HTTP/1.1\r\n\r\n", "1 to 65535"),
            (b"\x16\x03\x01garbage\r\n\r\n", "not an HTTP/1.1"),
        ] {
            let mut s = input;
            let e = accept(&mut s).await.unwrap_err().to_string();
            assert!(e.contains(why), "{e}");
        }
        let long = [b'a'; MAX_HEAD + 10];
        let mut s = &long[..];
        assert!(matches!(
            accept(&mut s).await,
            Err(TunnelError::HeadTooLarge)
        ));
    }
}
