//! Sequential conformance of the shipped specs and the good corpus on both backends, each
//! reaching every state, transition and operation it declares.

use crate::*;

fn shipped(backend: Backend, name: &str) {
    let source =
        std::fs::read_to_string(root().join("specs").join(format!("{name}.ordo"))).expect("the spec");
    let spec = ordo_spec::compile(&source).expect("compiles");
    let report = check(backend, name, &source, 4.0);
    assert!(report.coverage.complete(&spec), "{name}: {}", report.coverage.summary(&spec));
}

#[test]
fn order_on_sqlite() {
    shipped(Backend::Sqlite, "order");
}

#[test]
fn order_on_postgres() {
    shipped(Backend::Postgres, "order");
}

#[test]
fn transfer_on_sqlite() {
    shipped(Backend::Sqlite, "transfer");
}

#[test]
fn transfer_on_postgres() {
    shipped(Backend::Postgres, "transfer");
}

/// Every spec of the checker's good corpus: each must conform and reach all it declares.
fn corpus(backend: Backend) {
    for (name, source) in corpus_specs() {
        let spec = ordo_spec::compile(&source).expect("compiles");
        let report = check(backend, &name, &source, 2.0);
        assert!(report.coverage.complete(&spec), "{name}: {}", report.coverage.summary(&spec));
    }
}

#[test]
fn corpus_on_sqlite() {
    corpus(Backend::Sqlite);
}

#[test]
fn corpus_on_postgres() {
    corpus(Backend::Postgres);
}
