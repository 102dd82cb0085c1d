//! Conformance of the real executor to the interpreter, on PostgreSQL and SQLite: the shipped
//! specs, every spec of the good corpus, and generated specs.

use ordo_conform::{Options, sequential};
use ordo_store::{Store, StoreConfig};
use ordo_testkit::{Backend, TestDb};
use std::path::{Path, PathBuf};
use std::time::Duration;

mod concurrent;
mod generated;
mod sequential;

/// A seed for this run: `ORDO_CONFORM_SEED` when set (to repeat a failure), else the clock.
pub fn seed() -> u64 {
    std::env::var("ORDO_CONFORM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(ordo_conform::clock_seed)
}

/// Seconds of generation per spec and backend: `ORDO_CONFORM_SECONDS`, else `default`.
pub fn budget(default: f64) -> Duration {
    let s = std::env::var("ORDO_CONFORM_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(default);
    Duration::from_secs_f64(s)
}

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("a runtime")
}

/// A store over a fresh database of `backend`, migrated for the spec.
pub fn open(rt: &tokio::runtime::Runtime, backend: Backend, name: &str, source: &str) -> (Store, TestDb) {
    let spec =
        ordo_spec::compile(source).unwrap_or_else(|d| panic!("{}", ordo_spec::render(name, source, &d)));
    rt.block_on(async {
        let db = TestDb::new(backend).await;
        let mut config = StoreConfig::new(db.url.clone());
        config.pool_size = 8;
        let store = Store::open(config, name, spec, true).await.expect("the store opens");
        (store, db)
    })
}

/// The run's options: `seconds` of generation (or `ORDO_CONFORM_SECONDS`), then, with
/// `cover`, up to half a minute more while the spec is not yet covered (a loaded machine runs
/// fewer cases). Generated specs may declare guards no value meets: they do not wait.
pub fn options(seconds: f64, seed: u64, cover: bool) -> Options {
    let cover_for = if cover { Duration::from_secs(30) } else { Duration::ZERO };
    Options { cover_for, ..Options::new(budget(seconds), seed) }
}

/// Sequential conformance of one spec on one backend, with its report printed.
pub fn check(backend: Backend, name: &str, source: &str, seconds: f64) -> ordo_conform::Report {
    let report = check_quietly(backend, name, source, seconds, true);
    let spec = ordo_spec::compile(source).expect("compiles");
    eprintln!("{name} on {backend:?}: {}", report.describe(&spec).replace('\n', "; "));
    report
}

/// [`check`] without the report.
pub fn check_quietly(
    backend: Backend,
    name: &str,
    source: &str,
    seconds: f64,
    cover: bool,
) -> ordo_conform::Report {
    let rt = runtime();
    let (store, _db) = open(&rt, backend, name, source);
    let seed = seed();
    sequential(&rt, &store, &options(seconds, seed, cover))
        .unwrap_or_else(|e| panic!("{name} on {backend:?}: {e}\n(repeat with ORDO_CONFORM_SEED={seed})"))
}

/// The good corpus's specs, by name, in order.
pub fn corpus_specs() -> Vec<(String, String)> {
    let dir = root().join("crates/ordo-spec/tests/corpus/good");
    let mut files: Vec<_> =
        std::fs::read_dir(&dir).expect("the corpus").map(|e| e.expect("an entry").path()).collect();
    files.sort();
    assert!(files.len() >= 4, "the good corpus shrank: {files:?}");
    files
        .into_iter()
        .map(|file| {
            let name = file.file_stem().and_then(|s| s.to_str()).expect("a name").to_string();
            (name, std::fs::read_to_string(&file).expect("the spec"))
        })
        .collect()
}
