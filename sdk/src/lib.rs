//! The Nacre guest SDK: write a confidential HTTP service as a WebAssembly
//! component, with the capabilities of the enclave it runs in.
//!
//! - [`wstd`] (re-exported): the async runtime, HTTP types and the outbound
//!   HTTP client ([`wstd::http::Client`]); outbound requests go through the
//!   runtime's egress, with TLS inside the enclave.
//! - [`serve!`]: export an `async fn(Request<Body>) -> Result<Response<Body>>`
//!   as the component's HTTP handler.
//! - [`router`]: `Router::new().get("/hello/:name", hello)`.
//! - [`kv`]: `wasi:keyvalue`, one private namespace per guest name, kept
//!   across requests and redeploys.
//! - [`attestation`]: attestation documents that name this guest's code.
//! - [`state`]: this guest's application state (one slot per guest name).
//! - `tls` (feature `tls`): TLS inside the guest over `wasi:sockets`, for
//!   TCP guests deployed with `tls=guest` and for outbound TCP.
//!
//! ```rust,ignore
//! use nacre_sdk::router::{Params, Router};
//! use nacre_sdk::wstd::http::{Body, Error, Request, Response};
//!
//! async fn hello(_req: Request<Body>, p: Params) -> Result<Response<Body>, Error> {
//!     Ok(Response::new(format!("hello, {}\n", p.get("name").unwrap_or("you")).into()))
//! }
//!
//! async fn handle(req: Request<Body>) -> Result<Response<Body>, Error> {
//!     Router::new().get("/hello/:name", hello).handle(req).await
//! }
//!
//! nacre_sdk::serve!(handle);
//! ```
//!
//! `sdk/README.md` walks from `cargo new` to a deployed guest.

#![warn(missing_docs)]

pub use wstd;

pub mod attestation;
pub mod kv;
pub mod router;
pub mod state;
#[cfg(feature = "tls")]
pub mod tls;

#[doc(hidden)]
pub mod __private {
    pub use wstd::__internal::wasip2;
    pub use wstd::http::request::try_from_incoming;
    pub use wstd::http::server::Responder;
    pub use wstd::runtime::block_on;
}

mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "nacre:enclave/imports",
        // wasi:keyvalue is a dependency package: generate it here too.
        generate_all,
    });
}

/// Exports `handler` as this component's `wasi:http` incoming handler.
///
/// `handler` is an `async fn(Request<Body>) -> Result<Response<Body>, Error>`
/// using the [`wstd::http`] types. An `Err` becomes a 500 answer; the
/// runtime logs it with the guest's name.
///
/// ```rust,ignore
/// use nacre_sdk::wstd::http::{Body, Error, Request, Response};
///
/// async fn handle(_req: Request<Body>) -> Result<Response<Body>, Error> {
///     Ok(Response::new("hello from an enclave\n".into()))
/// }
///
/// nacre_sdk::serve!(handle);
/// ```
#[macro_export]
macro_rules! serve {
    ($handler:path) => {
        struct __NacreGuest;

        impl $crate::__private::wasip2::exports::http::incoming_handler::Guest for __NacreGuest {
            fn handle(
                request: $crate::__private::wasip2::http::types::IncomingRequest,
                out: $crate::__private::wasip2::http::types::ResponseOutparam,
            ) {
                let responder = $crate::__private::Responder::new(out);
                $crate::__private::block_on(async move {
                    match $crate::__private::try_from_incoming(request) {
                        Ok(request) => match $handler(request).await {
                            Ok(response) => {
                                // The client went away: nothing left to tell it.
                                let _ = responder.respond(response).await;
                            }
                            Err(e) => responder.fail(e),
                        },
                        Err(e) => responder.fail(e),
                    }
                })
            }
        }

        $crate::__private::wasip2::http::proxy::export!(
            __NacreGuest with_types_in $crate::__private::wasip2
        );
    };
}
