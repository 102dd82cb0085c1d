//! Spec evolution: the database keeps every deployed version of each spec (source and IR,
//! in `ordo_spec_versions`), and a migration is derived from the diff between the deployed
//! version and the edited spec (`ordo_spec::diff`), never written by hand.
//!
//! [`evolve`] is the front door: in one transaction it diffs, counts the live rows each
//! change touches, refuses what the data (or the caller) does not allow, and otherwise
//! applies every step and records the new version, so the whole change lands or nothing
//! does. A plan for review is the same call with [`Apply::Never`], rolled back.

mod op;
mod revert;
mod run;
pub mod sql;
mod steps;

use crate::StoreError;
use crate::schema::{self, SCHEMAS};
use chrono::{DateTime, Utc};
use ordo_spec::diff::{self, Class, Problem};
use ordo_spec::ir;
use sea_orm::sea_query::{Alias, Expr, ExprTrait, Query};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement};
use std::fmt;

pub use op::Op;
pub use steps::{Affected, Step};

pub use crate::schema::VERSIONS;
/// How long a migration waits for a table lock on PostgreSQL before giving up (and rolling
/// back), so a migration never queues a live service behind it for long.
pub const LOCK_TIMEOUT_MS_DEFAULT: u64 = 5_000;
/// How long one statement of a migration may run on PostgreSQL.
pub const STATEMENT_TIMEOUT_MS_DEFAULT: u64 = 300_000;
/// Ids of offending rows shown in a plan, at most.
pub const SAMPLE_IDS_MAX: usize = 5;

/// A spec as it is on disk: its name, its text and its checked IR.
#[derive(Debug, Clone)]
pub struct SpecSource {
    pub name: String,
    pub source: String,
    pub ir: ir::Spec,
}

/// One deployed version of a spec.
#[derive(Debug, Clone)]
pub struct Version {
    pub version: i64,
    pub source: String,
    pub ir: ir::Spec,
    pub applied_at: DateTime<Utc>,
}

/// What [`evolve`] may apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Apply {
    /// Nothing: make the plan and roll back (`migrate plan`).
    Never,
    /// Only safe, expand-only changes (a server's `--migrate`); anything else is refused.
    ExpandOnly,
    /// Everything the data allows; destructive changes only when `allow_destructive`.
    All { allow_destructive: bool },
}

#[derive(Debug, Clone, Default)]
pub struct EvolveOptions {
    pub lock_timeout_ms: u64,
    pub statement_timeout_ms: u64,
    /// Fault injection for tests: fail after this many steps have run, to show that a
    /// migration that breaks half-way leaves the database exactly as it was.
    pub fail_after_steps: Option<usize>,
}

impl EvolveOptions {
    pub fn new() -> EvolveOptions {
        EvolveOptions {
            lock_timeout_ms: LOCK_TIMEOUT_MS_DEFAULT,
            statement_timeout_ms: STATEMENT_TIMEOUT_MS_DEFAULT,
            fail_after_steps: None,
        }
    }
}

/// A migration from the deployed version of one spec to the edited one.
#[derive(Debug, Clone)]
pub struct Plan {
    pub spec: String,
    /// The deployed version the plan starts from; `None` when the spec's tables are new.
    pub from_version: Option<i64>,
    pub backend: DbBackend,
    pub steps: Vec<Step>,
    /// Why the plan cannot be applied as asked, each with a stable code.
    pub refusals: Vec<Problem>,
    /// Set once applied: the version recorded.
    pub applied: Option<i64>,
}

impl Plan {
    /// The plan of a spec the database has no tables for: `migrate up` creates them.
    pub fn new_tables(spec: &SpecSource, backend: DbBackend) -> Plan {
        Plan {
            spec: spec.name.clone(),
            from_version: None,
            backend,
            steps: Vec::new(),
            refusals: Vec::new(),
            applied: None,
        }
    }

    /// Nothing to change: the deployed spec is the edited one.
    pub fn is_empty(&self) -> bool {
        self.from_version.is_some() && self.steps.is_empty() && self.refusals.is_empty()
    }

    /// A one-line account, for a server's start-up log.
    pub fn summary(&self) -> String {
        let count = |c: Class| self.steps.iter().filter(|s| s.change.class == c).count();
        let mut parts = Vec::new();
        for c in [Class::Safe, Class::DataDependent, Class::Destructive] {
            if count(c) > 0 {
                parts.push(format!("{} {}", count(c), c.as_str()));
            }
        }
        let from =
            self.from_version.map_or("no deployed version".to_string(), |v| format!("deployed version {v}"));
        let mut line = format!(
            "spec `{}` differs from {from}: {} change(s) ({})",
            self.spec,
            self.steps.len(),
            parts.join(", ")
        );
        if let Some(first) = self.refusals.first() {
            line.push_str(&format!("; refused: {} [{}]", first.message, first.code));
        }
        line
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let backend = match self.backend {
            DbBackend::Postgres => "PostgreSQL",
            _ => "SQLite",
        };
        let Some(from) = self.from_version else {
            return writeln!(
                f,
                "spec `{}` on {backend}: no tables yet; `migrate up` creates them",
                self.spec
            );
        };
        writeln!(f, "spec `{}` on {backend}: deployed version {from} -> the edited spec", self.spec)?;
        if self.is_empty() {
            return writeln!(f, "  up to date: nothing to change");
        }
        let pg = self.backend == DbBackend::Postgres;
        if !pg {
            writeln!(
                f,
                "  (SQLite holds its one write lock for the whole migration; every step is in one transaction)"
            )?;
        }
        for (i, step) in self.steps.iter().enumerate() {
            writeln!(f, "  {}. {}", i + 1, step.change)?;
            if let Some(a) = &step.affected {
                writeln!(f, "     {a}")?;
            }
            for op in &step.ops {
                for line in op.render().lines() {
                    writeln!(f, "       {line}")?;
                }
                if pg {
                    writeln!(f, "       -- locks: {}", op.locks(self.backend))?;
                }
            }
        }
        if !self.refusals.is_empty() {
            writeln!(f, "  refused:")?;
            for r in &self.refusals {
                writeln!(f, "    error[{}]: {}", r.code, r.message)?;
            }
        }
        if let Some(v) = self.applied {
            writeln!(f, "  applied: now at version {v}")?;
        }
        Ok(())
    }
}

/// Whether the database has tables for `spec` (a recorded version, or tables made before
/// the history was kept).
pub async fn known<C: ConnectionTrait>(db: &C, spec: &SpecSource) -> Result<bool, StoreError> {
    Ok(!history(db, &spec.name).await?.is_empty()
        || schema::recorded_fingerprint(db, &spec.name).await?.is_some())
}

/// Every deployed version of a spec, oldest first (empty when none was recorded).
pub async fn history<C: ConnectionTrait>(db: &C, spec: &str) -> Result<Vec<Version>, StoreError> {
    let q = Query::select()
        .columns(["version", "source", "ir", "applied_at"].map(Alias::new))
        .from(Alias::new(VERSIONS))
        .and_where(Expr::col(Alias::new("spec")).eq(spec))
        .order_by(Alias::new("version"), sea_orm::Order::Asc)
        .to_owned();
    let rows = db.query_all(&q).await?;
    rows.iter()
        .map(|r| {
            let ir_json: String = r.try_get("", "ir")?;
            let ir = serde_json::from_str(&ir_json).map_err(|e| {
                StoreError::Migration(format!("the recorded IR of `{spec}` cannot be read: {e}"))
            })?;
            Ok(Version {
                version: r.try_get("", "version")?,
                source: r.try_get("", "source")?,
                ir,
                applied_at: r.try_get("", "applied_at")?,
            })
        })
        .collect()
}

async fn record<C: ConnectionTrait>(db: &C, spec: &SpecSource, version: i64) -> Result<(), StoreError> {
    let ir = serde_json::to_string(&spec.ir).map_err(|e| StoreError::Internal(e.to_string()))?;
    let insert = Query::insert()
        .into_table(Alias::new(VERSIONS))
        .columns(["spec", "version", "source", "ir", "applied_at"].map(Alias::new))
        .values([
            spec.name.clone().into(),
            version.into(),
            spec.source.clone().into(),
            ir.into(),
            Utc::now().into(),
        ])
        .map_err(|e| StoreError::Internal(e.to_string()))?
        .to_owned();
    db.execute(&insert).await?;
    // The fingerprint follows, for stores that predate the history.
    let update = Query::update()
        .table(Alias::new(SCHEMAS))
        .value(Alias::new("fingerprint"), schema::fingerprint(&spec.ir))
        .value(Alias::new("applied_at"), Utc::now())
        .and_where(Expr::col(Alias::new("spec")).eq(spec.name.clone()))
        .to_owned();
    db.execute(&update).await?;
    Ok(())
}

/// Records the first version of a spec whose tables exist but whose history does not
/// (tables just created by the spec's migration, or created before Ordo kept a history):
/// possible only when they were made from this very spec.
pub(crate) async fn bootstrap<C: ConnectionTrait>(db: &C, spec: &SpecSource) -> Result<Version, StoreError> {
    let found = schema::recorded_fingerprint(db, &spec.name).await?;
    let expected = schema::fingerprint(&spec.ir);
    match found {
        Some(f) if f == expected => {
            record(db, spec, 1).await?;
            Ok(Version {
                version: 1,
                source: spec.source.clone(),
                ir: spec.ir.clone(),
                applied_at: Utc::now(),
            })
        }
        Some(found) => Err(StoreError::Migration(format!(
            "the tables of `{}` were made before Ordo kept a history of specs, from another version \
             of the spec (fingerprint {found}, this one {expected}): check out the spec they were made \
             from, run `cargo xtask migrate up` once to record it, then apply the edit",
            spec.name
        ))),
        None => Err(StoreError::Migration(format!(
            "the tables of `{}` do not exist: run `cargo xtask migrate up`",
            spec.name
        ))),
    }
}

/// The deployed version of a spec, recording the first one when the tables predate the
/// history.
pub async fn deployed<C: ConnectionTrait>(db: &C, spec: &SpecSource) -> Result<Version, StoreError> {
    match history(db, &spec.name).await?.pop() {
        Some(v) => Ok(v),
        None => bootstrap(db, spec).await,
    }
}

/// Diffs the deployed version of `spec` against `spec`, counts what each change touches,
/// and applies it all in one transaction when `apply` allows every step; returns the plan
/// (with `applied` set when it was applied). The spec's tables must exist (see
/// `crate::install`, which creates new specs' tables and records their first version).
pub async fn evolve(
    db: &DatabaseConnection,
    spec: &SpecSource,
    apply: Apply,
    options: &EvolveOptions,
) -> Result<Plan, StoreError> {
    let txn = run::begin(db, options).await?;
    let deployed = deployed(&txn, spec).await?;
    plan_and_apply(txn, &spec.ir, spec, &deployed.ir, deployed.version, apply, options).await
}

/// Reverts the last applied version of `spec`: a migration from it to the version before,
/// under the same rules as any other (what cannot be undone without losing data is
/// refused, saying why).
pub async fn revert(
    db: &DatabaseConnection,
    spec_name: &str,
    apply: Apply,
    options: &EvolveOptions,
) -> Result<Plan, StoreError> {
    let txn = run::begin(db, options).await?;
    let mut versions = history(&txn, spec_name).await?;
    let (Some(last), Some(previous)) = (versions.pop(), versions.pop()) else {
        return Err(StoreError::Migration(format!(
            "`{spec_name}` has no earlier version to go back to: its first version created its \
             tables (`cargo xtask migrate fresh` drops everything)"
        )));
    };
    // The target is the previous spec, with the renames of the last version turned round.
    let forward = diff::diff(&previous.ir, &last.ir);
    let mut target = previous.ir.clone();
    revert::reverse_renames(&forward, &mut target);
    let back =
        SpecSource { name: spec_name.to_string(), source: previous.source.clone(), ir: previous.ir.clone() };
    plan_and_apply(txn, &target, &back, &last.ir, last.version, apply, options).await
}

/// Plans the way from `deployed` to `target` and, when allowed, applies it and records
/// `recorded` as the next version (a revert plans towards the previous spec with its renames
/// turned round, but records the previous spec as it was).
async fn plan_and_apply(
    txn: sea_orm::DatabaseTransaction,
    target: &ir::Spec,
    recorded: &SpecSource,
    deployed: &ir::Spec,
    from_version: i64,
    apply: Apply,
    options: &EvolveOptions,
) -> Result<Plan, StoreError> {
    let backend = txn.get_database_backend();
    let version = from_version + 1;
    let d = diff::diff(deployed, target);
    let mut plan = Plan {
        spec: recorded.name.clone(),
        from_version: Some(from_version),
        backend,
        steps: Vec::new(),
        refusals: d.problems.clone(),
        applied: None,
    };
    if d.changes.is_empty() && d.problems.is_empty() {
        // Only the text (or a clause already applied) changed: a new version, no steps.
        if deployed != &recorded.ir && apply != Apply::Never {
            record(&txn, recorded, version).await?;
            txn.commit().await?;
            plan.applied = Some(version);
        }
        return Ok(plan);
    }
    let now = Utc::now();
    plan.steps = steps::steps(&txn, deployed, target, &d, now).await?;
    for step in &plan.steps {
        plan.refusals.extend(step.refusal.iter().cloned());
        let refused = match apply {
            Apply::Never => None,
            Apply::ExpandOnly if step.change.class != Class::Safe || !step.change.expand_only => {
                Some(format!(
                    "{} is not a safe, expand-only change: apply it with `cargo xtask migrate up`",
                    step.change.what()
                ))
            }
            Apply::All { allow_destructive: false } | Apply::ExpandOnly
                if step.change.class == Class::Destructive =>
            {
                Some(format!(
                    "{} throws data away: apply it with `cargo xtask migrate up --allow-destructive`",
                    step.change.what()
                ))
            }
            _ => None,
        };
        if let Some(message) = refused {
            plan.refusals.push(Problem { code: diff::DESTRUCTIVE, message });
        }
    }
    if apply == Apply::Never || !plan.refusals.is_empty() {
        txn.rollback().await?;
        return Ok(plan);
    }
    for (i, step) in plan.steps.iter().enumerate() {
        if options.fail_after_steps == Some(i) {
            return Err(StoreError::Migration(format!("failed on purpose before step {}", i + 1)));
        }
        for op in &step.ops {
            run::op(&txn, op, version, now).await?;
        }
    }
    record(&txn, recorded, version).await?;
    txn.commit().await?;
    plan.applied = Some(version);
    Ok(plan)
}

/// How a server built from `spec` stands to the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Serving {
    /// The deployed version is this spec.
    Current { version: i64 },
    /// This spec is an earlier version, and every change since is expand-only: it keeps
    /// serving correctly while servers of the new version replace it (a rolling deploy).
    Older { version: i64, deployed: i64 },
    /// The spec differs from what the database runs: a one-line account.
    Differs { summary: String },
}

/// Where a server built from `spec` stands, without changing anything.
pub async fn serving<C: ConnectionTrait>(db: &C, spec: &SpecSource) -> Result<Serving, StoreError> {
    let versions = history(db, &spec.name).await?;
    let Some(latest) = versions.last() else {
        // Tables from before the history: the fingerprint still tells.
        let found = schema::recorded_fingerprint(db, &spec.name).await?;
        let expected = schema::fingerprint(&spec.ir);
        return Ok(match found {
            Some(f) if f == expected => Serving::Current { version: 0 },
            Some(f) => Serving::Differs {
                summary: format!(
                    "the tables were made from another version of the spec (fingerprint {f}, this one {expected})"
                ),
            },
            None => Serving::Differs { summary: "its tables do not exist".to_string() },
        });
    };
    if latest.ir == spec.ir {
        return Ok(Serving::Current { version: latest.version });
    }
    if let Some(mine) = versions.iter().rev().find(|v| v.ir == spec.ir) {
        let d = diff::diff(&spec.ir, &latest.ir);
        if d.problems.is_empty() && d.changes.iter().all(|c| c.expand_only) {
            return Ok(Serving::Older { version: mine.version, deployed: latest.version });
        }
    }
    let d = diff::diff(&latest.ir, &spec.ir);
    let safe = d.changes.iter().filter(|c| c.class == Class::Safe && c.expand_only).count();
    let first = d.changes.first().map(|c| c.what()).or(d.problems.first().map(|p| p.message.clone()));
    Ok(Serving::Differs {
        summary: format!(
            "it differs from deployed version {}: {} change(s), {safe} of them safe and expand-only{}",
            latest.version,
            d.changes.len(),
            first.map_or(String::new(), |f| format!(" (first: {f})"))
        ),
    })
}

/// Reads one number from a count query.
pub(crate) async fn count<C: ConnectionTrait>(
    db: &C,
    backend: DbBackend,
    sql: &str,
) -> Result<u64, StoreError> {
    let row = db.query_one_raw(Statement::from_string(backend, sql.to_string())).await?;
    let n: i64 = match row {
        Some(r) => r.try_get_by_index(0)?,
        None => 0,
    };
    Ok(u64::try_from(n).unwrap_or(0))
}
