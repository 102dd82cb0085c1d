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
