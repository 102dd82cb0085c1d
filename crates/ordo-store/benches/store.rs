//! Criterion benchmarks of the store: compiling the plans of a spec, and single commands
//! on an in-memory SQLite database (the embedded default, without the disk).

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use ordo_store::{Store, StoreConfig};
use serde_json::json;
use std::hint::black_box;

mod common;
use common::{ORDER, operate, place};

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
        b.iter(|| rt.block_on(store.execute(black_box(&place("sku", "acct")))).expect("place"))
    });
    group.bench_function("deposit", |b| {
        let deposit = operate("Wallet", "acct", "deposit", json!({"amount": 1}));
        b.iter(|| rt.block_on(store.execute(black_box(&deposit))).expect("deposit"))
    });
    group.bench_function("pay", |b| {
        b.iter_batched(
            || {
                let placed = rt.block_on(store.execute(&place("sku", "acct"))).expect("place");
                let ordo_store::Outcome::Applied { row: instance } = placed.outcome else { panic!("placed") };
                common::fire(&instance.id, "pay", json!({}))
            },
            |pay| rt.block_on(store.execute(&pay)).expect("pay"),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(store_benches, benches);
criterion_main!(store_benches);
