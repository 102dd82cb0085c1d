//! Criterion benchmarks of the store: compiling the plans of a spec, and single commands
//! on an in-memory SQLite database (the embedded default, without the disk).

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use ordo_store::{Action, Command, Store, StoreConfig};
use serde_json::{Map, Value as Json, json};
use std::hint::black_box;

const ORDER: &str = include_str!("../../../specs/order.ordo");

fn obj(v: Json) -> Map<String, Json> {
    match v {
        Json::Object(m) => m,
        _ => Map::new(),
    }
}

fn command(action: Action) -> Command {
    Command { tenant: "t1".to_string(), idempotency: None, action }
}

fn place() -> Command {
    command(Action::Create {
        machine: "Order".to_string(),
        input: obj(json!({"sku": "sku", "quantity": 1, "account": "acct", "amount": 10})),
    })
}

fn operate(resource: &str, key: &str, operation: &str, params: Json) -> Command {
    command(Action::Operate {
        resource: resource.to_string(),
        key: json!(key),
        operation: operation.to_string(),
        params: obj(params),
    })
}

fn benches(c: &mut Criterion) {
    let spec = ordo_spec::compile(ORDER).expect("order.ordo checks");
    let mut group = c.benchmark_group("plan");
    for backend in [sea_orm::DbBackend::Postgres, sea_orm::DbBackend::Sqlite] {
        group.bench_function(format!("compile_order_{backend:?}").to_lowercase(), |b| {
            b.iter(|| ordo_store::plan::compile(black_box(&spec), backend).expect("compiles"))
        });
    }
    group.finish();

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let store: Store = rt
        .block_on(Store::open(StoreConfig::new("sqlite::memory:"), "order", spec.clone(), true))
        .expect("in-memory store");
    rt.block_on(async {
        store
            .execute(&operate("Inventory", "sku", "restock", json!({"quantity": 1_000_000_000})))
            .await
            .expect("restock");
        store
            .execute(&operate("Wallet", "acct", "deposit", json!({"amount": 1_000_000_000_000i64})))
            .await
            .expect("deposit");
    });
    let mut group = c.benchmark_group("sqlite_memory");
    group.bench_function("place", |b| {
        b.iter(|| rt.block_on(store.execute(black_box(&place()))).expect("place"))
    });
    group.bench_function("deposit", |b| {
        let deposit = operate("Wallet", "acct", "deposit", json!({"amount": 1}));
        b.iter(|| rt.block_on(store.execute(black_box(&deposit))).expect("deposit"))
    });
    group.bench_function("pay", |b| {
        b.iter_batched(
            || {
                let placed = rt.block_on(store.execute(&place())).expect("place");
                let ordo_store::Outcome::Applied { instance } = placed.outcome else { panic!("placed") };
                command(Action::Fire {
                    machine: "Order".to_string(),
                    id: instance.id.parse().expect("uuid"),
                    event: "pay".to_string(),
                    params: Map::new(),
                    if_match: None,
                })
            },
            |pay| rt.block_on(store.execute(&pay)).expect("pay"),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(store_benches, benches);
criterion_main!(store_benches);
