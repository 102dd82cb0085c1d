//! The outbox relay against real PostgreSQL and Redis.

use fred::prelude::*;
use ordo_server::relay::Relay;
use ordo_store::{Action, Command, Store, StoreConfig};
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

type Entry = (String, HashMap<String, String>);

async fn redis() -> Client {
    let client = Client::new(Config::from_url(&ordo_testkit::redis_url()).unwrap(), None, None, None);
    client.init().await.unwrap();
    client
}

async fn store(db: &ordo_testkit::TestDb) -> Arc<Store> {
    let spec = ordo_spec::compile(include_str!("../../../../specs/order.ordo")).unwrap();
    Arc::new(Store::open(StoreConfig::new(db.url.clone()), "order", spec, true).await.unwrap())
}

fn cmd(action: Action) -> Command {
    Command { tenant: "t1".to_string(), idempotency: None, action, trace: None }
}

fn obj(v: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
    v.as_object().cloned().unwrap()
}

/// 10 orders placed and paid: 20 Order events and 1 Inventory event.
async fn workload(store: &Store) {
    let restock = Action::Operate {
        resource: "Inventory".into(),
        key: json!("sku"),
        operation: "restock".into(),
        params: obj(json!({"quantity": 100})),
    };
    store.execute(&cmd(restock)).await.unwrap();
    for _ in 0..10 {
        let place = Action::Create {
            machine: "Order".into(),
            input: obj(json!({"sku": "sku", "quantity": 1, "account": "a", "amount": 0})),
        };
        let done = store.execute(&cmd(place)).await.unwrap();
        let ordo_store::Outcome::Applied { row: instance } = done.outcome else { panic!() };
        let pay = Action::Fire {
            machine: "Order".into(),
            id: instance.id.parse().unwrap(),
            event: "pay".into(),
            params: Default::default(),
            if_match: None,
        };
        store.execute(&cmd(pay)).await.unwrap();
    }
}

/// Every Order event once, in version order per instance.
fn check_orders(entries: &[Entry]) {
    assert_eq!(entries.len(), 20, "every Order event published once");
    let ids: std::collections::BTreeSet<&String> = entries.iter().map(|(_, f)| &f["id"]).collect();
    assert_eq!(ids.len(), 20);
    let mut last: BTreeMap<&String, i64> = BTreeMap::new();
    for (_, f) in entries {
        let v: i64 = f["version"].parse().unwrap();
        let before = last.insert(&f["entity"], v).unwrap_or(0);
        assert!(v > before, "in order per instance");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_relays_publish_every_event_once_in_order() {
    let db = ordo_testkit::TestDb::postgres().await;
    let store = store(&db).await;
    workload(&store).await;
    let prefix = ordo_testkit::redis_prefix();
    // Both relays work until all 21 events are out (or a deadline); a relay that finds
    // nothing may only be waiting for rows the other holds.
    let published = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let relays: Vec<_> = (0..2)
        .map(|_| {
            let (store, prefix, published) = (store.clone(), prefix.to_string(), published.clone());
            tokio::spawn(async move {
                let relay = Relay::connect(&ordo_testkit::redis_url(), &prefix).await.unwrap();
                while published.load(std::sync::atomic::Ordering::SeqCst) < 21
                    && std::time::Instant::now() < deadline
                {
                    let n = relay.round(&store, 3).await.unwrap();
                    published.fetch_add(n, std::sync::atomic::Ordering::SeqCst);
                    if n == 0 {
                        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    }
                }
            })
        })
        .collect();
    for r in relays {
        r.await.unwrap();
    }
    let total = published.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(total, 21, "each event taken by exactly one relay");
    let client = redis().await;
    let orders: Vec<Entry> = client.xrange(format!("{prefix}events:Order"), "-", "+", None).await.unwrap();
    check_orders(&orders);
    let stock: u64 = client.xlen(format!("{prefix}events:Inventory")).await.unwrap();
    assert_eq!(stock, 1);
}

/// A relay that dies between XADD and marking the batch sent: the events go out again, so
/// consumers see them at least once (and dedupe by event id).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn events_not_marked_sent_are_published_again() {
    let db = ordo_testkit::TestDb::postgres().await;
    let store = store(&db).await;
    workload(&store).await;
    let prefix = ordo_testkit::redis_prefix();
    let client = redis().await;
    {
        // XADD the first batch, then "crash": drop the batch without marking it sent.
        let batch = store.claim_outbox(5).await.unwrap();
        for e in &batch.events {
            let _: String = client
                .xadd(
                    format!("{prefix}events:{}", e.machine),
                    false,
                    None::<()>,
                    "*",
                    vec![("id", e.event.payload["id"].as_str().unwrap())],
                )
                .await
                .unwrap();
        }
        assert_eq!(batch.events.len(), 5);
    }
    let relay = Relay::connect(&ordo_testkit::redis_url(), &prefix).await.unwrap();
    let mut published = 0;
    loop {
        let n = relay.round(&store, 100).await.unwrap();
        if n == 0 {
            break;
        }
        published += n;
    }
    assert_eq!(published, 21, "the unmarked events went out again, with all the others");
    let order: u64 = client.xlen(format!("{prefix}events:Order")).await.unwrap();
    let stock: u64 = client.xlen(format!("{prefix}events:Inventory")).await.unwrap();
    assert_eq!(order + stock, 21 + 5, "at least once: the crashed batch twice");
}

/// Trimming removes only entries past the retention that every consumer group has read and
/// acknowledged: never one a group has not read, nor one it read and left pending.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn trimming_keeps_every_entry_a_group_has_not_acknowledged() {
    let db = ordo_testkit::TestDb::postgres().await;
    let store = store(&db).await;
    workload(&store).await;
    let prefix = ordo_testkit::redis_prefix();
    let relay = Relay::connect(&ordo_testkit::redis_url(), &prefix).await.unwrap();
    while relay.round(&store, 100).await.unwrap() > 0 {}
    let client = redis().await;
    let (orders, stock) = (format!("{prefix}events:Order"), format!("{prefix}events:Inventory"));
    let now_ms = || u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap() + 1;
    let len = |key: String| {
        let client = client.clone();
        async move { client.xlen::<u64, _>(key).await.unwrap() }
    };
    assert_eq!(len(orders.clone()).await, 20);

    // `fast` reads 10 entries and acknowledges the first 6; `idle` has read nothing.
    for group in ["fast", "idle"] {
        let () = client.xgroup_create(&orders, group, "0", false).await.unwrap();
    }
    let read: HashMap<String, Vec<Entry>> =
        client.xreadgroup_map("fast", "c1", Some(10), None, false, &orders, ">").await.unwrap();
    let read = &read[&orders];
    assert_eq!(read.len(), 10);
    let acked: Vec<&str> = read[..6].iter().map(|(id, _)| id.as_str()).collect();
    let _: u64 = client.xack(&orders, "fast", acked).await.unwrap();

    assert_eq!(relay.trim(&orders, now_ms(), 0).await.unwrap(), 0, "`idle` has read nothing");
    let () = client.xgroup_destroy(&orders, "idle").await.unwrap();
    assert_eq!(relay.trim(&orders, now_ms(), 3_600_000).await.unwrap(), 0, "all within the retention");
    assert_eq!(relay.trim(&orders, now_ms(), 0).await.unwrap(), 6, "the acknowledged ones go");
    let left: Vec<Entry> = client.xrange(&orders, "-", "+", None).await.unwrap();
    assert_eq!(left.len(), 14);
    assert_eq!(left[0].0, read[6].0, "the first entry left is the first one still pending");
    assert_eq!(relay.trim(&orders, now_ms(), 0).await.unwrap(), 0, "pending entries stay");

    // A stream without groups keeps the retention's worth, and no more.
    assert_eq!(relay.trim(&stock, now_ms(), 3_600_000).await.unwrap(), 0);
    assert_eq!(relay.trim(&stock, now_ms(), 0).await.unwrap(), 1);
    assert_eq!(relay.trim(&format!("{prefix}events:Nothing"), now_ms(), 0).await.unwrap(), 0, "no stream");
}
