//! The runtime's figures as Prometheus text (OpenMetrics to scrapers that
//! ask for it, the classic format to the rest), encoded with
//! prometheus-client at scrape time from the counters the runtime keeps
//! anyway (atomics: nothing here is on a request's path). Two sets, for
//! two audiences:
//!
//! - [`Metrics`], served by `--metrics-listen` (plain HTTP inside the
//!   enclave, which the host proxy exposes to the parent with an ordinary
//!   `--inbound` rule, so the host can read it) and as JSON in
//!   `/enclave/debug`: process-wide figures only, each something the host
//!   sees anyway (connections, handshakes, the log records it did not get,
//!   sync with peers it relays) or that no single request moves (the guest
//!   table, compiles, the certificate's expiry, the version).
//! - [`GuestFigures`], served to the operator at `GET /enclave/metrics` on
//!   the public listener, over the enclave's TLS and behind the admin
//!   token: everything per guest (requests, answers by class, latency,
//!   traps, timeouts, egress, instances, key-value usage), since scraped
//!   around one connection these would tell who did what.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use http::{Request, Response, StatusCode};
use nacre_control::exposition;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use tokio::sync::watch;

use crate::fleet::{Deployment, Role};
use crate::guests::Registry;
use crate::guests::kv::KeyValue;
use crate::http::ResponseBody;
use crate::persist::WriterStats;
use crate::server::{ConnStats, Handler, RequestBody};
use crate::tls::Identity;

mod guests;

pub use guests::GuestFigures;

/// Process-wide counts kept outside the other modules' own state.
#[derive(Debug, Default)]
pub struct Counts {
    /// Attestation documents made (for clients, guests and peers).
    pub documents: Arc<AtomicU64>,
    /// Log records the control link dropped (the host slow or gone).
    pub log_dropped: Arc<AtomicU64>,
}

/// Where every figure is read from.
pub struct Sources {
    /// The guest table and the per-name counters.
    pub registry: Arc<Registry>,
    /// The public listener's connections.
    pub conns: Arc<ConnStats>,
    /// The certificate served.
    pub identity: Arc<Identity>,
    /// This enclave's role.
    pub roles: watch::Receiver<Role>,
    /// Key-value usage. Not shown here any more: usage is per guest, and
    /// [`GuestFigures`] reads it through the registry.
    pub kv: Arc<dyn KeyValue>,
    /// Sync counters, with `--fqdn-leader`.
    pub sync: Option<Arc<dyn Deployment>>,
    /// The sealed snapshot writer's, with `--kms-key`.
    pub snapshots: Option<Arc<WriterStats>>,
    /// The rest.
    pub counts: Arc<Counts>,
}

/// The figures, for both encodings.
#[derive(Debug)]
pub struct Metrics {
    sources: Sources,
}

impl std::fmt::Debug for Sources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sources")
    }
}

fn load(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

type Enc<'a, 'b> = &'a mut DescriptorEncoder<'b>;

fn counter(e: Enc<'_, '_>, name: &str, help: &str, v: u64) -> std::fmt::Result {
    e.encode_descriptor(name, help, None, MetricType::Counter)?
        .encode_counter::<NoLabelSet, _, u64>(&v, None)
}

fn gauge(e: Enc<'_, '_>, name: &str, help: &str, v: f64) -> std::fmt::Result {
    e.encode_descriptor(name, help, None, MetricType::Gauge)?
        .encode_gauge(&v)
}

impl Metrics {
    /// Figures read from `sources`.
    pub fn new(sources: Sources) -> Arc<Metrics> {
        Arc::new(Metrics { sources })
    }

    /// The OpenMetrics text.
    pub fn render(self: &Arc<Self>) -> String {
        encode(Box::new(Scrape(self.clone())))
    }

    /// Every process-wide figure, in the order scrapers have always seen.
    fn process(&self, e: Enc<'_, '_>) -> std::fmt::Result {
        e.encode_descriptor(
            "nacre_build_info",
            "This runtime's version",
            None,
            MetricType::Gauge,
        )?
        .encode_family(&[("version", env!("CARGO_PKG_VERSION"))])?
        .encode_gauge(&1i64)?;
        self.connections(e)?;
        self.guest_table(e)?;
        self.certificate(e)?;
        self.deployment(e)?;
        self.snapshots(e)
    }

    /// The sealed snapshots (with `--kms-key`).
    fn snapshots(&self, e: Enc<'_, '_>) -> std::fmt::Result {
        let Some(st) = &self.sources.snapshots else {
            return Ok(());
        };
        gauge(
            e,
            "nacre_snapshot_seq",
            "The newest sealed snapshot written or restored",
            load(&st.seq) as f64,
        )?;
        counter(
            e,
            "nacre_snapshots_written",
            "Sealed snapshots written to the host's store",
            load(&st.written),
        )?;
        counter(
            e,
            "nacre_snapshot_failures",
            "Snapshot writes that failed (the store or KMS did not answer)",
            load(&st.failed),
        )?;
        gauge(
            e,
            "nacre_snapshot_lag_seconds",
            "How old the oldest change not yet in the host's store is (0: none)",
            st.lag().as_secs_f64(),
        )
    }

    /// The public listener's connections and the documents made.
    fn connections(&self, e: Enc<'_, '_>) -> std::fmt::Result {
        let s = &self.sources;
        counter(
            e,
            "nacre_connections",
            "Connections accepted",
            load(&s.conns.accepted),
        )?;
        gauge(
            e,
            "nacre_connections_open",
            "Connections open now",
            load(&s.conns.open) as f64,
        )?;
        counter(
            e,
            "nacre_tls_handshake_failures",
            "Connections dropped during the TLS handshake",
            load(&s.conns.failed_handshakes),
        )?;
        counter(
            e,
            "nacre_attestation_documents",
            "Attestation documents made (clients, guests, peers)",
            load(&s.counts.documents),
        )
    }

    /// Compiles, the guest table, and the log records dropped.
    fn guest_table(&self, e: Enc<'_, '_>) -> std::fmt::Result {
        let s = &self.sources;
        let (compiles, seconds) = s.registry.compile_totals();
        counter(e, "nacre_compiles", "Components compiled", compiles)?;
        e.encode_descriptor(
            "nacre_compile_seconds",
            "Time spent compiling components",
            None,
            MetricType::Counter,
        )?
        .encode_counter::<NoLabelSet, _, u64>(&seconds, None)?;
        counter(
            e,
            "nacre_guest_table_changes",
            "Changes to the guest table (deploys, replacements, deletes)",
            s.registry.changes_made(),
        )?;
        gauge(
            e,
            "nacre_guests",
            "Guests deployed now",
            s.registry.snapshot().guests().count() as f64,
        )?;
        counter(
            e,
            "nacre_log_records_dropped",
            "Log records the control link dropped (the host slow or gone)",
            load(&s.counts.log_dropped),
        )
    }

    /// When the certificate served expires.
    fn certificate(&self, e: Enc<'_, '_>) -> std::fmt::Result {
        let expiry = crate::acme::Leaf::parse(&self.sources.identity.leaf(), "")
            .and_then(|l| l.not_after.duration_since(std::time::UNIX_EPOCH).ok());
        match expiry {
            Some(expiry) => gauge(
                e,
                "nacre_tls_certificate_expiry_timestamp_seconds",
                "When the certificate served expires (Unix time)",
                expiry.as_secs() as f64,
            ),
            None => Ok(()),
        }
    }

    /// The role, and what sync did (with `--fqdn-leader`).
    fn deployment(&self, e: Enc<'_, '_>) -> std::fmt::Result {
        let s = &self.sources;
        let role = s.roles.borrow().name();
        {
            let mut m = e.encode_descriptor(
                "nacre_sync_role",
                "This enclave's role in its deployment (1 for the current one)",
                None,
                MetricType::Gauge,
            )?;
            for r in Role::NAMES {
                m.encode_family(&[("role", r)])?
                    .encode_gauge(&i64::from(r == role))?;
            }
        }
        let Some(sync) = &s.sync else { return Ok(()) };
        let st = sync.stats();
        counter(
            e,
            "nacre_sync_heartbeats",
            "Heartbeats sent (worker) or received (leader)",
            load(&st.heartbeats),
        )?;
        counter(
            e,
            "nacre_sync_keys_sent",
            "Key material sent to a peer",
            load(&st.sent),
        )?;
        counter(
            e,
            "nacre_sync_keys_received",
            "Key material received from a peer",
            load(&st.received),
        )
    }

    /// The same figures for `/enclave/debug`, which anyone (the host
    /// included) can read when `--debug` is on: process-wide only, as here.
    pub fn to_json(&self) -> serde_json::Value {
        let s = &self.sources;
        let (compiles, compile_seconds) = s.registry.compile_totals();
        serde_json::json!({
            "attestation_documents": load(&s.counts.documents),
            "compiles": compiles,
            "compile_seconds": compile_seconds,
            "guest_table_changes": s.registry.changes_made(),
            "log_records_dropped": load(&s.counts.log_dropped),
            "sync": s.sync.as_ref().map(|sync| {
                let st = sync.stats();
                serde_json::json!({
                    "heartbeats": load(&st.heartbeats),
                    "keys_sent": load(&st.sent),
                    "keys_received": load(&st.received),
                })
            }),
        })
    }
}

/// One scrape.
#[derive(Debug)]
struct Scrape(Arc<Metrics>);

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        self.0.process(&mut encoder)
    }
}

/// The OpenMetrics text of `collector`.
fn encode(collector: Box<dyn Collector>) -> String {
    let mut registry = prometheus_client::registry::Registry::default();
    registry.register_collector(collector);
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
    out
}

/// `openmetrics` (text from a `render`) as the request asks: OpenMetrics
/// to a scraper that accepts it, the classic text format to the rest.
pub fn respond<B>(req: &Request<B>, openmetrics: String) -> Response<ResponseBody> {
    let accept = req
        .headers()
        .get(http::header::ACCEPT)
        .and_then(|a| a.to_str().ok());
    if exposition::wants_openmetrics(accept) {
        crate::http::with_type(StatusCode::OK, exposition::OPENMETRICS, openmetrics)
    } else {
        crate::http::with_type(
            StatusCode::OK,
            exposition::CLASSIC,
            exposition::classic(&openmetrics),
        )
    }
}

/// The `--metrics-listen` handler: `GET /metrics` (any path), the
/// process-wide figures only.
pub struct MetricsHandler(pub Arc<Metrics>);

impl Handler for MetricsHandler {
    async fn handle(&self, req: Request<RequestBody>) -> Response<ResponseBody> {
        if req.method() != http::Method::GET {
            return crate::http::error(StatusCode::METHOD_NOT_ALLOWED, "GET /metrics only");
        }
        respond(&req, self.0.render())
    }
}
