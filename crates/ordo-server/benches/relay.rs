//! Events per second relayed from the outbox to Redis Streams, at batch sizes 1, 100 and
//! 1000, on PostgreSQL + Redis. `cargo bench -p ordo-server --bench relay` relays 3,000
//! events per batch size; under `cargo test` (no `--bench`) 200, as a smoke test.

#![allow(clippy::unwrap_used)]

use ordo_server::relay::Relay;
use ordo_store::{Action, Command, Store, StoreConfig};
use sea_orm::ConnectionTrait;
use serde_json::json;
use std::time::Instant;

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let events: usize = if full { 3_000 } else { 200 };
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let db = ordo_testkit::TestDb::postgres().await;
        let spec = ordo_spec::compile(include_str!("../../../specs/order.ordo")).unwrap();
        let mut config = StoreConfig::new(db.url.clone());
        config.pool_size = 8;
        let store = Store::open(config, "order", spec, true).await.unwrap();
        let obj = |v: serde_json::Value| v.as_object().cloned().unwrap();
        // Deposits make one event each.
        for i in 0..events {
            let c = Command {
                tenant: "t1".to_string(),
                idempotency: None,
                trace: None,
                action: Action::Operate {
                    resource: "Wallet".into(),
                    key: json!(format!("w{}", i % 50)),
                    operation: "deposit".into(),
                    params: obj(json!({"amount": 1})),
                },
            };
            store.execute(&c).await.unwrap();
        }
        println!("outbox to Redis Streams, {events} events per run (events/s)");
        println!("{:>10} {:>12}", "batch", "events/s");
        for batch in [1u64, 100, 1000] {
            let prefix = ordo_testkit::redis_prefix();
            let relay = Relay::connect(&ordo_testkit::redis_url(), &prefix).await.unwrap();
            store.connection().execute_unprepared("UPDATE ordo_outbox SET sent_at = NULL").await.unwrap();
            let start = Instant::now();
            let mut sent = 0;
            loop {
                let n = relay.round(&store, batch).await.unwrap();
                if n == 0 {
                    break;
                }
                sent += n;
            }
            assert_eq!(sent, events, "every event relayed");
            println!("{batch:>10} {:>12.0}", sent as f64 / start.elapsed().as_secs_f64());
        }
    });
}
