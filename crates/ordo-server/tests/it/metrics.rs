//! `/metrics` counts what was done.

use crate::*;
use poem::http::StatusCode;
use serde_json::json;

/// The value of the sample whose name and labels contain every one of `parts`.
pub fn sample(text: &str, parts: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| parts.iter().all(|p| l.contains(p)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

on_both!(metrics_count_the_workload, |backend| async move {
    let api = stocked(backend).await;
    let mut ids = Vec::new();
    for i in 0..10 {
        let r = api.post("/orders", &format!("o{i}"), order()).await;
        assert_eq!(r.status, StatusCode::CREATED);
        ids.push(r.body["id"].as_str().unwrap().to_string());
    }
    for i in 0..3 {
        assert_eq!(
            api.post("/orders", &format!("o{i}"), order()).await.header("idempotent-replayed"),
            Some("true")
        );
    }
    for id in &ids[..2] {
        let r = api.post(&format!("/orders/{id}/ship"), &format!("ship-{id}"), json!({"carrier": "x"})).await;
        assert_eq!(r.status, StatusCode::CONFLICT);
    }
    let traced = api.client.get("/healthz").header("X-Request-Id", "req-42").send().await;
    traced.assert_header("x-request-id", "req-42");
    let minted = api.get("/healthz").await;
    assert_eq!(minted.header("x-request-id").map(str::len), Some(36), "a new id when none is sent");
    let text = api.get("/metrics").await.body.as_str().unwrap().to_string();
    let placed = sample(&text, &["ordo_transitions_total{", "event=\"place\"", "outcome=\"applied\""]);
    assert_eq!(placed, 10.0, "{text}");
    let invalid =
        sample(&text, &["ordo_transitions_total{", "event=\"ship\"", "outcome=\"invalid-transition\""]);
    assert_eq!(invalid, 2.0);
    assert_eq!(sample(&text, &["ordo_idempotency_total{", "result=\"replayed\""]), 3.0);
    // 10 orders, 2 seeding operations and 2 ships were fresh.
    assert_eq!(sample(&text, &["ordo_idempotency_total{", "result=\"fresh\""]), 14.0);
    let created =
        sample(&text, &["ordo_http_request_duration_seconds_count{", "route=\"/orders\"", "status=\"201\""]);
    assert_eq!(created, 13.0, "fresh and replayed 201s");
    let conflicts = sample(
        &text,
        &["ordo_http_request_duration_seconds_count{", "route=\"/orders/{id}/ship\"", "status=\"409\""],
    );
    assert_eq!(conflicts, 2.0);
    // The store: every fresh command began a transaction (replays need none); the pool is
    // reported against its bound; nothing conflicted here.
    let spec = "spec=\"order\"";
    assert!(sample(&text, &["ordo_db_begins_total{", spec]) >= 14.0, "{text}");
    assert!(sample(&text, &["ordo_db_acquire_wait_seconds_total{", spec]) > 0.0);
    assert_eq!(sample(&text, &["ordo_db_pool_max{", spec]), f64::from(ordo_store::POOL_SIZE_DEFAULT));
    let open = sample(&text, &["ordo_db_pool_connections{", spec]);
    assert!(open >= 1.0 && open <= f64::from(ordo_store::POOL_SIZE_DEFAULT), "{open}");
    assert!(text.contains("\nordo_executor_retries_total{"), "{text}");
    // No timer is due (the unpaid timeout is 30 minutes away).
    assert!(text.contains("\nordo_timers_due{"), "{text}");
    assert_eq!(sample(&text, &["ordo_timers_due{"]), 0.0);
    if backend == Backend::Sqlite {
        // Without Redis nothing relays: the outbox waits, and its age shows.
        assert!(sample(&text, &["ordo_relay_lag_seconds{"]) > 0.0, "{text}");
    }
});

// The periodic check of the specs' invariants reports, per invariant, how many tenants
// break it: none after real commands, one once a row is changed behind the server's back.
on_both!(broken_invariants_show_in_metrics, |backend| async move {
    let api = stocked_with(backend, |c| c.invariant_interval_ms = 50).await;
    assert_eq!(api.post("/orders", "inv-1", order()).await.status, StatusCode::CREATED);
    let line = |text: &str, invariant: &str| {
        text.lines()
            .find(|l| {
                l.starts_with("ordo_invariant_violations{")
                    && l.contains(&format!("invariant=\"{invariant}\""))
            })
            .map(str::to_string)
    };
    let until = |want: &'static str, invariant: &'static str| {
        let api = &api;
        async move {
            for _ in 0..200 {
                let text = api.get("/metrics").await.body.as_str().unwrap_or_default().to_string();
                if line(&text, invariant).is_some_and(|l| l.ends_with(&format!(" {want}"))) {
                    return text;
                }
                tokio::time::sleep(std::time::Duration::from_millis(25)).await;
            }
            panic!("ordo_invariant_violations for {invariant} never became {want}");
        }
    };
    let text = until("0", "stock_conserved").await;
    assert!(line(&text, "money_conserved").is_some_and(|l| l.ends_with(" 0")), "{text}");
    // Stock made from nothing: the shelf holds five more than was ever restocked.
    let db = sea_orm::Database::connect(&api.db.url).await.unwrap();
    use sea_orm::ConnectionTrait;
    db.execute_unprepared("UPDATE inventories SET available = available + 5").await.unwrap();
    let text = until("1", "stock_conserved").await;
    assert!(line(&text, "money_conserved").is_some_and(|l| l.ends_with(" 0")), "{text}");
    let _ = db.close().await;
});
