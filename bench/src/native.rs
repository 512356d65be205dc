//! `nacre-bench-native`, scenario (c)'s server: hello over hyper and
//! rustls with no guest, and the runtime's TLS configuration. It is the
//! ceiling for Nacre's serving path on this machine.

#![forbid(unsafe_code)]

use std::convert::Infallible;
use std::path::PathBuf;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::StreamBody;
use hyper::body::Frame;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use nacre_runtime::tls::Identity;
use nacre_transport::{Address, Listener};

/// The same greeting as the `hello` guest's.
const GREETING: &str = "Hello from a Nacre enclave!\n";

/// The greeting as a body of unknown length, as a guest's body is (it is
/// written after the head): HTTP/1.1 sends it chunked, so both servers
/// send the same status, headers and bytes.
fn greeting() -> impl hyper::body::Body<Data = Bytes, Error = Infallible> {
    StreamBody::new(futures::stream::iter([Ok(Frame::data(
        Bytes::from_static(GREETING.as_bytes()),
    ))]))
}

/// Flags of `nacre-bench-native`.
#[derive(clap::Parser)]
struct Args {
    /// tcp://HOST:PORT or unix:PATH.
    #[arg(long)]
    listen: Address,
    /// PEM certificate chain.
    #[arg(long)]
    cert: PathBuf,
    /// PEM private key.
    #[arg(long)]
    key: PathBuf,
}

/// Serves until killed; prints `native-hello listening on ADDR` when ready.
fn main() -> anyhow::Result<()> {
    let args = <Args as clap::Parser>::parse();
    let tls = Identity::from_pem_files(&args.cert, &args.key)?.server_config()?;
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(async move {
            let listener = Listener::bind(&args.listen)
                .await
                .with_context(|| format!("--listen {}", args.listen))?;
            println!("native-hello listening on {}", listener.local_addr()?);
            let builder = auto::Builder::new(TokioExecutor::new());
            loop {
                let (stream, _) = listener.accept().await;
                let acceptor = acceptor.clone();
                let builder = builder.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    let svc = service_fn(|_req| async {
                        Ok::<_, Infallible>(hyper::Response::new(greeting()))
                    });
                    let _ = builder.serve_connection(TokioIo::new(tls), svc).await;
                });
            }
        })
}
