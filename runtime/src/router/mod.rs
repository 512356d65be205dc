//! Where every request of the public listener goes: `/enclave/...` to the
//! runtime's own endpoints and admin API (with the operator's per-guest
//! metrics, `/enclave/metrics`), everything else to the guest with the
//! longest matching route.
//!
//! Each handler holds only what it reads ([`Endpoints`], [`Admin`],
//! [`Guests`]), never the whole runtime. [`Router::answer`] takes any
//! request body, so tests drive the router in process, without a socket, as
//! axum's tests call `app().oneshot(request)`:
//!
//! ```text
//! let response = router.answer(Request::get("/enclave/manifest").body(Empty::new())?).await;
//! ```
//!
//! (`runtime/tests/router.rs` does exactly that.)

mod admin;
mod endpoints;
mod guests;

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use nacre_api::paths;

pub use admin::Admin;
pub use endpoints::{Endpoints, Stats};
pub use guests::Guests;

/// The per-guest metrics, behind the admin token.
pub const METRICS: &str = "/enclave/metrics";

use crate::http::ResponseBody;
use crate::server::{Handler, RequestBody};

/// The public listener's dispatch.
pub struct Router {
    endpoints: Endpoints,
    admin: Admin,
    guests: Guests,
}

impl Router {
    /// A router over these handlers.
    pub fn new(endpoints: Endpoints, admin: Admin, guests: Guests) -> Router {
        Router {
            endpoints,
            admin,
            guests,
        }
    }

    /// Answers one request.
    pub async fn answer<B>(&self, req: Request<B>) -> Response<ResponseBody>
    where
        B: Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: Into<wasmtime_wasi_http::Error> + Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let path = req.uri().path();
        if path != paths::INDEX && !path.starts_with("/enclave/") {
            return self.guests.handle(req).await;
        }
        let path = path.to_string();
        match path.strip_prefix(paths::GUESTS) {
            Some(rest) if rest.is_empty() || rest.starts_with('/') => {
                admin::handle(&self.admin, req, rest).await
            }
            _ if path == paths::ATTESTATION => self.endpoints.attestation(&req).await,
            _ if path == METRICS => admin::metrics(&self.admin, &req),
            _ => self.endpoints.handle(&req, &path),
        }
    }
}

impl Handler for Router {
    fn handle(
        &self,
        req: Request<RequestBody>,
    ) -> impl Future<Output = Response<ResponseBody>> + Send {
        self.answer(req)
    }
}
