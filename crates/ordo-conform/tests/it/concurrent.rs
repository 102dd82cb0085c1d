//! Concurrent conformance of the shipped specs: clients racing on the same rows and keys,
//! every history linearizable against the interpreter.

use crate::*;
use ordo_conform::concurrent;

/// Concurrent conformance of one spec on one backend, with its report printed.
/// Races assert no coverage (deep states are the sequential runs' job), so they never wait for it.
fn race(backend: Backend, name: &str, source: &str, seconds: f64) -> ordo_conform::Report {
    let rt = runtime();
    let (store, _db) = open(&rt, backend, name, source);
    let seed = seed();
    let report = concurrent(&rt, &store, &options(seconds, seed, false))
        .unwrap_or_else(|e| panic!("{name} on {backend:?}: {e}\n(repeat with ORDO_CONFORM_SEED={seed})"));
    eprintln!("{name} on {backend:?}, concurrent: {}", report.describe(store.spec()).replace('\n', "; "));
    report
}

fn shipped(backend: Backend, name: &str) {
    let source =
        std::fs::read_to_string(root().join("specs").join(format!("{name}.ordo"))).expect("the spec");
    let report = race(backend, name, &source, 4.0);
    assert!(report.coverage.overlapped > 0, "{name}: no two clients' commands overlapped in time");
}

#[test]
fn order_races_on_postgres() {
    shipped(Backend::Postgres, "order");
}

#[test]
fn order_races_on_sqlite() {
    shipped(Backend::Sqlite, "order");
}

#[test]
fn transfer_races_on_postgres() {
    shipped(Backend::Postgres, "transfer");
}

#[test]
fn transfer_races_on_sqlite() {
    shipped(Backend::Sqlite, "transfer");
}

/// The good corpus races too: skip locked, nowait, serializable and repeatable read bodies.
fn corpus(backend: Backend) {
    for (name, source) in corpus_specs() {
        race(backend, &name, &source, 1.5);
    }
}

#[test]
fn corpus_races_on_postgres() {
    corpus(Backend::Postgres);
}

#[test]
fn corpus_races_on_sqlite() {
    corpus(Backend::Sqlite);
}

/// Generated specs race on PostgreSQL (their lock modes are drawn at random).
#[test]
fn generated_specs_race_on_postgres() {
    let base = seed();
    for i in 0..10 {
        let (s, text, _) = ordo_conform::specgen::generate(base.wrapping_add(i * 1000));
        race(Backend::Postgres, &format!("generated-{s}"), &text, 0.5);
    }
}
