//! Traces: one request gives the expected span tree at a real OTLP/HTTP collector, joins
//! the caller's W3C trace, and carries its trace context into the outbox event.
//!
//! A test binary of its own, with the process's subscriber set once: `tracing` caches which
//! callsites are enabled across all subscribers, and a scoped subscriber set while other
//! tests of the binary hit the same callsites for the first time can miss spans.

#![allow(clippy::unwrap_used)]

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use ordo_server::config::Config;
use ordo_server::startup::Application;
use ordo_server::telemetry;
use ordo_testkit::{Backend, on_both};
use poem::http::StatusCode;
use poem::test::TestClient;
use prost::Message as _;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::{Arc, OnceLock};

#[derive(Debug, Clone)]
struct Span {
    name: String,
    trace_id: String,
    span_id: String,
    parent: String,
    attributes: BTreeMap<String, String>,
    /// (trace id, span id) of each linked span.
    links: Vec<(String, String)>,
}

/// A small OTLP/HTTP collector: `POST /v1/traces` with a protobuf body, on a thread and
/// runtime of its own (the exporter's blocking client must not wait on the test's runtime).
struct Collector {
    endpoint: String,
    spans: Arc<Mutex<Vec<Span>>>,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl Collector {
    fn start() -> Collector {
        let spans = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = spans.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                use poem::listener::{Acceptor as _, Listener as _};
                let acceptor =
                    poem::listener::TcpListener::bind("127.0.0.1:0").into_acceptor().await.unwrap();
                tx.send(*acceptor.local_addr()[0].as_socket_addr().unwrap()).unwrap();
                let receive = poem::endpoint::make(move |req: poem::Request| {
                    let sink = sink.clone();
                    async move {
                        assert_eq!(req.uri().path(), "/v1/traces");
                        let body = req.into_body().into_bytes().await.unwrap();
                        let export = ExportTraceServiceRequest::decode(body).unwrap();
                        let mut spans = sink.lock().unwrap();
                        for s in
                            export.resource_spans.iter().flat_map(|r| &r.scope_spans).flat_map(|s| &s.spans)
                        {
                            let attributes = s
                                .attributes
                                .iter()
                                .map(|kv| {
                                    let v = match kv.value.as_ref().and_then(|v| v.value.clone()) {
                                        Some(AnyValue::StringValue(s)) => s,
                                        Some(AnyValue::IntValue(i)) => i.to_string(),
                                        Some(AnyValue::BoolValue(b)) => b.to_string(),
                                        other => format!("{other:?}"),
                                    };
                                    (kv.key.clone(), v)
                                })
                                .collect();
                            spans.push(Span {
                                name: s.name.clone(),
                                trace_id: hex(&s.trace_id),
                                span_id: hex(&s.span_id),
                                parent: hex(&s.parent_span_id),
                                attributes,
                                links: s.links.iter().map(|l| (hex(&l.trace_id), hex(&l.span_id))).collect(),
                            });
                        }
                        poem::Response::builder()
                            .content_type("application/x-protobuf")
                            .body(Vec::<u8>::new())
                    }
                });
                poem::Server::new_with_acceptor(acceptor).run(receive).await.ok();
            });
        });
        let addr = rx.recv().unwrap();
        Collector { endpoint: format!("http://{addr}"), spans }
    }

    fn spans(&self) -> Vec<Span> {
        self.spans.lock().unwrap().clone()
    }
}

/// Runs `f` on a plain thread: the exporter's blocking client is built and flushed
/// outside any runtime.
fn off_runtime<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(f).join().unwrap()
}

/// The collector and the tracer of the process, set up once as the global subscriber.
fn traced() -> &'static (Collector, opentelemetry_sdk::trace::SdkTracerProvider) {
    static TRACED: OnceLock<(Collector, opentelemetry_sdk::trace::SdkTracerProvider)> = OnceLock::new();
    TRACED.get_or_init(|| {
        let collector = Collector::start();
        let endpoint = collector.endpoint.clone();
        let tracer = off_runtime(move || telemetry::otlp_tracer(&endpoint).unwrap());
        let subscriber =
            telemetry::subscriber(tracing_subscriber::EnvFilter::new("warn"), true, Some(&tracer));
        tracing::subscriber::set_global_default(subscriber).unwrap();
        (collector, tracer)
    })
}

fn order() -> Value {
    json!({"sku": "sku-1", "quantity": 2, "account": "acct", "amount": 100})
}

on_both!(one_request_gives_the_span_tree, |backend| async move {
    let (collector, tracer) = traced();
    // Each variant is its own caller trace.
    let (caller_trace, replay_trace) = match backend {
        Backend::Postgres => ("4bf92f3577b34da6a3ce929d0e0e4736", "5bf92f3577b34da6a3ce929d0e0e4736"),
        Backend::Sqlite => ("6bf92f3577b34da6a3ce929d0e0e4736", "7bf92f3577b34da6a3ce929d0e0e4736"),
    };
    let caller_span = "00f067aa0ba902b7";
    let db = ordo_testkit::TestDb::new(backend).await;
    let mut config =
        Config { database_url: db.url.clone(), listen: "127.0.0.1:0".parse().unwrap(), ..Config::default() };
    let redis = ordo_testkit::redis_prefix();
    if backend == Backend::Postgres {
        config.redis_url = Some(ordo_testkit::redis_url());
        config.redis_prefix = redis.to_string();
        config.relay_interval_ms = 50;
    }
    let client = TestClient::new(Application::build(&config).await.unwrap().into_endpoint());
    client
        .post("/inventory/sku-1/restock")
        .header("Idempotency-Key", "seed")
        .body_json(&json!({"quantity": 10}))
        .send()
        .await
        .assert_status_is_ok();
    let send = |trace: &str| {
        client
            .post("/orders")
            .header("Idempotency-Key", "traced-1")
            .header("traceparent", format!("00-{trace}-{caller_span}-01"))
            .body_json(&order())
            .send()
    };
    send(caller_trace).await.assert_status(StatusCode::CREATED);
    send(replay_trace).await.assert_header("idempotent-replayed", "true");
    let events: Value = client.get("/events").send().await.json().await.value().deserialize();
    let flushed = tracer.clone();
    off_runtime(move || flushed.force_flush().unwrap());
    let spans = collector.spans();

    // The request joined the caller's trace, under the caller's span.
    let request = spans
        .iter()
        .find(|s| s.name == "POST /orders" && s.trace_id == caller_trace)
        .unwrap_or_else(|| panic!("no request span in {spans:#?}"));
    assert_eq!(request.parent, caller_span);
    for (k, v) in [
        ("machine", "Order"),
        ("event", "place"),
        ("outcome", "applied"),
        ("idempotency", "fresh"),
        ("tenant", "default"),
        ("status", "201"),
        ("route", "/orders"),
    ] {
        assert_eq!(request.attributes.get(k).map(String::as_str), Some(v), "{k} of {request:#?}");
    }
    // Its descendants, by name, with their parents' names.
    let by_id: BTreeMap<&str, &Span> = spans.iter().map(|s| (s.span_id.as_str(), s)).collect();
    let mut tree = Vec::new();
    for s in spans.iter().filter(|s| s.trace_id == caller_trace && s.span_id != request.span_id) {
        let parent = by_id.get(s.parent.as_str()).map_or("?", |p| p.name.as_str());
        tree.push(format!("{parent} > {}", s.name));
    }
    tree.sort();
    let mut expected = vec![
        "POST /orders > store.execute",
        "store.execute > db.transaction",
        "db.transaction > db.begin",
        "db.transaction > db.apply",
        "db.apply > db.effects",
        "db.apply > db.journal",
        // Placing arms the unpaid-order timeout.
        "db.apply > db.timers",
        "db.transaction > idempotency.record",
        "db.transaction > db.commit",
    ];
    let with_redis = backend == Backend::Postgres;
    if with_redis {
        // Redis holds the key while the command runs, then keeps its answer.
        expected.extend(["POST /orders > idempotency.claim", "POST /orders > idempotency.settle"]);
    } else {
        // Without Redis the record is looked for first: a retry costs one read.
        expected.push("POST /orders > idempotency.lookup");
    }
    expected.sort();
    assert_eq!(tree, expected);
    // The replay was answered by Redis's kept answer or by the record: no transaction.
    let replayed = spans.iter().find(|s| s.name == "POST /orders" && s.trace_id == replay_trace).unwrap();
    assert_eq!(replayed.attributes.get("idempotency").map(String::as_str), Some("replayed"));
    let replay_work: Vec<&str> = spans
        .iter()
        .filter(|s| s.trace_id == replay_trace && s.name != "POST /orders")
        .map(|s| s.name.as_str())
        .collect();
    if with_redis {
        assert_eq!(replay_work, ["idempotency.claim"], "answered by the claim: no read, no transaction");
    } else {
        assert_eq!(replay_work, ["idempotency.lookup"], "no lease, no transaction");
        let found =
            spans.iter().find(|s| s.trace_id == replay_trace && s.name == "idempotency.lookup").unwrap();
        assert_eq!(found.attributes.get("found").map(String::as_str), Some("true"));
    }
    // The outbox event carries the request's trace context.
    let event = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| &i["event"])
        .find(|e| e["event"] == "place")
        .unwrap();
    assert_eq!(event["traceparent"], format!("00-{caller_trace}-{}-01", request.span_id));
    if backend == Backend::Postgres {
        // The relay's batch that published the event links to the request's span.
        let linked = (caller_trace.to_string(), request.span_id.clone());
        let mut found = false;
        for _ in 0..100 {
            let flushed = tracer.clone();
            off_runtime(move || flushed.force_flush().unwrap());
            found = collector.spans().iter().any(|s| s.name == "relay.batch" && s.links.contains(&linked));
            if found {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert!(found, "no relay.batch span links to {linked:?}");
    }
});
