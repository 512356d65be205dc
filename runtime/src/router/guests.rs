//! Every path outside `/enclave`: the guest with the longest matching
//! route, and what each way a guest request can end answers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body::Body;

use crate::guests::{Outcome, Registry, invoke};
use crate::http::{ResponseBody, error};

/// What guest routing needs: the guest table, and the limits its messages
/// name.
pub struct Guests {
    registry: Arc<Registry>,
    /// `--client-timeout`, named in 408s.
    client_timeout: Duration,
}

impl Guests {
    /// Routing over `registry`.
    pub fn new(registry: Arc<Registry>, client_timeout: Duration) -> Guests {
        Guests {
            registry,
            client_timeout,
        }
    }

    /// Runs `req` on the guest whose route is the longest prefix of its
    /// path.
    pub async fn handle<B>(&self, req: Request<B>) -> Response<ResponseBody>
    where
        B: Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: Into<wasmtime_wasi_http::Error>,
    {
        // wasi:http gives a guest the request's authority: a request that
        // names none (HTTP/1.0 without Host) is the client's mistake.
        if req.uri().authority().is_none() && !req.headers().contains_key(header::HOST) {
            return error(
                StatusCode::BAD_REQUEST,
                "the request names no host: send a Host header",
            );
        }
        let snapshot = self.registry.snapshot();
        let path = req.uri().path();
        let Some((guest, rest)) = snapshot.route(path) else {
            if let Some(name) = snapshot.starting(path) {
                return retry_later(&format!("guest {name} is starting; retry shortly"));
            }
            return error(StatusCode::NOT_FOUND, &format!("no guest serves {path}"));
        };
        let target = match req.uri().query() {
            Some(q) => format!("{rest}?{q}"),
            None => rest.to_string(),
        };
        let guest = guest.clone();
        drop(snapshot);
        let started = Instant::now();
        let stats = guest.stats.clone();
        let response = self.run(guest, req, &target).await;
        stats.answered(response.status().as_u16(), started.elapsed());
        response
    }

    async fn run<B>(
        &self,
        guest: Arc<crate::guests::Guest>,
        req: Request<B>,
        target: &str,
    ) -> Response<ResponseBody>
    where
        B: Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: Into<wasmtime_wasi_http::Error>,
    {
        let name = guest.config.name.clone();
        let limits = self.registry.engine().limits();
        match invoke(self.registry.engine(), guest, req, target).await {
            Outcome::Response(r) => r,
            // Guests' internals stay in the log; clients learn only which
            // guest failed and how.
            Outcome::Failed(_) => error(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("guest {name} failed"),
            ),
            Outcome::TimedOut => error(
                StatusCode::GATEWAY_TIMEOUT,
                &format!(
                    "guest {name} did not answer within {:?}",
                    limits.request_timeout
                ),
            ),
            Outcome::BodyTooLarge => error(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!(
                    "request body is over the {} byte limit (--max-body)",
                    limits.max_body
                ),
            ),
            Outcome::BodyStalled => error(
                StatusCode::REQUEST_TIMEOUT,
                &format!(
                    "the request body stopped arriving for {:?} (--client-timeout)",
                    self.client_timeout
                ),
            ),
            Outcome::Busy(why) => retry_later(&why),
        }
    }
}

/// 503 with `Retry-After: 1`.
fn retry_later(message: &str) -> Response<ResponseBody> {
    let mut r = error(StatusCode::SERVICE_UNAVAILABLE, message);
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    r
}
