//! `--metrics-listen`: the runtime's figures as Prometheus text
//! (OpenMetrics to scrapers that ask for it, the classic format to the
//! rest), encoded with prometheus-client at scrape time from the counters
//! the runtime keeps anyway (atomics: nothing here is on a request's path),
//! and the same figures as JSON for `/enclave/debug`.
//!
//! The listener is plain HTTP inside the enclave; the host proxy exposes it
//! to the parent with an ordinary `--inbound` rule. Nothing secret is in
//! it: counts, guest names, the role and the certificate's expiry.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use http::{Request, Response, StatusCode};
use nacre_control::exposition;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use tokio::sync::watch;

use crate::guests::Registry;
use crate::guests::kv::KeyValue;
use crate::guests::stats::GuestStats;
use crate::http::ResponseBody;
use crate::server::{ConnStats, Handler, RequestBody};
use crate::sync::{Role, Sync};
use crate::tls::Identity;

/// Process-wide counts kept outside the other modules' own state.
#[derive(Debug, Default)]
pub struct Counts {
    /// Attestation documents made (for clients, guests and peers).
    pub documents: AtomicU64,
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
    /// Key-value usage.
    pub kv: Arc<dyn KeyValue>,
    /// Sync counters, with `--fqdn-leader`.
    pub sync: Option<Arc<Sync>>,
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
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(Scrape(self.clone())));
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        out
    }

    fn guests(&self, e: Enc<'_, '_>) -> std::fmt::Result {
        let s = &self.sources;
        let stats = s.registry.stats();
        let snapshot = s.registry.snapshot();
        // One counter family per field of the names' stats.
        let per = |e: Enc<'_, '_>, name: &str, help: &str, field: fn(&GuestStats) -> &AtomicU64| {
            let mut m = e.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (guest, st) in &stats {
                m.encode_family(&[("guest", guest.as_str())])?
                    .encode_counter::<NoLabelSet, _, u64>(&load(field(st)), None)?;
            }
            Ok::<_, std::fmt::Error>(())
        };
        per(
            e,
            "nacre_guest_requests",
            "Requests routed to the guest",
            |s| &s.requests,
        )?;
        {
            let mut m = e.encode_descriptor(
                "nacre_guest_responses",
                "Answers by status class",
                None,
                MetricType::Counter,
            )?;
            for (guest, st) in &stats {
                for (i, class) in ["1xx", "2xx", "3xx", "4xx", "5xx"].iter().enumerate() {
                    let v = load(&st.status[i]);
                    m.encode_family(&[("guest", guest.as_str()), ("class", class)])?
                        .encode_counter::<NoLabelSet, _, u64>(&v, None)?;
                }
            }
        }
        {
            let mut m = e.encode_descriptor(
                "nacre_guest_request_duration_seconds",
                "Time from a request's arrival to its response head",
                None,
                MetricType::Histogram,
            )?;
            for (guest, st) in &stats {
                let (sum, count, buckets) = st.latency.snapshot();
                m.encode_family(&[("guest", guest.as_str())])?
                    .encode_histogram::<NoLabelSet>(sum, count, &buckets, None)?;
            }
        }
        per(
            e,
            "nacre_guest_traps",
            "Instances that trapped or returned an error",
            |s| &s.traps,
        )?;
        per(
            e,
            "nacre_guest_timeouts",
            "Requests stopped at --request-timeout",
            |s| &s.timeouts,
        )?;
        per(
            e,
            "nacre_guest_egress_requests",
            "Outbound requests sent",
            |s| &s.egress_requests,
        )?;
        per(
            e,
            "nacre_guest_egress_denied",
            "Outbound requests refused by the guest's allow list or --egress-allow",
            |s| &s.egress_denied,
        )?;
        {
            let mut m = e.encode_descriptor(
                "nacre_guest_instances_in_use",
                "Instances of the guest running now",
                None,
                MetricType::Gauge,
            )?;
            // Names deployed now; a removed name runs nothing.
            for (guest, _) in &stats {
                let v = snapshot.get(guest).map_or(0, |g| g.share.in_use());
                m.encode_family(&[("guest", guest.as_str())])?
                    .encode_gauge(&i64::from(v))?;
            }
        }
        let usage = s.kv.usage();
        for (name, help, pick) in [
            ("nacre_guest_kv_keys", "Key-value keys held", 0),
            ("nacre_guest_kv_bytes", "Key-value bytes held", 1),
        ] {
            let mut m = e.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for (guest, keys, bytes) in &usage {
                let v = if pick == 0 { *keys } else { *bytes };
                m.encode_family(&[("guest", guest.as_str())])?
                    .encode_gauge(&(v as i64))?;
            }
        }
        Ok(())
    }

    fn process(&self, e: Enc<'_, '_>) -> std::fmt::Result {
        let s = &self.sources;
        e.encode_descriptor(
            "nacre_build_info",
            "This runtime's version",
            None,
            MetricType::Gauge,
        )?
        .encode_family(&[("version", env!("CARGO_PKG_VERSION"))])?
        .encode_gauge(&1i64)?;
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
        )?;
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
        )?;
        if let Some(expiry) = crate::acme::Leaf::parse(&s.identity.leaf(), "")
            .and_then(|l| l.not_after.duration_since(std::time::UNIX_EPOCH).ok())
        {
            gauge(
                e,
                "nacre_tls_certificate_expiry_timestamp_seconds",
                "When the certificate served expires (Unix time)",
                expiry.as_secs() as f64,
            )?;
        }
        let role = match &*s.roles.borrow() {
            Role::Alone => "alone",
            Role::Designating => "designating",
            Role::Leader => "leader",
            Role::Worker { .. } => "worker",
        };
        {
            let mut m = e.encode_descriptor(
                "nacre_sync_role",
                "This enclave's role in its deployment (1 for the current one)",
                None,
                MetricType::Gauge,
            )?;
            for r in ["alone", "designating", "leader", "worker"] {
                m.encode_family(&[("role", r)])?
                    .encode_gauge(&i64::from(r == role))?;
            }
        }
        if let Some(sync) = &s.sync {
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
            )?;
        }
        Ok(())
    }

    /// The same figures for `/enclave/debug`.
    pub fn to_json(&self) -> serde_json::Value {
        let s = &self.sources;
        let guests: serde_json::Map<String, serde_json::Value> = s
            .registry
            .stats()
            .into_iter()
            .map(|(name, st)| (name.to_string(), st.to_json()))
            .collect();
        let (compiles, compile_seconds) = s.registry.compile_totals();
        serde_json::json!({
            "guests": guests,
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
        self.0.process(&mut encoder)?;
        self.0.guests(&mut encoder)
    }
}

/// The `--metrics-listen` handler: `GET /metrics` (any path).
pub struct MetricsHandler(pub Arc<Metrics>);

impl Handler for MetricsHandler {
    async fn handle(&self, req: Request<RequestBody>) -> Response<ResponseBody> {
        if req.method() != http::Method::GET {
            return crate::http::error(StatusCode::METHOD_NOT_ALLOWED, "GET /metrics only");
        }
        let accept = req
            .headers()
            .get(http::header::ACCEPT)
            .and_then(|a| a.to_str().ok());
        let text = self.0.render();
        if exposition::wants_openmetrics(accept) {
            crate::http::with_type(StatusCode::OK, exposition::OPENMETRICS, text)
        } else {
            crate::http::with_type(
                StatusCode::OK,
                exposition::CLASSIC,
                exposition::classic(&text),
            )
        }
    }
}
