//! Metrics: OpenTelemetry instruments read by the Prometheus exporter, served as text on
//! `GET /metrics`. Each server (and each test) has its own registry.

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Histogram, MeterProvider as _};
use opentelemetry_sdk::metrics::SdkMeterProvider;

/// Request latency buckets, in seconds (OpenTelemetry's defaults suit milliseconds).
const LATENCY_BUCKETS_S: &[f64] =
    &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

pub struct Metrics {
    registry: prometheus::Registry,
    _provider: SdkMeterProvider,
    http: Histogram<f64>,
    transitions: Counter<u64>,
    idempotency: Counter<u64>,
}

/// How an idempotent request went, as the `result` label of `ordo_idempotency_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyResult {
    Fresh,
    Replayed,
    InFlight,
    Reused,
    RedisUnavailable,
}

impl KeyResult {
    fn label(self) -> &'static str {
        match self {
            KeyResult::Fresh => "fresh",
            KeyResult::Replayed => "replayed",
            KeyResult::InFlight => "in_flight",
            KeyResult::Reused => "reused",
            KeyResult::RedisUnavailable => "redis_unavailable",
        }
    }
}

impl Metrics {
    pub fn new() -> Result<Metrics, String> {
        let registry = prometheus::Registry::new();
        let exporter = opentelemetry_prometheus::exporter()
            .with_registry(registry.clone())
            .without_target_info()
            .build()
            .map_err(|e| e.to_string())?;
        let provider = SdkMeterProvider::builder()
            .with_reader(exporter)
            .with_view(|i: &opentelemetry_sdk::metrics::Instrument| {
                (i.name() == "ordo_http_request_duration")
                    .then(|| {
                        opentelemetry_sdk::metrics::Stream::builder()
                            .with_aggregation(
                                opentelemetry_sdk::metrics::Aggregation::ExplicitBucketHistogram {
                                    boundaries: LATENCY_BUCKETS_S.to_vec(),
                                    record_min_max: true,
                                },
                            )
                            .build()
                            .ok()
                    })
                    .flatten()
            })
            .build();
        let meter = provider.meter("ordo");
        Ok(Metrics {
            registry,
            http: meter
                .f64_histogram("ordo_http_request_duration")
                .with_unit("s")
                .with_description("HTTP request latency by route, method and status")
                .build(),
            transitions: meter
                .u64_counter("ordo_transitions")
                .with_description("commands by machine (or resource), event (or operation) and outcome")
                .build(),
            idempotency: meter
                .u64_counter("ordo_idempotency")
                .with_description(
                    "idempotent requests by result: fresh, replayed, in_flight, reused, redis_unavailable",
                )
                .build(),
            _provider: provider,
        })
    }

    pub fn http(&self, method: &str, route: &str, status: u16, seconds: f64) {
        let attrs = [
            KeyValue::new("method", method.to_string()),
            KeyValue::new("route", route.to_string()),
            KeyValue::new("status", i64::from(status)),
        ];
        self.http.record(seconds, &attrs);
    }

    /// `outcome` is `applied` or the rejection's problem code.
    pub fn transition(&self, machine: &str, event: &str, outcome: &str) {
        let attrs = [
            KeyValue::new("machine", machine.to_string()),
            KeyValue::new("event", event.to_string()),
            KeyValue::new("outcome", outcome.to_string()),
        ];
        self.transitions.add(1, &attrs);
    }

    pub fn idempotency(&self, result: KeyResult) {
        self.idempotency.add(1, &[KeyValue::new("result", result.label())]);
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let encoder = prometheus::TextEncoder::new();
        if let Err(e) = encoder.encode_utf8(&self.registry.gather(), &mut out) {
            tracing::warn!(error = %e, "encoding metrics failed");
        }
        out
    }
}

/// A route template for labels: the segment after a collection is an id or a key, so
/// `/orders/0192.../pay` is `/orders/{id}/pay` and the label set stays small.
pub fn route_of(path: &str) -> String {
    let mut parts: Vec<&str> = path.split('/').collect();
    if parts.len() > 2 && !parts[2].is_empty() && parts[1] != "docs" {
        parts[2] = "{id}";
    }
    parts.join("/")
}
