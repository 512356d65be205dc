//! How requests reach other enclaves' sync listeners: the [`PeerLink`]
//! port, and the one way the node uses it (the deadline each request
//! gets, the headers it carries).
//!
//! The link is the host's: in an enclave every request leaves through the
//! host proxy ([`super::client::PeerClient`]), which may drop, delay,
//! redirect or replay it. Nothing the node trusts depends on the link;
//! tests plug in a link of their own that does all of that in memory.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use nacre_transport::tunnel::Target;

use super::{Node, SyncError};

/// A request with a small body (designation, heartbeat, offer),
/// connection included: a peer that does not answer in this time is as
/// good as gone, and a worker must notice a hung leader quickly.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
/// A delivery (a body over [`SMALL`]) has longer: the receiver checks,
/// opens and applies it (compiling any new component) before it answers.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);
/// Bodies up to this size are small requests.
const SMALL: usize = 64 << 10;
/// A delivery's deadline grows by a second per this many bytes.
const BYTES_PER_SECOND: usize = 1 << 20;

/// What a [`PeerLink`] request resolves to.
pub type LinkFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Response<Bytes>, SyncError>> + Send + 'a>>;

/// A way to another enclave's sync listener.
pub trait PeerLink: Send + Sync {
    /// Sends `req` (an origin-form URI: path and query) to the sync
    /// listener at `to` and returns its answer, all within `timeout`. An
    /// answer of any status is `Ok`; `Err` means none came
    /// ([`SyncError::Peer`]).
    fn request<'a>(
        &'a self,
        to: &'a Target,
        req: Request<Bytes>,
        timeout: Duration,
    ) -> LinkFuture<'a>;
}

/// How long a request with a body of `len` bytes may take.
fn deadline(len: usize) -> Duration {
    if len > SMALL {
        DELIVERY_TIMEOUT + Duration::from_secs((len / BYTES_PER_SECOND) as u64)
    } else {
        REQUEST_TIMEOUT
    }
}

impl Node {
    /// `method path` at the peer `target`; the status and the body.
    pub(super) async fn call(
        &self,
        target: &Target,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, Bytes), SyncError> {
        let body = Bytes::from(body.unwrap_or_default());
        let timeout = deadline(body.len());
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(body)
            .map_err(|e| SyncError::Peer(format!("{target}: {e}")))?;
        let response = self.link.request(target, request, timeout).await?;
        Ok((response.status(), response.into_body()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_requests_get_three_seconds_and_deliveries_grow_with_their_size() {
        assert_eq!(deadline(0), Duration::from_secs(3));
        assert_eq!(deadline(SMALL), Duration::from_secs(3));
        assert_eq!(deadline(SMALL + 1), Duration::from_secs(10));
        assert_eq!(deadline(5 << 20), Duration::from_secs(15));
    }
}
