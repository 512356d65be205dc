//! HTTPS in front of [`StandIn`]: TLS (HTTP/2 or HTTP/1.1), bodies read
//! up to [`MAX_BODY`], graceful stop.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::standin::{MAX_BODY, StandIn, too_large_response};

/// A client gets this long for its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Open connections get this long to finish after shutdown.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves `standin` over HTTPS on `listener` until `shutdown` completes,
/// then lets open connections finish (for a few seconds at most).
pub async fn serve(
    listener: TcpListener,
    standin: Arc<StandIn>,
    shutdown: impl Future<Output = ()>,
) {
    let acceptor = TlsAcceptor::from(standin.tls_config());
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let (tcp, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // Out of descriptors and the like: pause rather than spin.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let standin = standin.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let service = hyper::service::service_fn(move |req| {
                let standin = standin.clone();
                async move { Ok::<_, Infallible>(answer(&standin, req).await) }
            });
            let conn = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tls), service)
                .into_owned();
            if let Err(e) = watcher.watch(conn).await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::debug!("connections still open after the drain timeout");
    }
}

/// Reads the body (at most [`MAX_BODY`]) and hands the request over.
async fn answer(standin: &StandIn, req: http::Request<Incoming>) -> http::Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let response = match Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => {
            let request = http::Request::from_parts(parts, collected.to_bytes());
            standin.handle(request)
        }
        // Over the limit, or the client went away mid-body.
        Err(_) => too_large_response(),
    };
    response.map(Full::new)
}
