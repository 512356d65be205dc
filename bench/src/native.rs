//! `nacre-bench-native`, scenario (c)'s server: hello, and under `/echo`
//! the `echo` guest's answer, over hyper and rustls with no guest, and the
//! runtime's TLS configuration. It is the ceiling for Nacre's serving path
//! on this machine.

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

/// What the `echo` guest answers when routed at `/echo`: the request as
/// JSON (method, path below the route, query, headers with the route
/// prefix the runtime adds, body).
async fn echo(req: hyper::Request<hyper::body::Incoming>) -> anyhow::Result<Bytes> {
    use http_body_util::BodyExt;
    let (parts, body) = req.into_parts();
    let mut headers = serde_json::Map::new();
    let prefix = ("x-forwarded-prefix", "/echo".as_bytes());
    let all = parts
        .headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_bytes()));
    for (name, value) in all.chain(std::iter::once(prefix)) {
        let value = String::from_utf8_lossy(value).into_owned();
        match headers.get_mut(name) {
            Some(serde_json::Value::String(prev)) => {
                prev.push_str(", ");
                prev.push_str(&value);
            }
            _ => {
                headers.insert(name.to_string(), serde_json::Value::String(value));
            }
        }
    }
    let bytes = body.collect().await?.to_bytes();
    let below = parts.uri.path().strip_prefix("/echo").unwrap_or_default();
    let reply = serde_json::json!({
        "method": parts.method.as_str(),
        "path": if below.is_empty() { "/" } else { below },
        "query": parts.uri.query(),
        "headers": headers,
        "body": String::from_utf8_lossy(&bytes),
    });
    Ok(Bytes::from(serde_json::to_vec(&reply)?))
}

/// `bytes` as a body of unknown length, as a guest's body is (it is
/// written after the head): HTTP/1.1 sends it chunked, so both servers
/// send the same status, headers and bytes.
fn unsized_body(bytes: Bytes) -> impl hyper::body::Body<Data = Bytes, Error = Infallible> {
    StreamBody::new(futures::stream::iter([Ok(Frame::data(bytes))]))
}

/// One request, as the runtime's `hello` (any path) or `echo` (`/echo`)
/// answers it.
async fn answer(
    req: hyper::Request<hyper::body::Incoming>,
) -> anyhow::Result<hyper::Response<impl hyper::body::Body<Data = Bytes, Error = Infallible>>> {
    if !req.uri().path().starts_with("/echo") {
        return Ok(hyper::Response::new(unsized_body(Bytes::from_static(
            GREETING.as_bytes(),
        ))));
    }
    let mut response = hyper::Response::new(unsized_body(echo(req).await?));
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    Ok(response)
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
                    let svc = service_fn(answer);
                    let _ = builder.serve_connection(TokioIo::new(tls), svc).await;
                });
            }
        })
}
