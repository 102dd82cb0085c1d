//! The trace context without an exporter: the caller's trace still reaches the outbox
//! event. (The span tree at a collector is `tests/traces.rs`, a binary of its own.)

use crate::*;

const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

on_both!(without_an_exporter_the_callers_trace_still_reaches_the_event, |backend| async move {
    let api = stocked(backend).await;
    let send = |key: &'static str, traceparent: &'static str| {
        api.client
            .post("/orders")
            .header("Idempotency-Key", key)
            .header("traceparent", traceparent)
            .content_type("application/json")
            .body(order().to_string())
            .send()
    };
    send("t-1", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        .await
        .assert_status(StatusCode::CREATED);
    // Not a trace context (all-zero trace id): ignored, a new trace starts.
    send("t-2", "00-00000000000000000000000000000000-00f067aa0ba902b7-01")
        .await
        .assert_status(StatusCode::CREATED);
    // On PostgreSQL the feed shows a row once every transaction older than it has ended,
    // anywhere in the cluster (other tests run beside this one): wait for both, boundedly.
    let mut events = Value::Null;
    for _ in 0..100 {
        events = api.get("/events").await.body;
        let n = events["items"]
            .as_array()
            .map_or(0, |a| a.iter().filter(|i| i["event"]["event"] == "place").count());
        if n >= 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let placed: Vec<&Value> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| &i["event"])
        .filter(|e| e["event"] == "place")
        .collect();
    let trace_of = |i: usize| {
        let t = placed[i]["traceparent"].as_str().unwrap().to_string();
        let parts: Vec<String> = t.split('-').map(str::to_string).collect();
        assert_eq!(parts.len(), 4, "{t}");
        parts
    };
    let first = trace_of(0);
    assert_eq!(first[1], CALLER_TRACE);
    assert_ne!(first[2], CALLER_SPAN, "our own span id under the caller's");
    let second = trace_of(1);
    assert_ne!(second[1], "0".repeat(32));
    assert_eq!(second[1].len(), 32);
});
