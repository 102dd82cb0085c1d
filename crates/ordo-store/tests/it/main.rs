//! The store's integration tests, through the public executor API, on PostgreSQL and SQLite.

#![allow(clippy::unwrap_used)]

mod basics;
mod batch;
mod concurrency;
mod events;
mod evolve;
mod faults;
mod illegal;
mod migrations;
mod plans;
mod timers;

use ordo_store::{
    Action, Command, Executed, IdempotencyKey, Outcome, Rejection, Store, StoreConfig, StoredRow,
};
use ordo_testkit::{Backend, TestDb};
use serde_json::{Map, Value as Json, json};
use std::path::Path;

pub use ordo_testkit::on_both;

pub fn spec_source(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../specs").join(format!("{name}.ordo"));
    std::fs::read_to_string(path).unwrap()
}

/// A store over a fresh database, migrated, for a spec's text.
pub async fn open_source(backend: Backend, name: &str, source: &str) -> (Store, TestDb) {
    let spec =
        ordo_spec::compile(source).unwrap_or_else(|d| panic!("{}", ordo_spec::render(name, source, &d)));
    let db = TestDb::new(backend).await;
    let mut config = StoreConfig::new(db.url.clone());
    config.pool_size = 16;
    config.acquire_timeout_ms = 60_000;
    let store = Store::open(config, name, spec, true).await.unwrap();
    (store, db)
}

pub async fn open(backend: Backend, spec: &str) -> (Store, TestDb) {
    open_source(backend, spec, &spec_source(spec)).await
}

pub fn obj(v: Json) -> Map<String, Json> {
    match v {
        Json::Object(m) => m,
        other => panic!("not an object: {other}"),
    }
}

pub fn cmd(action: Action) -> Command {
    Command { tenant: "t1".to_string(), idempotency: None, action, trace: None }
}

pub fn with_key(mut c: Command, key: &str, fingerprint: &str) -> Command {
    c.idempotency = Some(IdempotencyKey { key: key.to_string(), fingerprint: fingerprint.to_string() });
    c
}

pub fn create(machine: &str, input: Json) -> Command {
    cmd(Action::Create { machine: machine.to_string(), input: obj(input) })
}

pub fn fire(machine: &str, id: &str, event: &str, params: Json) -> Command {
    cmd(Action::Fire {
        machine: machine.to_string(),
        id: id.parse().unwrap(),
        event: event.to_string(),
        params: obj(params),
        if_match: None,
    })
}

pub fn operate(resource: &str, key: &str, op: &str, params: Json) -> Command {
    cmd(Action::Operate {
        resource: resource.to_string(),
        key: json!(key),
        operation: op.to_string(),
        params: obj(params),
    })
}

pub fn applied(e: &Executed) -> &StoredRow {
    match &e.outcome {
        Outcome::Applied { row: instance } => instance,
        Outcome::Rejected { rejection } => panic!("expected applied, got {rejection:?}"),
    }
}

pub fn rejected(e: &Executed) -> &Rejection {
    match &e.outcome {
        Outcome::Rejected { rejection } => rejection,
        Outcome::Applied { row: instance } => panic!("expected a rejection, got {instance:?}"),
    }
}

pub async fn run(store: &Store, c: &Command) -> Executed {
    store.execute(c).await.unwrap_or_else(|e| panic!("{c:?}: {e}"))
}

/// Rows in a table, for one tenant (raw SQL: these are audits, not the executor's API).
pub async fn count(store: &Store, table: &str, filter: &str) -> i64 {
    use sea_orm::ConnectionTrait;
    let sql = format!("SELECT COUNT(*) AS n FROM {table} WHERE {filter}");
    let row = store
        .connection()
        .query_one_raw(sea_orm::Statement::from_string(store.backend(), sql))
        .await
        .unwrap()
        .unwrap();
    row.try_get::<i64>("", "n").unwrap()
}
