//! Concurrent conformance of the shipped specs: clients racing on the same rows and keys,
//! every history linearizable against the interpreter.

use crate::*;
use ordo_conform::concurrent;

/// Concurrent conformance of one spec on one backend, with its report printed.
fn race(backend: Backend, name: &str, source: &str, seconds: f64) -> ordo_conform::Report {
    let rt = runtime();
    let (store, _db) = open(&rt, backend, name, source);
    let seed = seed();
    let report = concurrent(&rt, &store, &Options::new(budget(seconds), seed))
        .unwrap_or_else(|e| panic!("{name} on {backend:?}: {e}\n(repeat with ORDO_CONFORM_SEED={seed})"));
    eprintln!(
        "{name} on {backend:?}, concurrent: {} histories, {} commands in {:.1}s ({:.0}/s), {} from racing clients ({} overlapping), all linearizable; {}; {}",
        report.cases,
        report.coverage.commands,
        report.elapsed.as_secs_f64(),
        report.commands_per_second(),
        report.coverage.raced,
        report.coverage.overlapped,
        report.coverage.summary(store.spec()),
        report.coverage.outcomes()
    );
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
