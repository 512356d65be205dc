//! Servers the guests reach in tests: an HTTPS origin on loopback with a
//! test CA's certificate, and a TLS relay that records what crosses it.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};

use super::pump;
use crate::TestPki;

/// An HTTPS origin on loopback with a `localhost` certificate from a test
/// CA. It answers every path with [`Origin::BODY`] followed by the path,
/// after waiting `?delay_ms=N` if asked; it records each path it served.
pub struct Origin {
    /// Its port on 127.0.0.1.
    pub port: u16,
    server: HttpsServer,
    seen: Arc<Mutex<Vec<String>>>,
}

impl Origin {
    /// The fixed part of every answer.
    pub const BODY: &'static str = "origin-says-CONFIDENTIAL-7f3a";

    /// Starts an origin; `h2` makes it offer HTTP/2 by ALPN.
    pub async fn start(h2: bool) -> Origin {
        let alpn: &[&str] = if h2 {
            &["h2", "http/1.1"]
        } else {
            &["http/1.1"]
        };
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let server = HttpsServer::start(alpn, move |req| {
            let log = log.clone();
            async move {
                let path = req.uri().path().to_string();
                log.lock()
                    .unwrap()
                    .push(format!("{:?} {path}", req.version()));
                let delay = req
                    .uri()
                    .query()
                    .and_then(|q| q.strip_prefix("delay_ms="))
                    .and_then(|n| n.parse::<u64>().ok())
                    .unwrap_or(0);
                tokio::time::sleep(Duration::from_millis(delay)).await;
                let body = format!("{} {path}", Origin::BODY);
                hyper::Response::new(Full::new(Bytes::from(body)))
            }
        })
        .await;
        Origin {
            port: server.port,
            server,
            seen,
        }
    }

    /// `HTTP/x.y PATH` of every request served so far.
    pub fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }

    /// The test CA's PEM file, for the runtime's `--extra-ca`.
    pub fn ca_file(&self) -> String {
        self.server.pki.ca_file().display().to_string()
    }
}

/// An HTTPS server on loopback with a `localhost` certificate from a test
/// CA of its own, answering every request with a handler; stopped on drop.
pub struct HttpsServer {
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// The CA that signed its certificate.
    pub pki: TestPki,
    task: tokio::task::JoinHandle<()>,
}

impl HttpsServer {
    /// Starts a server offering `alpn` that answers with `handle`.
    pub async fn start<F, Fut>(alpn: &[&str], handle: F) -> HttpsServer
    where
        F: Fn(hyper::Request<hyper::body::Incoming>) -> Fut + Clone + Send + Sync + 'static,
        Fut: std::future::Future<Output = hyper::Response<Full<Bytes>>> + Send + 'static,
    {
        let pki = TestPki::generate();
        let (port, task) = serve_https(pki.server_config(alpn), handle).await;
        HttpsServer { port, pki, task }
    }
}

impl Drop for HttpsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves HTTPS on a loopback port with `config`, answering every request
/// with `handle`; the port, and the task to abort when done.
async fn serve_https<F, Fut>(
    config: rustls::ServerConfig,
    handle: F,
) -> (u16, tokio::task::JoinHandle<()>)
where
    F: Fn(hyper::Request<hyper::body::Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = hyper::Response<Full<Bytes>>> + Send + 'static,
{
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let (acceptor, handle) = (acceptor.clone(), handle.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = service_fn(move |req| {
                    let answer = handle(req);
                    async move { Ok::<_, std::convert::Infallible>(answer.await) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    (port, task)
}

/// A man in the middle: terminates TLS with a certificate of its own
/// (`server`), opens a new TLS connection to `upstream` (trusting `roots`
/// for the name `localhost`) and copies the plaintext between the two,
/// recording what clients send.
pub struct TlsRelay {
    /// Where it listens, on loopback.
    pub addr: SocketAddr,
    from_clients: Arc<Mutex<Vec<u8>>>,
    task: tokio::task::JoinHandle<()>,
}

impl TlsRelay {
    /// Starts the relay. The upstream connection offers no ALPN, so give
    /// `server` only `http/1.1`.
    pub async fn start(
        upstream: SocketAddr,
        roots: rustls::RootCertStore,
        server: rustls::ServerConfig,
    ) -> TlsRelay {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let from_clients = Arc::new(Mutex::new(Vec::new()));
        let rec = from_clients.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (acceptor, connector, rec) = (acceptor.clone(), connector.clone(), rec.clone());
                tokio::spawn(async move {
                    let Ok(down) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let Ok(up) = tokio::net::TcpStream::connect(upstream).await else {
                        return;
                    };
                    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
                    let Ok(up) = connector.connect(name, up).await else {
                        return;
                    };
                    let (dr, dw) = tokio::io::split(down);
                    let (ur, uw) = tokio::io::split(up);
                    tokio::join!(
                        pump(dr, uw, rec, usize::MAX, Arc::default()),
                        pump(ur, dw, Arc::default(), usize::MAX, Arc::default())
                    );
                });
            }
        });
        TlsRelay {
            addr,
            from_clients,
            task,
        }
    }

    /// Every byte clients sent through the relay, in plaintext.
    pub fn from_clients(&self) -> Vec<u8> {
        self.from_clients.lock().unwrap().clone()
    }
}

impl Drop for TlsRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}
