//! Conformance from the spec: generated histories run through the real executor, each
//! outcome and row compared with the reference interpreter (`ordo-model`).
//!
//! - [`sequential`]: proptest generates command sequences (creates, events mostly allowed
//!   where the instance stands, operations, retries with the same key, reused keys, timer
//!   sweeps) with values on both sides of every check and guard; a difference is shrunk
//!   to the shortest history that still shows it.
//! - [`concurrent`]: batches of commands from several clients at once on the same
//!   instances and resource keys, with retries; the history must be linearizable against
//!   the interpreter.
//!
//! Both report what they covered: states entered, transitions taken, operations applied,
//! and each kind of rejection seen.

mod compare;
pub mod concurrent;
pub mod run;
pub mod specgen;

pub use concurrent::concurrent;
pub mod steps;

use ordo_model::{Entry, Executed, Outcome};
use ordo_spec::ir;
use ordo_store::Store;
use proptest::strategy::Strategy;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestError, TestRng, TestRunner};
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// How long and how widely to look.
#[derive(Debug, Clone)]
pub struct Options {
    /// Time for generating new cases (shrinking a failure may take longer).
    pub budget: Duration,
    pub cases_max: u32,
    /// Steps per history.
    pub steps: std::ops::Range<usize>,
    /// The generator's seed: a failure names it, and the same seed finds the same cases.
    pub seed: u64,
    /// Past the budget, keep generating for at most this long while some state, transition
    /// or operation of the spec has not been reached (a slow or loaded machine then still
    /// covers the spec); zero: stop at the budget.
    pub cover_for: Duration,
}

/// A seed from the clock, for a run that was not given one (reports name it).
pub fn clock_seed() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64)
}

impl Options {
    pub fn new(budget: Duration, seed: u64) -> Options {
        Options { budget, cases_max: 10_000, steps: 1..60, seed, cover_for: Duration::ZERO }
    }
}

/// What the generated commands reached.
#[derive(Debug, Clone, Default)]
pub struct Coverage {
    pub states: BTreeSet<(String, String)>,
    pub transitions: BTreeSet<(String, String, String)>,
    pub operations: BTreeSet<(String, String)>,
    /// Every (machine, event, state) an event was sent in, allowed there or not.
    pub tried: BTreeSet<(String, String, String)>,
    /// Outcomes by kind: `applied`, `replayed`, and each rejection.
    pub outcomes: BTreeMap<String, u64>,
    pub commands: u64,
    /// Commands sent by concurrent clients (not the setup), and how many of them ran while
    /// another client's command was in flight.
    pub raced: u64,
    pub overlapped: u64,
}

impl Coverage {
    /// Counts one command's outcome.
    pub fn outcome(&mut self, done: &Executed) {
        self.commands += 1;
        let kind = match &done.outcome {
            _ if done.replayed => "replayed",
            Outcome::Applied(_) => "applied",
            Outcome::Rejected(r) => r.kind(),
        };
        *self.outcomes.entry(kind.to_string()).or_default() += 1;
    }

    /// Counts the states, transitions and operations of new journal entries.
    pub fn entries(&mut self, added: &[Entry]) {
        for e in added {
            match (&e.from, &e.to) {
                (Some(from), Some(to)) => {
                    self.transitions.insert((e.name.clone(), e.event.clone(), from.clone()));
                    self.states.insert((e.name.clone(), to.clone()));
                }
                (None, Some(to)) => {
                    self.states.insert((e.name.clone(), to.clone()));
                }
                _ => {
                    self.operations.insert((e.name.clone(), e.event.clone()));
                }
            }
        }
    }

    pub fn merge(&mut self, other: &Coverage) {
        self.states.extend(other.states.iter().cloned());
        self.transitions.extend(other.transitions.iter().cloned());
        self.operations.extend(other.operations.iter().cloned());
        self.tried.extend(other.tried.iter().cloned());
        for (k, v) in &other.outcomes {
            *self.outcomes.entry(k.clone()).or_default() += v;
        }
        self.commands += other.commands;
        self.raced += other.raced;
        self.overlapped += other.overlapped;
    }

    /// `states 9/9, transitions 11/11, operations 3/3`, and what was missed.
    pub fn summary(&self, spec: &ir::Spec) -> String {
        let states: BTreeSet<(String, String)> = spec
            .machines
            .iter()
            .flat_map(|m| m.states.iter().map(|s| (m.name.clone(), s.name.clone())))
            .collect();
        let transitions: BTreeSet<(String, String, String)> = spec
            .machines
            .iter()
            .flat_map(|m| {
                m.events.iter().flat_map(move |e| {
                    e.transitions.iter().flat_map(move |t| {
                        t.from.iter().map(move |f| (m.name.clone(), e.name.clone(), f.clone()))
                    })
                })
            })
            .collect();
        let operations: BTreeSet<(String, String)> = spec
            .resources
            .iter()
            .flat_map(|r| r.operations.iter().map(|o| (r.name.clone(), o.name.clone())))
            .collect();
        // Every event in every state an instance can be in (a final one too).
        let pairs: BTreeSet<(String, String, String)> = spec
            .machines
            .iter()
            .flat_map(|m| {
                m.events.iter().flat_map(move |e| {
                    m.states.iter().map(move |s| (m.name.clone(), e.name.clone(), s.name.clone()))
                })
            })
            .collect();
        let mut s = format!(
            "states {}/{}, transitions {}/{}, operations {}/{}, events tried in states {}/{}",
            self.states.intersection(&states).count(),
            states.len(),
            self.transitions.intersection(&transitions).count(),
            transitions.len(),
            self.operations.intersection(&operations).count(),
            operations.len(),
            self.tried.intersection(&pairs).count(),
            pairs.len()
        );
        let missed: Vec<String> = states
            .difference(&self.states)
            .map(|(m, st)| format!("state {m}.{st}"))
            .chain(transitions.difference(&self.transitions).map(|(m, e, f)| format!("{m}.{e} from {f}")))
            .chain(operations.difference(&self.operations).map(|(r, o)| format!("{r}.{o}")))
            .chain(pairs.difference(&self.tried).map(|(m, e, st)| format!("{m}.{e} in {st}")))
            .collect();
        if !missed.is_empty() {
            s.push_str(&format!(" (not reached: {})", missed.join(", ")));
        }
        s
    }

    pub fn outcomes(&self) -> String {
        self.outcomes.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", ")
    }

    /// Every state, transition and operation of the spec was reached.
    pub fn complete(&self, spec: &ir::Spec) -> bool {
        !self.summary(spec).contains("not reached")
    }
}

/// What a run checked.
#[derive(Debug, Clone)]
pub struct Report {
    pub cases: u64,
    pub elapsed: Duration,
    pub coverage: Coverage,
}

impl Report {
    pub fn commands_per_second(&self) -> f64 {
        self.coverage.commands as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The report in a few lines: histories, commands and their rate, racing commands,
    /// coverage of `spec`, outcomes.
    pub fn describe(&self, spec: &ir::Spec) -> String {
        let raced = if self.coverage.raced > 0 {
            format!(
                "\n{} commands from concurrent clients ({} overlapping another), every history linearizable",
                self.coverage.raced, self.coverage.overlapped
            )
        } else {
            String::new()
        };
        format!(
            "{} histories, {} commands in {:.1}s ({:.0} commands/s), all as the spec says{raced}\n{}\noutcomes: {}",
            self.cases,
            self.coverage.commands,
            self.elapsed.as_secs_f64(),
            self.commands_per_second(),
            self.coverage.summary(spec),
            self.coverage.outcomes()
        )
    }
}

/// Sequential conformance: generated histories on `store` (each case a tenant of its own),
/// every outcome and row compared with the interpreter. On a difference, the shrunk history
/// and the seed that found it.
pub fn sequential(rt: &tokio::runtime::Runtime, store: &Store, opts: &Options) -> Result<Report, String> {
    let spec = store.spec().clone();
    let pools = run::Pools::of(&spec);
    // The tour first (every event in every state), then generated rounds.
    let started = Instant::now();
    let mut toured = Coverage::default();
    let tour = steps::tour(&spec);
    for history in &tour {
        rt.block_on(one_case(store, &spec, &pools, history, &mut toured)).map_err(|e| {
            format!("the tour of every event in every state fails (seed {}):\n{e}", opts.seed)
        })?;
    }
    let mut report = rounds(
        opts,
        &spec,
        &toured,
        || steps::steps(&spec, opts.steps.clone()),
        |steps, covered| rt.block_on(one_case(store, &spec, &pools, steps, covered)),
    )?;
    report.cases += tour.len() as u64;
    report.elapsed = started.elapsed();
    Ok(report)
}

/// Rounds of a few generated cases each until the budget is spent; each round's generator
/// is seeded from the run's seed and the round, so a failure names what repeats it. A
/// failing case is shrunk by proptest and reported with the history it printed.
pub(crate) fn rounds<S: Strategy>(
    opts: &Options,
    spec: &ir::Spec,
    start: &Coverage,
    strategy: impl Fn() -> S,
    case: impl Fn(&S::Value, &mut Coverage) -> Result<(), String>,
) -> Result<Report, String>
where
    S::Value: std::fmt::Debug,
{
    let config = Config {
        cases: ROUND_CASES,
        failure_persistence: None,
        max_shrink_iters: 4096,
        max_shrink_time: 120_000,
        ..Config::default()
    };
    let started = Instant::now();
    let deadline = started + opts.budget;
    let mut report = Report { cases: 0, elapsed: Duration::ZERO, coverage: start.clone() };
    for round in 0.. {
        let now = Instant::now();
        let covering = now < deadline + opts.cover_for && !report.coverage.complete(spec);
        if now > deadline && !covering || report.cases >= u64::from(opts.cases_max) {
            break;
        }
        let mut runner = TestRunner::new_with_rng(config.clone(), rng(opts.seed, round));
        let cases = Cell::new(0u64);
        let coverage = RefCell::new(Coverage::default());
        let result = runner.run(&strategy(), |value| {
            cases.set(cases.get() + 1);
            let mut covered = Coverage::default();
            let outcome = case(&value, &mut covered);
            coverage.borrow_mut().merge(&covered);
            outcome.map_err(TestCaseError::fail)
        });
        report.cases += cases.get();
        report.coverage.merge(&coverage.into_inner());
        match result {
            Ok(()) => {}
            Err(TestError::Fail(why, _)) => {
                return Err(format!(
                    "a generated history fails (seed {}, round {round}; shrunk):\n{why}",
                    opts.seed
                ));
            }
            Err(TestError::Abort(why)) => {
                return Err(format!("aborted (seed {}, round {round}): {why}", opts.seed));
            }
        }
    }
    report.elapsed = started.elapsed();
    Ok(report)
}

/// Cases per round of generation.
const ROUND_CASES: u32 = 8;

/// One history on a tenant of its own: every step compared, then the journal.
async fn one_case(
    store: &Store,
    spec: &ir::Spec,
    pools: &run::Pools,
    steps: &[steps::Step],
    covered: &mut Coverage,
) -> Result<(), String> {
    let mut case = run::Case::new(store, spec, pools);
    let mut result = Ok(());
    for step in steps {
        if let Err(e) = case.step(step, covered).await {
            result = Err(format!("{}\n{e}", case.report()));
            break;
        }
    }
    if result.is_ok() {
        result = compare::journal(store, &case.tenant, &case.world)
            .await
            .map_err(|e| format!("{}\nat the end: {e}", case.report()));
    }
    if result.is_ok() {
        result = compare::invariants(store, &case.tenant, &case.world)
            .await
            .map_err(|e| format!("{}\nat the end: {e}", case.report()));
    }
    case.finish().await;
    result
}

pub(crate) fn rng(seed: u64, round: u64) -> TestRng {
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    bytes[8..16].copy_from_slice(&round.to_le_bytes());
    TestRng::from_seed(RngAlgorithm::ChaCha, &bytes)
}
