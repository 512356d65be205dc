//! Prometheus metrics: connections, bytes and refusals, the store's
//! operations, and the `--metrics-listen` endpoint that serves them.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use nacre_control::exposition;
use nacre_transport::Listener;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Which listener a connection came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `--inbound`: client ciphertext to the enclave.
    Inbound,
    /// `--egress-listen`: the enclave's CONNECT tunnels.
    Egress,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Inbound => "inbound",
            Kind::Egress => "egress",
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BytesLabel {
    kind: &'static str,
    direction: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusalLabel {
    kind: &'static str,
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StoreOpLabel {
    op: &'static str,
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabel {
    direction: &'static str,
}

/// Every counter the proxy keeps.
pub struct Metrics {
    registry: Registry,
    connections: Family<KindLabel, Counter>,
    open: Family<KindLabel, Gauge>,
    bytes: Family<BytesLabel, Counter>,
    refusals: Family<RefusalLabel, Counter>,
    store_operations: Family<StoreOpLabel, Counter>,
    store_bytes: Family<DirectionLabel, Counter>,
    store_links: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("nacre_proxy");
        let connections = Family::<KindLabel, Counter>::default();
        let open = Family::<KindLabel, Gauge>::default();
        let bytes = Family::<BytesLabel, Counter>::default();
        let refusals = Family::<RefusalLabel, Counter>::default();
        registry.register("connections", "Connections accepted", connections.clone());
        registry.register("open_connections", "Connections open now", open.clone());
        registry.register(
            "bytes",
            "Bytes relayed, to or from the enclave",
            bytes.clone(),
        );
        registry.register(
            "refusals",
            "Connections refused, by reason",
            refusals.clone(),
        );
        let store_operations = Family::<StoreOpLabel, Counter>::default();
        let store_bytes = Family::<DirectionLabel, Counter>::default();
        let store_links = Gauge::default();
        registry.register(
            "store_operations",
            "Requests on the enclave's store links, by operation and result",
            store_operations.clone(),
        );
        registry.register(
            "store_bytes",
            "Object bytes the enclave stored (written) and read back (read)",
            store_bytes.clone(),
        );
        registry.register("store_links", "Store links open now", store_links.clone());
        Metrics {
            registry,
            connections,
            open,
            bytes,
            refusals,
            store_operations,
            store_bytes,
            store_links,
        }
    }
}

impl Metrics {
    /// Accepted connections of `kind`.
    pub fn connections(&self, kind: Kind) -> Counter {
        self.connections
            .get_or_create(&KindLabel { kind: kind.label() })
            .clone()
    }

    /// Connections of `kind` open now.
    pub fn open(&self, kind: Kind) -> Gauge {
        self.open
            .get_or_create(&KindLabel { kind: kind.label() })
            .clone()
    }

    /// Bytes of `kind` moving in `direction` (`to_enclave`, `from_enclave`).
    pub fn bytes(&self, kind: Kind, direction: &'static str) -> Counter {
        self.bytes
            .get_or_create(&BytesLabel {
                kind: kind.label(),
                direction,
            })
            .clone()
    }

    /// Counts one refusal.
    pub fn refused(&self, kind: Kind, reason: &'static str) {
        self.refusals
            .get_or_create(&RefusalLabel {
                kind: kind.label(),
                reason,
            })
            .inc();
    }

    /// Counts one store request: `op` (`get`, `put`, `put_new` (a
    /// create-only put), `list`, `delete`, `credentials`, `unknown`) and
    /// its `result` (`ok`, `absent` (a get), `exists` (a `put_new` that
    /// found the name taken and wrote nothing), `failed`, `refused`,
    /// `busy`).
    pub fn store_op(&self, op: &'static str, result: &'static str) {
        self.store_operations
            .get_or_create(&StoreOpLabel { op, result })
            .inc();
    }

    /// Counts object bytes `written` to or `read` from the store.
    pub fn store_bytes(&self, direction: &'static str, n: usize) {
        self.store_bytes
            .get_or_create(&DirectionLabel { direction })
            .inc_by(n as u64);
    }

    /// Store links open now.
    pub fn store_links(&self) -> Gauge {
        self.store_links.clone()
    }

    /// The OpenMetrics text of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Scrapers connected at once; more are closed at once.
const MAX_SCRAPERS: usize = 16;

/// Serves `GET /metrics` (any path) over plain HTTP/1.1, to at most
/// [`MAX_SCRAPERS`] connections, each given 10 s to send its request head.
pub async fn serve(listener: Listener, metrics: Arc<Metrics>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_SCRAPERS));
    loop {
        let (stream, _) = listener.accept().await;
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            continue;
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                let accept = req
                    .headers()
                    .get(hyper::header::ACCEPT)
                    .and_then(|a| a.to_str().ok());
                let text = metrics.render();
                // OpenMetrics to scrapers that ask; the classic format to
                // promtool, curl and older scrapers.
                let (content_type, body) = if exposition::wants_openmetrics(accept) {
                    (exposition::OPENMETRICS, text)
                } else {
                    (exposition::CLASSIC, exposition::classic(&text))
                };
                async move {
                    Response::builder()
                        .status(StatusCode::OK)
                        .header("content-type", content_type)
                        .body(Full::new(Bytes::from(body)))
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
