//! The per-guest figures, for the operator only: `GET /enclave/metrics`
//! on the public listener, over the enclave's own TLS and behind the
//! admin token.
//!
//! Each of them moves with single requests: scraped before and after one
//! client's connection, they would tell whoever scrapes which guest that
//! client used, whether it got a 2xx or a 4xx (a failed login), how long
//! it took and how much it stored. The host sees the connection but not
//! what was in it, so these never go to `--metrics-listen`, which the host
//! can reach.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;

use super::{Enc, load};
use crate::guests::stats::GuestStats;
use crate::guests::{GuestName, Registry};

/// One counter of a guest name's stats.
type Field = fn(&GuestStats) -> &AtomicU64;

/// Every guest name's figures (kept across redeploys and deletes, so
/// counters never go back), read from the guest table at scrape time.
pub struct GuestFigures(Arc<Registry>);

impl std::fmt::Debug for GuestFigures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GuestFigures")
    }
}

impl GuestFigures {
    /// The figures of `registry`'s guests.
    pub fn new(registry: Arc<Registry>) -> GuestFigures {
        GuestFigures(registry)
    }

    /// The OpenMetrics text.
    pub fn render(self) -> String {
        super::encode(Box::new(self))
    }

    fn counters(&self, e: Enc<'_, '_>, stats: &[(GuestName, Arc<GuestStats>)]) -> std::fmt::Result {
        // One counter family per field of the names' stats.
        let fields: [(&str, &str, Field); 7] = [
            (
                "nacre_guest_requests",
                "Requests routed to the guest",
                |s| &s.requests,
            ),
            (
                "nacre_guest_traps",
                "Instances that trapped or returned an error",
                |s| &s.traps,
            ),
            (
                "nacre_guest_timeouts",
                "Requests stopped at --request-timeout",
                |s| &s.timeouts,
            ),
            (
                "nacre_guest_egress_requests",
                "Outbound requests sent and TCP connections opened",
                |s| &s.egress_requests,
            ),
            (
                "nacre_guest_egress_denied",
                "Outbound requests and TCP connects refused by the guest's allow list or --egress-allow",
                |s| &s.egress_denied,
            ),
            (
                "nacre_guest_tcp_connections",
                "A TCP guest's connections handed to its instance",
                |s| &s.tcp_connections,
            ),
            (
                "nacre_guest_tcp_refused",
                "A TCP guest's connections closed before it saw them (limits, backlog, TLS handshake)",
                |s| &s.tcp_refused,
            ),
        ];
        for (name, help, field) in fields {
            let mut m = e.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (guest, st) in stats {
                m.encode_family(&[("guest", guest.as_str())])?
                    .encode_counter::<NoLabelSet, _, u64>(&load(field(st)), None)?;
            }
        }
        {
            let mut m = e.encode_descriptor(
                "nacre_guest_responses",
                "Answers by status class",
                None,
                MetricType::Counter,
            )?;
            for (guest, st) in stats {
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
            for (guest, st) in stats {
                let (sum, count, buckets) = st.latency.snapshot();
                m.encode_family(&[("guest", guest.as_str())])?
                    .encode_histogram::<NoLabelSet>(sum, count, &buckets, None)?;
            }
        }
        Ok(())
    }

    fn gauges(&self, e: Enc<'_, '_>, stats: &[(GuestName, Arc<GuestStats>)]) -> std::fmt::Result {
        let snapshot = self.0.snapshot();
        {
            let mut m = e.encode_descriptor(
                "nacre_guest_instances_in_use",
                "Instances of the guest running now",
                None,
                MetricType::Gauge,
            )?;
            // Names deployed now; a removed name runs nothing.
            for (guest, _) in stats {
                let v = snapshot.get(guest).map_or(0, |g| g.share.in_use());
                m.encode_family(&[("guest", guest.as_str())])?
                    .encode_gauge(&i64::from(v))?;
            }
        }
        let usage = self.0.engine().enclave().kv.usage();
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
}

impl Collector for GuestFigures {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let stats = self.0.stats();
        self.counters(&mut encoder, &stats)?;
        self.gauges(&mut encoder, &stats)
    }
}
