//! Per guest name counters, for `--metrics-listen` and `/enclave/debug`.
//!
//! One [`GuestStats`] per name, kept by the registry across redeploys and
//! deletes, so counters never go backwards. Requests touch only atomics:
//! no lock and no allocation on the request path.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds (seconds) of the latency histogram's buckets: from a
/// cached hello (tens of µs) to the request timeout.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0, 30.0,
];

/// A histogram of atomics (prometheus-client's takes a lock per
/// observation).
#[derive(Debug, Default)]
pub struct Histogram {
    /// One count per bucket, plus one for +Inf.
    counts: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
}

impl Histogram {
    /// Counts one observation.
    pub fn observe(&self, took: Duration) {
        let secs = took.as_secs_f64();
        let i = LATENCY_BUCKETS
            .iter()
            .position(|upper| secs <= *upper)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum_nanos
            .fetch_add(took.as_nanos() as u64, Ordering::Relaxed);
    }

    /// Sum (seconds), count and cumulative buckets, as Prometheus wants
    /// them (the last bucket is +Inf).
    pub fn snapshot(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let mut total = 0;
        let mut buckets = Vec::with_capacity(self.counts.len());
        for (i, c) in self.counts.iter().enumerate() {
            total += c.load(Ordering::Relaxed);
            let upper = LATENCY_BUCKETS.get(i).copied().unwrap_or(f64::INFINITY);
            buckets.push((upper, total));
        }
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        (sum, total, buckets)
    }
}

/// What one guest name did.
#[derive(Debug, Default)]
pub struct GuestStats {
    /// Requests routed to it.
    pub requests: AtomicU64,
    /// Answers by status class: 1xx to 5xx.
    pub status: [AtomicU64; 5],
    /// Time to the response head.
    pub latency: Histogram,
    /// Instances that trapped or returned an error.
    pub traps: AtomicU64,
    /// Requests stopped at `--request-timeout`.
    pub timeouts: AtomicU64,
    /// Outbound requests it made that were sent.
    pub egress_requests: AtomicU64,
    /// Outbound requests refused by its allow list or `--egress-allow`.
    pub egress_denied: AtomicU64,
    /// A TCP guest's connections handed to its instance.
    pub tcp_connections: AtomicU64,
    /// A TCP guest's connections closed before it saw them: over its
    /// connection limit or backlog, or a failed TLS handshake.
    pub tcp_refused: AtomicU64,
}

impl GuestStats {
    /// Counts an answer with `status`, `took` after the request arrived.
    pub fn answered(&self, status: u16, took: Duration) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.status[class].fetch_add(1, Ordering::Relaxed);
        self.latency.observe(took);
    }

    /// For `/enclave/debug`.
    pub fn to_json(&self) -> serde_json::Value {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let (sum, count, _) = self.latency.snapshot();
        serde_json::json!({
            "requests": get(&self.requests),
            "responses_by_class": {
                "1xx": get(&self.status[0]), "2xx": get(&self.status[1]),
                "3xx": get(&self.status[2]), "4xx": get(&self.status[3]),
                "5xx": get(&self.status[4]),
            },
            "mean_latency_seconds": if count == 0 { 0.0 } else { sum / count as f64 },
            "traps": get(&self.traps),
            "timeouts": get(&self.timeouts),
            "egress_requests": get(&self.egress_requests),
            "egress_denied": get(&self.egress_denied),
            "tcp_connections": get(&self.tcp_connections),
            "tcp_refused": get(&self.tcp_refused),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_histogram_is_cumulative_and_ends_at_infinity() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(50));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(60));
        let (sum, count, buckets) = h.snapshot();
        assert_eq!(count, 3);
        assert!((sum - 60.00305).abs() < 1e-6, "{sum}");
        assert_eq!(buckets[0], (0.0001, 1));
        assert_eq!(buckets[5], (0.005, 2));
        assert_eq!(buckets.last(), Some(&(f64::INFINITY, 3)));
        let s = GuestStats::default();
        s.answered(204, Duration::ZERO);
        s.answered(503, Duration::ZERO);
        s.answered(999, Duration::ZERO);
        assert_eq!(s.status[1].load(Ordering::Relaxed), 1);
        assert_eq!(s.status[4].load(Ordering::Relaxed), 2);
    }
}
