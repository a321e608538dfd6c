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

/// Metric names and labels are constants of this crate (the tests below
/// render every family), so creation does not fail; if it ever did, the
/// family is left out with an error in the log, never a panic.
fn created<T>(name: &str, made: prometheus::Result<T>) -> Option<T> {
    made.map_err(|e| tracing::error!(metric = name, error = %e, "metric left out"))
        .ok()
}

/// A labelled counter family (see [`created`]).
pub fn counter_vec(name: &str, help: &str, labels: &[&str]) -> Option<IntCounterVec> {
    created(name, IntCounterVec::new(Opts::new(name, help), labels))
}

/// A labelled histogram family (see [`created`]).
pub fn histogram_vec(
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: &[f64],
) -> Option<HistogramVec> {
    let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
    created(name, HistogramVec::new(opts, labels))
}

/// A histogram without labels (see [`created`]).
pub fn histogram(name: &str, help: &str, buckets: &[f64]) -> Option<prometheus::Histogram> {
    let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
    created(name, prometheus::Histogram::with_opts(opts))
}

/// Counts one event in `family` under `labels` (a wrong label count is
/// ignored rather than a panic).
pub fn inc(family: &Option<IntCounterVec>, labels: &[&str]) {
    if let Some(Ok(counter)) = family
        .as_ref()
        .map(|f| f.get_metric_with_label_values(labels))
    {
        counter.inc();
    }
}

/// Observes `value` in `family` under `labels` (as [`inc`]).
pub fn observe(family: &Option<HistogramVec>, labels: &[&str], value: f64) {
    if let Some(Ok(h)) = family
        .as_ref()
        .map(|f| f.get_metric_with_label_values(labels))
    {
        h.observe(value);
    }
}

/// The families of the instruments that exist.
pub fn collect(instruments: &[Option<&dyn Collector>]) -> Vec<MetricFamily> {
    instruments
        .iter()
        .flatten()
        .flat_map(|c| c.collect())
        .collect()
}

/// HTTP requests by method, route template and status, and their latency.
#[derive(Clone)]
pub struct HttpMetrics {
    requests: Option<IntCounterVec>,
    latency: Option<HistogramVec>,
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
        inc(&self.requests, &[method, route, &status.to_string()]);
        observe(&self.latency, &[method, route], elapsed.as_secs_f64());
    }

    pub fn families(&self) -> Vec<MetricFamily> {
        collect(&[
            self.requests.as_ref().map(|c| c as &dyn Collector),
            self.latency.as_ref().map(|c| c as &dyn Collector),
        ])
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
            if let Ok(counter) = family.get_metric_with_label_values(&[value_label]) {
                counter.inc_by(*value);
            }
        }
        self.families.extend(family.collect());
    }

    /// One gauge family with a value per label value.
    pub fn gauges(&mut self, name: &str, help: &str, label: &str, values: &[(&str, i64)]) {
        let Ok(family) = prometheus::IntGaugeVec::new(Opts::new(name, help), &[label]) else {
            return;
        };
        for (value_label, value) in values {
            if let Ok(gauge) = family.get_metric_with_label_values(&[value_label]) {
                gauge.set(*value);
            }
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
