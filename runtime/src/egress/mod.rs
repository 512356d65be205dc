//! Guests' outbound HTTP: policy, tunnel, TLS and HTTP, all inside the
//! enclave (docs/egress.md).
//!
//! A guest's request is checked against its own `allow` list and the
//! runtime's `--egress-allow` cap here, so a denied request never reaches
//! the host. An allowed one goes out as a `CONNECT host:port` to the host
//! proxy at `--egress`; the TLS session to the origin runs inside the
//! enclave (rustls, Mozilla roots plus `--extra-ca`, SNI and certificate
//! checks), so the host sees only the CONNECT line and ciphertext.
//! HTTP/1.1 or, when the origin offers it by ALPN, HTTP/2.

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use http::Uri;
use http::uri::Scheme;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use nacre_transport::tunnel::{self, Status, Target, TunnelError};
use nacre_transport::{Address, AllowList, AllowRule};

use self::exchange::{connection_task, response_head, timed, to_origin_form};
use self::io::Lenient;

mod body;
mod exchange;
mod io;
mod once;
mod pool;
mod raw;

pub(crate) use self::body::linger;
#[cfg(test)]
pub(crate) use self::body::tests::guest_body;
pub use self::once::{OnceError, Outbound};
pub use self::pool::Pooled;
pub use self::raw::TunnelRefused;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody};

/// Tunnel, TLS and HTTP handshakes together, unless the guest sets its own
/// `connect-timeout`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Until the response head, unless the guest sets `first-byte-timeout`.
const FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(30);
/// Between body frames, unless the guest sets `between-bytes-timeout`.
const BETWEEN_BYTES_TIMEOUT: Duration = Duration::from_secs(30);

/// What `send` gives wasmtime-wasi-http: the response, and the connection
/// task it drives for as long as the guest holds the response.
pub type Sent = (
    http::Response<WasiBody>,
    Box<dyn Future<Output = Result<(), Error>> + Send>,
);

/// The process-wide egress settings.
pub struct Egress {
    proxy: Option<Address>,
    cap: Option<AllowList>,
    tls: Arc<rustls::ClientConfig>,
}

impl Egress {
    /// A client for the runtime's own HTTPS requests (the ACME client),
    /// trusting what guests' requests trust; None without `--egress`.
    pub fn outbound(&self) -> Option<Outbound> {
        let proxy = self.proxy.clone()?;
        Some(Outbound::new(proxy, (*self.tls).clone()))
    }
}

/// Why the egress settings could not be built.
#[derive(Debug, thiserror::Error)]
pub enum EgressError {
    /// `--extra-ca` is unreadable or holds no certificate rustls accepts.
    #[error("--extra-ca {path}: {why}")]
    ExtraCa {
        /// The file given.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// rustls refused the client configuration.
    #[error("cannot configure outbound TLS: {0}")]
    Tls(String),
}

/// Where an allowed request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Destination {
    host: String,
    port: u16,
    tls: bool,
}

impl Egress {
    /// `proxy` is `--egress` (None: no outbound network), `cap` is
    /// `--egress-allow` (None: no cap), `extra_ca` is `--extra-ca`.
    pub fn new(
        proxy: Option<Address>,
        cap: Option<AllowList>,
        extra_ca: Option<&Path>,
    ) -> Result<Egress, EgressError> {
        let mut roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        if let Some(path) = extra_ca {
            let err = |why: String| EgressError::ExtraCa {
                path: path.to_path_buf(),
                why,
            };
            let certs = nacre_transport::pem::certificates(path).map_err(|e| err(e.why))?;
            for cert in certs {
                roots
                    .add(cert)
                    .map_err(|e| err(format!("not a usable CA certificate: {e}")))?;
            }
        }
        let mut tls = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| EgressError::Tls(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Egress {
            proxy,
            cap,
            tls: Arc::new(tls),
        })
    }

    /// The policy decision, made before any byte leaves the enclave.
    fn check(&self, allow: &[AllowRule], uri: &Uri) -> Result<Destination, &'static str> {
        let tls = match uri.scheme() {
            Some(s) if *s == Scheme::HTTPS => true,
            Some(s) if *s == Scheme::HTTP => false,
            _ => return Err("only http and https URLs are served"),
        };
        let host = uri.host().ok_or("the URL has no host")?;
        // `[::1]` in a URL is `::1` in an allow rule and a CONNECT target.
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        if !AllowRule::any_matches(allow, host, port, tls) {
            return Err("not in the guest's allow list");
        }
        if self
            .cap
            .as_ref()
            .is_some_and(|c| !c.allows(host, port, tls))
        {
            return Err("not in the runtime's --egress-allow list");
        }
        if self.proxy.is_none() {
            return Err("this runtime has no --egress proxy");
        }
        Ok(Destination {
            host: host.to_string(),
            port,
            tls,
        })
    }

    /// Sends one guest request, or denies it. A request that fails before
    /// it is handed to the origin leaves its body to [`body::linger`], so
    /// the guest learns why from the response, never from its own write.
    pub async fn send(
        self: Arc<Self>,
        guest: &str,
        allow: &[AllowRule],
        mut request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
    ) -> Result<Sent, Error> {
        let options = options.unwrap_or_default();
        let (dest, sender, mut conn) =
            match self.prepare(guest, allow, &mut request, &options).await {
                Ok(ready) => ready,
                Err(e) => {
                    body::linger(request.into_body());
                    return Err(e);
                }
            };
        let first_byte = options.first_byte_timeout.unwrap_or(FIRST_BYTE_TIMEOUT);
        let between = options
            .between_bytes_timeout
            .unwrap_or(BETWEEN_BYTES_TIMEOUT)
            .max(Duration::from_millis(1));
        let (response, conn_done) = response_head(sender, request, &mut conn, first_byte).await?;
        tracing::debug!(%guest, host = %dest.host, port = dest.port, status = %response.status(), "outbound response");
        Ok((timed(response, between), connection_task(conn, conn_done)))
    }

    /// Policy, tunnel, TLS and the HTTP handshake; the request is made
    /// ready for the connection it will go out on.
    async fn prepare(
        &self,
        guest: &str,
        allow: &[AllowRule],
        request: &mut http::Request<WasiBody>,
        options: &RequestOptions,
    ) -> Result<(Destination, Sender, Pin<Box<Conn>>), Error> {
        let dest = self.admit(guest, allow, request.uri())?;
        let connect_timeout = options.connect_timeout.unwrap_or(CONNECT_TIMEOUT);
        let (sender, conn) = self.open(guest, &dest, connect_timeout).await?;
        set_authority(&sender, request)?;
        if matches!(sender, Sender::Http1(_)) {
            // HTTP/1.1 wants origin-form; h2 takes scheme and authority
            // from the full URI.
            to_origin_form(request)?;
        }
        Ok((dest, sender, Box::into_pin(conn)))
    }

    /// The policy decision ([`Egress::check`]); a denial is logged, with
    /// only the [`loggable`] part of the URL.
    fn admit(&self, guest: &str, allow: &[AllowRule], uri: &Uri) -> Result<Destination, Error> {
        match self.check(allow, uri) {
            Ok(d) => Ok(d),
            Err(why) => {
                tracing::info!(%guest, url = %loggable(uri), why, "outbound request denied");
                Err(Error::HttpRequestDenied)
            }
        }
    }

    /// [`Egress::connect`] within `timeout`; a failure other than the
    /// timeout is logged.
    async fn open(
        &self,
        guest: &str,
        dest: &Destination,
        timeout: Duration,
    ) -> Result<(Sender, Box<Conn>), Error> {
        tokio::time::timeout(timeout, self.connect(dest))
            .await
            .map_err(|_| Error::ConnectionTimeout)?
            .inspect_err(|e| {
                tracing::info!(%guest, target = %format!("{}:{}", dest.host, dest.port), error = %e, "outbound connection failed");
            })
    }

    /// CONNECT through the host proxy, then TLS (for https), then the HTTP
    /// handshake.
    async fn connect(&self, dest: &Destination) -> Result<(Sender, Box<Conn>), Error> {
        let proxy = self.proxy.as_ref().ok_or(Error::HttpRequestDenied)?;
        let mut stream = nacre_transport::connect(proxy)
            .await
            .map_err(|_| Error::ConnectionRefused)?;
        let target = Target {
            host: dest.host.clone(),
            port: dest.port,
        };
        tunnel::open(&mut stream, &target)
            .await
            .map_err(|e| match e {
                TunnelError::Refused { status, .. } => match status {
                    Status::Forbidden => Error::HttpRequestDenied,
                    Status::BadGateway => Error::DestinationUnavailable,
                    Status::GatewayTimeout => Error::ConnectionTimeout,
                    Status::Unavailable => Error::ConnectionLimitReached,
                    Status::BadRequest => Error::HttpRequestUriInvalid,
                    Status::Established => Error::ConnectionTerminated,
                },
                _ => Error::ConnectionTerminated,
            })?;
        if !dest.tls {
            return http1(stream).await;
        }
        let name = match dest.host.parse::<std::net::IpAddr>() {
            Ok(ip) => ServerName::IpAddress(ip.into()),
            Err(_) => {
                ServerName::try_from(dest.host.clone()).map_err(|_| Error::HttpRequestUriInvalid)?
            }
        };
        let tls = tokio_rustls::TlsConnector::from(self.tls.clone())
            .connect(name, stream)
            .await
            .map_err(tls_error)?;
        let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
        let tls = Lenient(tls);
        if h2 {
            let (sender, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                    .await
                    .map_err(Error::from)?;
            return Ok((Sender::Http2(sender), Box::new(conn)));
        }
        http1(tls).await
    }
}

/// What of a guest's URL may appear in the log, which the host can read:
/// scheme, host, port and path. Never the query string or user info, where
/// tokens and passwords travel.
fn loggable(uri: &Uri) -> String {
    let scheme = uri.scheme_str().unwrap_or("?");
    let host = uri.host().unwrap_or("");
    let port = uri.port_u16().map(|p| format!(":{p}")).unwrap_or_default();
    format!("{scheme}://{host}{port}{}", uri.path())
}

/// The request names exactly the authority the policy allowed, once:
/// `Host` over HTTP/1.1, only `:authority` over HTTP/2, where a `host`
/// header beside it makes servers such as nginx answer 400 ("client sent
/// duplicate host header").
fn set_authority(sender: &Sender, request: &mut http::Request<WasiBody>) -> Result<(), Error> {
    match sender {
        Sender::Http2(_) => {
            request.headers_mut().remove(http::header::HOST);
        }
        Sender::Http1(_) => {
            let authority = request
                .uri()
                .authority()
                .ok_or(Error::HttpRequestUriInvalid)?;
            let host = http::HeaderValue::from_str(authority.as_str())
                .map_err(|_| Error::HttpRequestUriInvalid)?;
            request.headers_mut().insert(http::header::HOST, host);
        }
    }
    Ok(())
}

type Conn = dyn Future<Output = Result<(), hyper::Error>> + Send;

async fn http1<S>(io: S) -> Result<(Sender, Box<Conn>), Error>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(Error::from)?;
    Ok((Sender::Http1(sender), Box::new(conn)))
}

/// rustls reports through `io::Error`; the guest gets the matching
/// wasi:http error code.
fn tls_error(e: std::io::Error) -> Error {
    match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(rustls::Error::InvalidCertificate(_)) => Error::TlsCertificateError,
        Some(rustls::Error::AlertReceived(alert)) => Error::TlsAlertReceived {
            alert_id: Some(u8::from(*alert)),
            alert_message: Some(format!("{alert:?}")),
        },
        Some(_) => Error::TlsProtocolError,
        None => Error::ConnectionTerminated,
    }
}

enum Sender {
    Http1(hyper::client::conn::http1::SendRequest<WasiBody>),
    Http2(hyper::client::conn::http2::SendRequest<WasiBody>),
}

impl Sender {
    async fn send(
        self,
        request: http::Request<WasiBody>,
    ) -> Result<http::Response<Incoming>, hyper::Error> {
        match self {
            Sender::Http1(mut s) => s.send_request(request).await,
            Sender::Http2(mut s) => s.send_request(request).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn egress(cap: Option<&[&str]>) -> Egress {
        Egress::new(
            Some("unix:/nonexistent/egress.sock".parse().unwrap()),
            cap.map(|c| AllowList(c.iter().map(|r| r.parse().unwrap()).collect())),
            None,
        )
        .unwrap()
    }

    fn rules(r: &[&str]) -> Vec<AllowRule> {
        r.iter().map(|r| r.parse().unwrap()).collect()
    }

    #[test]
    fn the_guest_list_the_cap_and_the_scheme_decide() {
        let e = egress(None);
        let allow = rules(&[
            "api.example.com:443",
            "http://plain.test:8080",
            "[::1]:8443",
        ]);
        let uri = |s: &str| s.parse::<Uri>().unwrap();
        assert_eq!(
            e.check(&allow, &uri("https://api.example.com/x")),
            Ok(Destination {
                host: "api.example.com".into(),
                port: 443,
                tls: true
            })
        );
        assert!(
            e.check(&allow, &uri("http://api.example.com:443/"))
                .is_err()
        );
        assert!(e.check(&allow, &uri("http://plain.test:8080/")).is_ok());
        assert!(e.check(&allow, &uri("https://other.example.com/")).is_err());
        assert_eq!(
            e.check(&allow, &uri("https://[::1]:8443/")).map(|d| d.host),
            Ok("::1".to_string())
        );
        assert!(e.check(&[], &uri("https://api.example.com/")).is_err());
        let capped = egress(Some(&["plain.test:8080"]));
        assert_eq!(
            capped.check(&allow, &uri("https://api.example.com/")),
            Err("not in the runtime's --egress-allow list")
        );
        assert_eq!(
            Egress::new(None, None, None)
                .unwrap()
                .check(&allow, &uri("https://api.example.com/")),
            Err("this runtime has no --egress proxy")
        );
    }

    #[tokio::test]
    async fn a_refused_request_s_body_stays_open_for_the_guest() {
        let e = Arc::new(egress(None));
        for url in ["https://not-allowed.example/", "ftp://x.example/"] {
            let (mut tx, body) = guest_body();
            let request = http::Request::post(url).body(body).unwrap();
            let refused = e.clone().send("g", &[], request, None).await;
            assert!(matches!(refused, Err(Error::HttpRequestDenied)), "{url}");
            // The guest may still be writing: its stream must not fail
            // before it reads why the request was refused.
            futures::SinkExt::send(&mut tx, Ok(http_body::Frame::data("late".into())))
                .await
                .unwrap_or_else(|_| panic!("{url}: the body was dropped with the refusal"));
        }
    }

    #[test]
    fn logged_urls_carry_no_query_or_user_info() {
        let uri: Uri = "https://user:pa55@api.example.com:8443/v1/items?token=s3cret"
            .parse()
            .unwrap();
        assert_eq!(loggable(&uri), "https://api.example.com:8443/v1/items");
        let uri: Uri = "http://[::1]/x?y".parse().unwrap();
        assert_eq!(loggable(&uri), "http://[::1]/x");
    }

    #[test]
    fn extra_ca_errors_name_the_file() {
        let dir = std::env::temp_dir().join(format!("nacre-egress-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "no pem here").unwrap();
        for path in [empty, dir.join("missing.pem")] {
            let e = Egress::new(None, None, Some(&path))
                .err()
                .unwrap()
                .to_string();
            assert!(e.contains(&path.display().to_string()), "{e}");
        }
    }
}
