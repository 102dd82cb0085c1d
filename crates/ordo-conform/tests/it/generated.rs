//! Generated specs: the generator's texts pass the checker, and 50 of them per run conform.

use crate::*;
use ordo_conform::specgen;

/// Nearly every generated text passes the checker (the generator is not testing the
/// checker here; a low rate would mean it drifted from the language).
#[test]
fn generated_specs_pass_the_checker() {
    let mut failed = Vec::new();
    for seed in 0..200 {
        let text = specgen::source(seed);
        if let Err(d) = ordo_spec::compile(&text) {
            failed.push(format!("seed {seed}:\n{}", ordo_spec::render("gen.ordo", &text, &d)));
        }
    }
    assert!(
        failed.len() <= 10,
        "{} of 200 generated specs fail the checker; first:\n{}",
        failed.len(),
        failed[0]
    );
}

/// Sequential conformance of `count` generated specs on `backend`, a short budget each.
fn generated(backend: Backend, count: u64, seconds: f64) {
    let base = seed();
    let (mut complete, mut commands, mut cases) = (0, 0, 0);
    let started = std::time::Instant::now();
    for i in 0..count {
        let (s, text, spec) = specgen::generate(base.wrapping_add(i * 1000));
        let name = format!("generated-{s}");
        let report = check_quietly(backend, &name, &text, seconds, false);
        complete += u32::from(report.coverage.complete(&spec));
        commands += report.coverage.commands;
        cases += report.cases;
    }
    eprintln!(
        "{backend:?}: {count} generated specs (seeds from {base}) conform: {cases} histories, {commands} commands in {:.1}s; {complete} reached every state, transition and operation they declare",
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn fifty_generated_specs_on_sqlite() {
    generated(Backend::Sqlite, 50, 0.4);
}

#[test]
fn generated_specs_on_postgres() {
    generated(Backend::Postgres, 10, 0.4);
}
