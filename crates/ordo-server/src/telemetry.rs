//! Metrics: OpenTelemetry instruments read by the Prometheus exporter, served as text on
//! `GET /metrics`. Each server (and each test) has its own registry.

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Gauge, Histogram, MeterProvider as _};
use opentelemetry_sdk::metrics::SdkMeterProvider;
use ordo_store::Store;
use std::sync::Arc;

/// Request latency buckets, in seconds (OpenTelemetry's defaults suit milliseconds).
const LATENCY_BUCKETS_S: &[f64] =
    &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

pub struct Metrics {
    registry: prometheus::Registry,
    provider: SdkMeterProvider,
    http: Histogram<f64>,
    transitions: Counter<u64>,
    idempotency: Counter<u64>,
    relay_lag: Gauge<f64>,
    due_timers: Gauge<u64>,
    invariant_violations: Gauge<u64>,
    /// The observable instruments over the stores, kept for as long as the metrics are.
    observed: std::sync::Mutex<Vec<Box<dyn std::any::Any + Send + Sync>>>,
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
    pub fn label(self) -> &'static str {
        match self {
            KeyResult::Fresh => "fresh",
            KeyResult::Replayed => "replayed",
            KeyResult::InFlight => "in_flight",
            KeyResult::Reused => "reused",
            KeyResult::RedisUnavailable => "redis_unavailable",
        }
    }
}

/// What stops telemetry from starting: an exporter that cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("metrics exporter: {0}")]
    Metrics(#[from] opentelemetry_sdk::error::OTelSdkError),
    #[error("OTLP exporter: {0}")]
    Otlp(#[from] opentelemetry_otlp::ExporterBuildError),
}

impl Metrics {
    pub fn new() -> Result<Metrics, TelemetryError> {
        let registry = prometheus::Registry::new();
        let exporter = opentelemetry_prometheus::exporter()
            .with_registry(registry.clone())
            .without_target_info()
            .build()?;
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
            relay_lag: meter
                .f64_gauge("ordo_relay_lag")
                .with_unit("s")
                .with_description("age of the oldest outbox event not yet relayed (0: none waits)")
                .build(),
            due_timers: meter
                .u64_gauge("ordo_timers_due")
                .with_description("timers past their due time, not yet fired")
                .build(),
            invariant_violations: meter
                .u64_gauge("ordo_invariant_violations")
                .with_description(
                    "tenants for which a spec's invariant did not hold at the last periodic check",
                )
                .build(),
            observed: std::sync::Mutex::new(Vec::new()),
            provider,
        })
    }

    /// The gauge of broken invariants, for the periodic check's task.
    pub fn invariant_violations(&self) -> Gauge<u64> {
        self.invariant_violations.clone()
    }

    pub fn http(&self, method: &str, route: &str, status: u16, shadow: bool, seconds: f64) {
        let attrs = [
            KeyValue::new("method", method.to_string()),
            KeyValue::new("route", route.to_string()),
            KeyValue::new("status", i64::from(status)),
            KeyValue::new("shadow", shadow),
        ];
        self.http.record(seconds, &attrs);
    }

    /// `outcome` is `applied` or the rejection's problem code.
    pub fn transition(&self, machine: &str, event: &str, outcome: &str, shadow: bool) {
        let attrs = [
            KeyValue::new("machine", machine.to_string()),
            KeyValue::new("event", event.to_string()),
            KeyValue::new("outcome", outcome.to_string()),
            KeyValue::new("shadow", shadow),
        ];
        self.transitions.add(1, &attrs);
    }

    pub fn idempotency(&self, result: KeyResult, shadow: bool) {
        self.idempotency.add(1, &[KeyValue::new("result", result.label()), KeyValue::new("shadow", shadow)]);
    }

    /// Reports each spec's store (by spec name, and whether it holds shadow traffic): executor retries, transactions begun and
    /// the time spent getting their connections, and the pool's connections.
    pub fn watch_stores(&self, stores: &[(String, Arc<Store>)], shadow: bool) {
        let meter = self.provider.meter("ordo");
        let each = |f: fn(&ordo_store::StoreStats) -> f64| {
            let stores: Vec<(String, Arc<Store>)> = stores.to_vec();
            move |o: &dyn opentelemetry::metrics::AsyncInstrument<f64>| {
                for (name, store) in &stores {
                    o.observe(
                        f(&store.stats()),
                        &[KeyValue::new("spec", name.clone()), KeyValue::new("shadow", shadow)],
                    );
                }
            }
        };
        let counter = |name: &'static str, unit: &'static str, about: &'static str, f| {
            Box::new(
                meter
                    .f64_observable_counter(name)
                    .with_unit(unit)
                    .with_description(about)
                    .with_callback(each(f))
                    .build(),
            ) as Box<dyn std::any::Any + Send + Sync>
        };
        let gauge = |name: &'static str, about: &'static str, f| {
            Box::new(meter.f64_observable_gauge(name).with_description(about).with_callback(each(f)).build())
                as Box<dyn std::any::Any + Send + Sync>
        };
        let instruments = vec![
            counter("ordo_executor_retries", "", "transactions retried after a transient conflict", |s| {
                s.retries as f64
            }),
            counter("ordo_db_begins", "", "transactions begun", |s| s.begins as f64),
            counter(
                "ordo_db_acquire_wait",
                "s",
                "time spent getting a pooled connection and beginning (divide by ordo_db_begins_total for the mean)",
                |s| s.begin_wait_s,
            ),
            gauge("ordo_db_pool_connections", "connections open in the pool", |s| f64::from(s.pool_size)),
            gauge("ordo_db_pool_in_use", "connections of the pool in use", |s| {
                f64::from(s.pool_size.saturating_sub(s.pool_idle))
            }),
            gauge("ordo_db_pool_max", "the pool's bound", |s| f64::from(s.pool_max)),
            counter("ordo_batches", "", "group-commit transactions (batches of commands)", |s| {
                s.batches as f64
            }),
            counter(
                "ordo_batches_fast",
                "",
                "batches of keyed creates that ran on the fast path (one statement per table, no savepoints)",
                |s| s.fast_batches as f64,
            ),
            counter(
                "ordo_batched_commands",
                "",
                "commands run in batches (divide by ordo_batches_total for the mean batch size)",
                |s| s.batched_commands as f64,
            ),
            counter(
                "ordo_batch_splits",
                "",
                "batches that failed whole and ran one command at a time",
                |s| s.batch_splits as f64,
            ),
            counter(
                "ordo_batch_wait",
                "s",
                "time commands waited for their key (divide by ordo_batched_commands_total for the mean)",
                |s| s.batch_wait_s,
            ),
            counter(
                "ordo_batch_shed",
                "",
                "commands not run: their request gave up, or they waited too long for their key",
                |s| s.batch_shed as f64,
            ),
            gauge("ordo_batch_queued", "commands waiting for their key now", |s| s.batch_queued as f64),
        ];
        if let Ok(mut observed) = self.observed.lock() {
            observed.extend(instruments);
        }
    }

    /// Reports the server's circuit breakers (by `breaker`: `database`, `redis`): state, trips,
    /// recoveries and refused calls.
    pub fn watch_breakers(&self, breakers: Arc<crate::breaker::Breakers>) {
        let meter = self.provider.meter("ordo");
        let each = |f: fn(&crate::breaker::BreakerStats) -> f64| {
            let breakers = breakers.clone();
            move |o: &dyn opentelemetry::metrics::AsyncInstrument<f64>| {
                for b in breakers.each() {
                    o.observe(f(&b.stats()), &[KeyValue::new("breaker", b.name())]);
                }
            }
        };
        let counter = |name: &'static str, about: &'static str, f| {
            Box::new(
                meter.f64_observable_counter(name).with_description(about).with_callback(each(f)).build(),
            ) as Box<dyn std::any::Any + Send + Sync>
        };
        let instruments = vec![
            Box::new(
                meter
                    .f64_observable_gauge("ordo_breaker_state")
                    .with_description("circuit breaker state: 0 closed, 1 half-open, 2 open")
                    .with_callback(each(|s| f64::from(s.state as u8)))
                    .build(),
            ) as Box<dyn std::any::Any + Send + Sync>,
            counter("ordo_breaker_trips", "times the breaker opened", |s| s.trips as f64),
            counter("ordo_breaker_recoveries", "times the breaker closed again by itself", |s| {
                s.recoveries as f64
            }),
            counter("ordo_breaker_refused", "calls refused at once by an open breaker", |s| s.refused as f64),
        ];
        if let Ok(mut observed) = self.observed.lock() {
            observed.extend(instruments);
        }
    }

    /// Reads the system tables' backlog (shared by every spec of the database) into the
    /// relay-lag and due-timer gauges.
    pub async fn read_backlog(&self, store: &Store, shadow: bool) {
        match store.backlog(chrono::Utc::now()).await {
            Ok(b) => {
                let attrs = [KeyValue::new("shadow", shadow)];
                self.relay_lag.record(b.oldest_unsent_s, &attrs);
                self.due_timers.record(b.due_timers, &attrs);
            }
            Err(e) => tracing::warn!(error = %e, "reading the outbox and timer backlog failed"),
        }
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

/// Spans of these crates are traced; everything else only logs.
const TRACED_TARGETS: &[&str] = &["ordo_server", "ordo_store", "ordo_idempotency"];

/// The log filter when neither `ORDO_LOG` nor `RUST_LOG` says otherwise. The exporter's own
/// stack is quiet below warnings, or a slow collector floods the log.
pub const LOG_FILTER_DEFAULT: &str = "info,sqlx=warn,sea_orm=warn,opentelemetry=warn,opentelemetry_sdk=warn,reqwest=warn,hyper=warn,hyper_util=warn";

/// How long the exporter waits for the collector per batch.
const OTLP_TIMEOUT_MS: u64 = 5_000;

/// A tracer provider exporting spans by OTLP over HTTP (protobuf) to `endpoint`: the
/// collector's base URL (`/v1/traces` is added unless it is there). Spans leave in batches
/// from the exporter's own thread, so a slow collector never holds a request.
pub fn otlp_tracer(endpoint: &str) -> Result<opentelemetry_sdk::trace::SdkTracerProvider, TelemetryError> {
    use opentelemetry_otlp::WithExportConfig as _;
    let base = endpoint.trim_end_matches('/');
    let url = if base.ends_with("/v1/traces") { base.to_string() } else { format!("{base}/v1/traces") };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(url)
        .with_timeout(std::time::Duration::from_millis(OTLP_TIMEOUT_MS))
        .build()?;
    let resource = opentelemetry_sdk::Resource::builder().with_service_name("ordo-server").build();
    Ok(opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build())
}

/// The subscriber of the process: logs (JSON lines, or human-readable `human`), filtered by
/// `filter`, each line carrying the fields of its request span (request and trace ids);
/// and, given a tracer provider, our spans as OpenTelemetry traces.
pub fn subscriber(
    filter: tracing_subscriber::EnvFilter,
    human: bool,
    tracer: Option<&opentelemetry_sdk::trace::SdkTracerProvider>,
) -> impl tracing::Subscriber + Send + Sync {
    use opentelemetry::trace::TracerProvider as _;
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    let logs = if human {
        tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_filter(filter).boxed()
    } else {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .with_filter(filter)
            .boxed()
    };
    let traces = tracer.map(|p| {
        let targets = tracing_subscriber::filter::Targets::new()
            .with_targets(TRACED_TARGETS.iter().map(|t| (*t, tracing::Level::DEBUG)));
        tracing_opentelemetry::layer().with_tracer(p.tracer("ordo")).with_filter(targets)
    });
    tracing_subscriber::registry().with(logs).with(traces)
}

/// The W3C trace context of one request, kept in the request's extensions: the commands it
/// runs carry it into their outbox events.
#[derive(Debug, Clone)]
pub struct TraceParent(pub String);

/// Joins the request span to the caller's trace (a valid W3C `traceparent` header) and
/// returns the context the request's work carries on: the exported span's when tracing is
/// on; else the caller's trace under a span id of our own, or a new trace.
pub fn join_trace(
    span: &tracing::Span,
    headers: &poem::http::HeaderMap,
) -> opentelemetry::trace::SpanContext {
    use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState};
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    // Most requests send no trace context: nothing to parse then.
    let remote = header("traceparent")
        .map_or_else(SpanContext::empty_context, |parent| remote_context(parent, header("tracestate")));
    if remote.is_valid() {
        // Fails only when no trace layer is installed: the fallback below covers it.
        let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(remote.clone()));
    }
    let ours = span.context().span().span_context().clone();
    if ours.is_valid() {
        return ours;
    }
    let trace_id = if remote.is_valid() { remote.trace_id() } else { TraceId::from(fastrand::u128(1..)) };
    let flags = if remote.is_valid() { remote.trace_flags() } else { TraceFlags::SAMPLED };
    SpanContext::new(trace_id, SpanId::from(fastrand::u64(1..)), flags, false, TraceState::default())
}

/// The span context a W3C `traceparent` (and `tracestate`) names; invalid when it is not one.
pub fn remote_context(traceparent: &str, tracestate: Option<&str>) -> opentelemetry::trace::SpanContext {
    use opentelemetry::propagation::TextMapPropagator as _;
    use opentelemetry::trace::TraceContextExt as _;
    let mut fields = std::collections::HashMap::from([("traceparent".to_string(), traceparent.to_string())]);
    if let Some(state) = tracestate {
        fields.insert("tracestate".to_string(), state.to_string());
    }
    let cx = opentelemetry_sdk::propagation::TraceContextPropagator::new().extract(&fields);
    cx.span().span_context().clone()
}

/// `00-<trace id>-<span id>-<flags>`.
pub fn traceparent(cx: &opentelemetry::trace::SpanContext) -> String {
    format!("00-{}-{}-{:02x}", cx.trace_id(), cx.span_id(), cx.trace_flags().to_u8())
}
