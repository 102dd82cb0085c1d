//! The consumer against real PostgreSQL (its own database) and Redis (a fresh prefix),
//! fed by the real relay from a real store.

#![allow(clippy::unwrap_used)]

use fred::prelude::*;
use ordo_consumer::{Consumer, ConsumerConfig, Event, Handler};
use ordo_store::{Action, Command, Store, StoreConfig};
use sea_orm::{ConnectionTrait, DatabaseTransaction, Statement};
use serde_json::json;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

type Entry = (String, std::collections::HashMap<String, String>);
/// XPENDING's summary: count, first id, last id, per-consumer counts.
type PendingSummary = (u64, Option<String>, Option<String>, Vec<(String, String)>);

/// Keeps a read model: the latest state of each order (the example worker's logic).
struct ReadModel {
    calls: AtomicUsize,
    poison: Mutex<Option<String>>,
}

impl Handler for ReadModel {
    fn handle<'a>(
        &'a self,
        txn: &'a DatabaseTransaction,
        e: &'a Event,
    ) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>> {
        Box::pin(async move {
            self.calls.fetch_add(1, Ordering::SeqCst);
            if self.poison.lock().unwrap().as_deref() == Some(e.id()) {
                return Err("poison".to_string());
            }
            let sql = "INSERT INTO order_states (id, state, version) VALUES ($1, $2, $3) \
                       ON CONFLICT (id) DO UPDATE SET state = excluded.state, version = excluded.version \
                       WHERE order_states.version < excluded.version";
            let version: i64 = e.get("version").parse().unwrap_or(0);
            txn.execute_raw(Statement::from_sql_and_values(
                sea_orm::DbBackend::Postgres,
                sql,
                [e.get("entity").into(), e.get("to").into(), version.into()],
            ))
            .await
            .map_err(|err| err.to_string())?;
            Ok(())
        })
    }
}

struct Setup {
    /// The stream's keys go with it.
    prefix: ordo_testkit::RedisPrefix,
    _store_db: ordo_testkit::TestDb,
    _worker_db: ordo_testkit::TestDb,
    worker: sea_orm::DatabaseConnection,
    stream: String,
    orders: usize,
    redis: Client,
}

/// `n` orders placed and paid in a store (by requests with the trace context `trace`),
/// relayed to `<prefix>events:Order`; a worker database with the read model's table.
async fn setup(n: usize, trace: Option<&str>) -> Setup {
    setup_traced(n, trace).await.0
}

/// [`setup`] without a trace, with the store.
async fn setup_with_store(n: usize) -> (Setup, Store) {
    setup_traced(n, None).await
}

async fn setup_traced(n: usize, trace: Option<&str>) -> (Setup, Store) {
    let store_db = ordo_testkit::TestDb::postgres().await;
    let spec = ordo_spec::compile(include_str!("../../../specs/order.ordo")).unwrap();
    let store = Store::open(StoreConfig::new(store_db.url.clone()), "order", spec, true).await.unwrap();
    let trace = trace.map(str::to_string);
    let cmd = |action| Command { tenant: "t1".to_string(), idempotency: None, action, trace: trace.clone() };
    let obj = |v: serde_json::Value| v.as_object().cloned().unwrap();
    store
        .execute(&cmd(Action::Operate {
            resource: "Inventory".into(),
            key: json!("s"),
            operation: "restock".into(),
            params: obj(json!({"quantity": 1000})),
        }))
        .await
        .unwrap();
    for _ in 0..n {
        let done = store
            .execute(&cmd(Action::Create {
                machine: "Order".into(),
                input: obj(json!({"sku": "s", "quantity": 1, "account": "a", "amount": 0})),
            }))
            .await
            .unwrap();
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
    let prefix = ordo_testkit::redis_prefix();
    let relay = ordo_server::relay::Relay::connect(&ordo_testkit::redis_url(), &prefix).await.unwrap();
    while relay.round(&store, 100).await.unwrap() > 0 {}
    let worker_db = ordo_testkit::TestDb::postgres().await;
    let worker = sea_orm::Database::connect(&worker_db.url).await.unwrap();
    ordo_consumer::migrate(&worker).await.unwrap();
    worker
        .execute_unprepared(
            "CREATE TABLE order_states (id TEXT PRIMARY KEY, state TEXT NOT NULL, version BIGINT NOT NULL)",
        )
        .await
        .unwrap();
    let redis = Client::new(Config::from_url(&ordo_testkit::redis_url()).unwrap(), None, None, None);
    redis.init().await.unwrap();
    let setup = Setup {
        _store_db: store_db,
        _worker_db: worker_db,
        worker,
        stream: format!("{prefix}events:Order"),
        orders: n,
        redis,
        prefix,
    };
    (setup, store)
}

async fn count(db: &sea_orm::DatabaseConnection, sql: &str) -> i64 {
    let row = db
        .query_one_raw(Statement::from_string(sea_orm::DbBackend::Postgres, sql.to_string()))
        .await
        .unwrap()
        .unwrap();
    row.try_get_by_index::<i64>(0).unwrap()
}

fn config(s: &Setup, consumer: &str) -> ConsumerConfig {
    let mut c = ConsumerConfig::new(&ordo_testkit::redis_url(), &s.stream, "read-model", consumer);
    c.block_ms = 50;
    c.claim_idle_ms = 100;
    c
}

/// Polls until a poll finds nothing to do (twice in a row, past the reclaim idle time).
async fn drain(consumer: &Consumer, handler: &ReadModel) -> ordo_consumer::Poll {
    let mut total = ordo_consumer::Poll::default();
    let mut quiet = 0;
    for _ in 0..200 {
        let p = consumer.poll(handler).await.unwrap();
        total.applied += p.applied;
        total.duplicates += p.duplicates;
        total.failed += p.failed;
        total.dead_lettered += p.dead_lettered;
        if p == ordo_consumer::Poll::default() {
            quiet += 1;
            if quiet == 3 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(60)).await;
        } else {
            quiet = 0;
        }
    }
    total
}

/// A consumer died after committing two events and before acknowledging them: another
/// reclaims its entries, acknowledges the two without applying them again, and applies the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_crash_after_commit_before_ack_applies_once() {
    let s = setup(10, None).await;
    let handler = ReadModel { calls: AtomicUsize::new(0), poison: Mutex::new(None) };
    let b = Consumer::connect(config(&s, "b"), s.worker.clone()).await.unwrap();
    // Consumer "a" reads three entries, commits two of them (processed rows), then dies.
    let read: std::collections::HashMap<String, Vec<Entry>> = s
        .redis
        .xreadgroup_map("read-model", "a", Some(3), None, false, s.stream.as_str(), ">")
        .await
        .unwrap();
    let taken: Vec<_> = read.into_values().flatten().collect();
    assert_eq!(taken.len(), 3);
    for (_, fields) in taken.iter().take(2) {
        s.worker
            .execute_raw(Statement::from_sql_and_values(
                sea_orm::DbBackend::Postgres,
                "INSERT INTO ordo_processed (consumer, event_id, processed_at) VALUES ($1, $2, now())",
                ["read-model".into(), fields["id"].clone().into()],
            ))
            .await
            .unwrap();
    }
    tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    let total = drain(&b, &handler).await;
    assert_eq!(total.duplicates, 2, "the two committed entries are acknowledged, not applied again");
    assert_eq!(total.applied, 2 * s.orders - 2);
    assert_eq!(handler.calls.load(Ordering::SeqCst), 2 * s.orders - 2);
    let pending: PendingSummary = s.redis.xpending(s.stream.as_str(), "read-model", ()).await.unwrap();
    assert_eq!(pending.0, 0, "nothing left pending");
    assert_eq!(count(&s.worker, "SELECT COUNT(*) FROM ordo_processed").await as usize, 2 * s.orders);

    // The relay published an event twice (it died between XADD and marking it sent): the
    // copy is acknowledged without being applied again.
    let first: Vec<Entry> = s.redis.xrange(s.stream.as_str(), "-", "+", Some(1)).await.unwrap();
    let copy: Vec<(String, String)> = first[0].1.clone().into_iter().collect();
    let _: String = s.redis.xadd(s.stream.as_str(), false, None::<()>, "*", copy).await.unwrap();
    let again = drain(&b, &handler).await;
    assert_eq!((again.applied, again.duplicates), (0, 1));
    assert_eq!(
        handler.calls.load(Ordering::SeqCst),
        2 * s.orders - 2,
        "the handler did not run for the copy"
    );
}

/// An event whose handler always fails goes to the dead-letter stream after the allowed
/// deliveries, and the group moves on to the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_poison_message_goes_to_the_dead_letter_stream() {
    let s = setup(5, None).await;
    let first: Vec<Entry> = s.redis.xrange(s.stream.as_str(), "-", "+", Some(1)).await.unwrap();
    let poison_id = first[0].1["id"].clone();
    let handler = ReadModel { calls: AtomicUsize::new(0), poison: Mutex::new(Some(poison_id.clone())) };
    let mut c = config(&s, "w");
    c.deliveries_max = 3;
    let dead_letter = c.dead_letter.clone();
    let consumer = Consumer::connect(c, s.worker.clone()).await.unwrap();
    let total = drain(&consumer, &handler).await;
    assert_eq!(total.dead_lettered, 1);
    assert_eq!(total.failed, 3, "delivered three times before giving up");
    assert_eq!(total.applied, 2 * s.orders - 1, "the group moved on");
    let dead: Vec<Entry> = s.redis.xrange(dead_letter.as_str(), "-", "+", None).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].1["id"], poison_id);
    assert_eq!(dead[0].1["event"], "place");
    // The poison was the first order's `place`; its `pay` still arrived and applied.
    assert_eq!(
        count(&s.worker, "SELECT COUNT(*) FROM order_states WHERE state = 'paid'").await as usize,
        s.orders
    );
}

/// Records the trace each event was handled in.
struct Traced(Mutex<Vec<String>>);

impl Handler for Traced {
    fn handle<'a>(
        &'a self,
        _txn: &'a DatabaseTransaction,
        _e: &'a Event,
    ) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>> {
        Box::pin(async move {
            use opentelemetry::trace::TraceContextExt as _;
            use tracing_opentelemetry::OpenTelemetrySpanExt as _;
            let cx = tracing::Span::current().context();
            self.0.lock().unwrap().push(cx.span().span_context().trace_id().to_string());
            Ok(())
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_handler_runs_in_the_trace_of_the_request() {
    use opentelemetry::trace::TracerProvider as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    // The worker's subscriber: a trace layer (spans kept in process, not exported).
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("worker")));
    // This binary's one process-wide subscriber (see ordo-server's tests/traces.rs for why
    // not a scoped one); the other tests here do not look at spans.
    let _ = tracing::subscriber::set_global_default(subscriber);
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let s = setup(2, Some(&format!("00-{trace}-00f067aa0ba902b7-01"))).await;
    let consumer = Consumer::connect(config(&s, "t"), s.worker.clone()).await.unwrap();
    let handler = Traced(Mutex::new(Vec::new()));
    let mut applied = 0;
    for _ in 0..20 {
        applied += consumer.poll(&handler).await.unwrap().applied;
        if applied >= s.orders * 2 {
            break;
        }
    }
    let seen = handler.0.into_inner().unwrap();
    // Two orders, placed and paid: four events, each handled in the request's trace.
    assert_eq!(seen.len(), 4, "{seen:?}");
    assert!(seen.iter().all(|t| t == trace), "{seen:?}");
}

/// Redis lost the stream (restarted empty, flushed) after the consumer applied part of it
/// and with entries it had not read: the relay publishes the window again, the consumer
/// makes its group anew, and every event is applied exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lost_stream_is_published_again_and_applied_once() {
    let (s, store) = setup_with_store(6).await;
    let handler = ReadModel { calls: AtomicUsize::new(0), poison: Mutex::new(None) };
    let mut c = config(&s, "w");
    c.batch = 4;
    let consumer = Consumer::connect(c, s.worker.clone()).await.unwrap();
    let first = consumer.poll(&handler).await.unwrap();
    assert_eq!(first.applied, 4, "part of the stream applied");
    // Everything of this prefix goes, as with an empty Redis: the stream, the group, the
    // relay's marker.
    s.prefix.forget();
    let relay = ordo_server::relay::Relay::connect(&ordo_testkit::redis_url(), &s.prefix).await.unwrap();
    assert_eq!(
        relay.recover(&store).await.unwrap(),
        ordo_server::relay::Recovery::Republished(2 * s.orders as u64 + 1),
        "every event published within the window waits again (the orders' and the restock)"
    );
    while relay.round(&store, 100).await.unwrap() > 0 {}
    assert_eq!(relay.recover(&store).await.unwrap(), ordo_server::relay::Recovery::Healthy);
    let rest = drain(&consumer, &handler).await;
    assert_eq!((rest.applied, rest.duplicates), (2 * s.orders - 4, 4));
    assert_eq!(handler.calls.load(Ordering::SeqCst), 2 * s.orders, "each event handled once");
    assert_eq!(count(&s.worker, "SELECT COUNT(*) FROM ordo_processed").await as usize, 2 * s.orders);
    assert_eq!(
        count(&s.worker, "SELECT COUNT(*) FROM order_states WHERE state = 'paid'").await as usize,
        s.orders
    );
}

/// The processed-messages table comes from the consumer's migration, applied once however
/// often `migrate` runs, with a history of its own beside the store's in one database; a
/// consumer on a database without it is refused with the way out.
#[tokio::test(flavor = "multi_thread")]
async fn the_processed_table_is_the_consumers_migration() {
    let db_ = ordo_testkit::TestDb::postgres().await;
    let db = sea_orm::Database::connect(&db_.url).await.unwrap();
    let config = ConsumerConfig::new(&ordo_testkit::redis_url(), "s", "g", "c");
    let refused = Consumer::connect(config.clone(), db.clone()).await.err().map(|e| e.to_string());
    assert!(refused.as_deref().is_some_and(|e| e.contains("ordo_consumer::migrate")), "{refused:?}");
    // The store's migrations and the consumer's share the database without tripping on each other.
    let spec = ordo_spec::compile(include_str!("../../../specs/order.ordo")).unwrap();
    let store = Store::open(StoreConfig::new(db_.url.clone()), "order", spec.clone(), true).await.unwrap();
    ordo_consumer::migrate(&db).await.unwrap();
    ordo_consumer::migrate(&db).await.unwrap();
    drop(store);
    Store::open(StoreConfig::new(db_.url.clone()), "order", spec, true).await.unwrap();
    let applied = count(&db, "SELECT COUNT(*) FROM ordo_consumer_migrations").await;
    assert_eq!(applied, 1);
    assert_eq!(count(&db, "SELECT COUNT(*) FROM ordo_processed").await, 0);
    Consumer::connect(config, db.clone()).await.unwrap();
}
