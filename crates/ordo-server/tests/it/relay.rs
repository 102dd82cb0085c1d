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
        let ordo_store::Outcome::Applied { instance } = done.outcome else { panic!() };
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
            let (store, prefix, published) = (store.clone(), prefix.clone(), published.clone());
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
