//! `GET /metrics` in the Prometheus text format, with the `prometheus`
//! crate's types and encoder (SPEC section 8).
//!
//! Instruments on hot paths are owned where they are measured: the HTTP
//! ones here (fed by the request middleware), the Redis command ones by
//! the Redis store, the merge durations by the recordings. Everything else
//! (storage mode, fallback transitions and replays, rooms, connections,
//! chunks) is read from the components' own counters at scrape time, so
//! nothing is counted twice. Labels are low-cardinality: route templates,
//! never paths, room or record ids.

use std::time::Duration;

use prometheus::core::Collector;
use prometheus::proto::MetricFamily;
use prometheus::{HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts};

/// Latency buckets (seconds) for requests and Redis commands.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// A labelled counter family; names and labels are constants of this
/// crate, checked by the tests below, so creation cannot fail at run time.
pub fn counter_vec(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help), labels).expect("metric names are valid constants")
}

/// A labelled histogram family (see [`counter_vec`]).
pub fn histogram_vec(name: &str, help: &str, labels: &[&str], buckets: &[f64]) -> HistogramVec {
    HistogramVec::new(
        HistogramOpts::new(name, help).buckets(buckets.to_vec()),
        labels,
    )
    .expect("metric names are valid constants")
}

/// HTTP requests by method, route template and status, and their latency.
#[derive(Clone)]
pub struct HttpMetrics {
    requests: IntCounterVec,
    latency: HistogramVec,
}

impl Default for HttpMetrics {
    fn default() -> Self {
        Self {
            requests: counter_vec(
                "rtc_http_requests_total",
                "HTTP requests answered, by method, route template and status.",
                &["method", "route", "status"],
            ),
            latency: histogram_vec(
                "rtc_http_request_duration_seconds",
                "HTTP request latency, by method and route template.",
                &["method", "route"],
                LATENCY_BUCKETS,
            ),
        }
    }
}

impl HttpMetrics {
    pub fn observe(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        let status = status.to_string();
        self.requests
            .with_label_values(&[method, route, &status])
            .inc();
        self.latency
            .with_label_values(&[method, route])
            .observe(elapsed.as_secs_f64());
    }

    pub fn families(&self) -> Vec<MetricFamily> {
        let mut families = self.requests.collect();
        families.extend(self.latency.collect());
        families
    }
}

/// Families built at scrape time from the components' counters.
#[derive(Default)]
pub struct Snapshot {
    families: Vec<MetricFamily>,
}

impl Snapshot {
    pub fn gauge(&mut self, name: &str, help: &str, value: i64) {
        if let Ok(gauge) = IntGauge::new(name, help) {
            gauge.set(value);
            self.families.extend(gauge.collect());
        }
    }

    pub fn counter(&mut self, name: &str, help: &str, value: u64) {
        if let Ok(counter) = IntCounter::new(name, help) {
            counter.inc_by(value);
            self.families.extend(counter.collect());
        }
    }

    /// One counter family with a value per label value.
    pub fn counters(&mut self, name: &str, help: &str, label: &str, values: &[(&str, u64)]) {
        let Ok(family) = IntCounterVec::new(Opts::new(name, help), &[label]) else {
            return;
        };
        for (value_label, value) in values {
            family.with_label_values(&[value_label]).inc_by(*value);
        }
        self.families.extend(family.collect());
    }

    /// One gauge family with a value per label value.
    pub fn gauges(&mut self, name: &str, help: &str, label: &str, values: &[(&str, i64)]) {
        let Ok(family) = prometheus::IntGaugeVec::new(Opts::new(name, help), &[label]) else {
            return;
        };
        for (value_label, value) in values {
            family.with_label_values(&[value_label]).set(*value);
        }
        self.families.extend(family.collect());
    }

    /// Adds families; empty ones (a labelled family nothing was counted
    /// in yet) are left out, as the encoder refuses them.
    pub fn extend(&mut self, families: Vec<MetricFamily>) {
        self.families
            .extend(families.into_iter().filter(|f| !f.get_metric().is_empty()));
    }

    /// The text exposition format.
    pub fn render(self) -> String {
        prometheus::TextEncoder::new()
            .encode_to_string(&self.families)
            .unwrap_or_else(|e| format!("# cannot encode metrics: {e}\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_metrics_render_with_route_templates() {
        let http = HttpMetrics::default();
        http.observe("GET", "/api/sessions/{id}", 200, Duration::from_millis(3));
        let mut snapshot = Snapshot::default();
        snapshot.extend(http.families());
        snapshot.gauge("rtc_rooms", "Rooms.", 2);
        snapshot.counters("rtc_x_total", "X.", "kind", &[("a", 1), ("b", 2)]);
        let text = snapshot.render();
        assert!(text.contains(
            r#"rtc_http_requests_total{method="GET",route="/api/sessions/{id}",status="200"} 1"#
        ));
        assert!(text.contains("rtc_http_request_duration_seconds_bucket"));
        assert!(text.contains("rtc_rooms 2"));
        assert!(text.contains(r#"rtc_x_total{kind="b"} 2"#));
    }
}
