//! Group commit's fast path: a batch of keyed creates runs in one transaction with a fixed
//! number of statements, however many commands it holds, and no savepoints.
//!
//! Everything a create decides without the database (its input, guards, sets and field
//! checks, its effects' keys and amounts) is decided first, in Rust. The resource rows the
//! batch's effects touch are then locked once each, in the one lock order (table, then
//! key), and the effects are applied to them in memory in arrival order: a command whose
//! effect would break a resource field's check is rejected, exactly as if it had run alone
//! after the commands before it, and changes nothing. Then each changed row is written
//! once, and the instances, journal, outbox, timer and idempotency rows go in one
//! multi-row `INSERT` per table. The database's own constraints still hold every row.
//!
//! Whatever this path does not decide exactly (a create that locks other than
//! optimistically, an amount that is not a whole number, a sum out of range, a key used
//! twice in the batch, a record another request wrote meanwhile) makes it roll back and
//! say so (`None`): the batch then takes the general path, a savepoint per command.

use crate::decide::prepare_create;
use crate::exec::{Executor, PlannedEffect, Stop};
use crate::plan::Many;
use crate::rows::{Bind, Transition, journal_rows, machine_record, timer_rows};
use crate::value::{self, Env, Val};
use crate::{Action, Command, Executed, Outcome, Record, Rejection, StoreError};
use chrono::{DateTime, Utc};
use ordo_spec::ir;
use sea_orm::{ConnectionTrait, DatabaseTransaction, QueryResult, Statement};
use serde_json::Value as Json;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::Ordering::Relaxed;
use tracing::Instrument as _;
use uuid::Uuid;

/// Bound values per statement at most: under SQLite's limit (32,766) and PostgreSQL's
/// (65,535); a longer batch of rows goes in several statements.
const VALUES_PER_STATEMENT_MAX: usize = 30_000;

/// A resource row as the batch holds it: `(table, key, tenant)`, so that the rows' order
/// is the one lock order (table, then key) every transaction takes its rows in.
type RowId = (String, String, String);

fn row_id(e: &PlannedEffect<'_>, tenant: &str) -> RowId {
    (e.resource.table.clone(), e.key_text.clone(), tenant.to_string())
}

struct Row<'s> {
    resource: &'s ir::Resource,
    key: Val,
    /// The effect fields' values, as the commands so far left them.
    values: BTreeMap<String, Val>,
    version: i64,
    /// The row did not exist: it starts from zeros (`ensure`) once an effect applies.
    absent: bool,
    /// The row did not exist and cannot start from zeros (a zero breaks a check): every
    /// effect on it is refused.
    refused: bool,
    changed: bool,
}

/// What one command of the batch does, decided before the database is asked.
enum Plan<'s> {
    Rejected(Rejection),
    Create {
        tenant: String,
        m: &'s ir::Machine,
        id: Uuid,
        fields: BTreeMap<String, Val>,
        effects: Vec<PlannedEffect<'s>>,
    },
}

impl Executor {
    /// Runs a batch of keyed creates whose records were just looked for and not found, in
    /// one transaction with a fixed number of statements, retrying transient failures as
    /// `run` does. `None`: the batch is not of that kind, or needs the general path (then
    /// nothing was written).
    pub(crate) async fn run_bulk(&self, cmds: &[Command]) -> Result<Option<Vec<Executed>>, StoreError> {
        let Some(isolation) = self.bulk_isolation(cmds) else { return Ok(None) };
        let span = tracing::debug_span!("store.bulk", commands = cmds.len());
        self.bulk_tries(cmds, isolation).instrument(span).await
    }

    async fn bulk_tries(
        &self,
        cmds: &[Command],
        isolation: ir::Isolation,
    ) -> Result<Option<Vec<Executed>>, StoreError> {
        let mut tries = 0;
        loop {
            match self.bulk_attempt(cmds, isolation).await {
                Ok(done) => {
                    if done.is_some() {
                        self.stats.bulk_batches.fetch_add(1, Relaxed);
                    }
                    return Ok(done);
                }
                Err(stop) => self.after_failure(&mut tries, stop).await?,
            }
        }
    }

    /// The isolation the batch runs at, if the fast path can run it: two or more keyed
    /// creates with distinct keys, each on a known machine whose create locks optimistically.
    fn bulk_isolation(&self, cmds: &[Command]) -> Option<ir::Isolation> {
        if cmds.len() < 2 {
            return None;
        }
        let mut keys = HashSet::new();
        let mut isolation = ir::Isolation::ReadCommitted;
        for cmd in cmds {
            let (Action::Create { machine, .. }, Some(idem)) = (&cmd.action, &cmd.idempotency) else {
                return None;
            };
            let body = &self.spec.machine(machine)?.create.body;
            if body.lock != ir::Lock::Optimistic || !keys.insert((&cmd.tenant, &idem.key)) {
                return None;
            }
            isolation = isolation.max(body.isolation);
        }
        Some(isolation)
    }

    async fn bulk_attempt(
        &self,
        cmds: &[Command],
        isolation: ir::Isolation,
    ) -> Result<Option<Vec<Executed>>, Stop> {
        let now = Utc::now();
        let mut plans = Vec::with_capacity(cmds.len());
        for cmd in cmds {
            plans.push(self.bulk_plan(cmd, now)?);
        }
        let txn = self.begin(isolation).await?;
        let Some(mut rows) = self.lock_rows(&txn, &plans, now).await? else {
            txn.rollback().await?;
            return Ok(None);
        };
        // Arrival order: each command's effects apply to what the ones before it left.
        for plan in &mut plans {
            let Plan::Create { tenant, effects, .. } = plan else { continue };
            match apply_effects(&mut rows, tenant, effects) {
                Ok(()) => {}
                Err(Some(rejection)) => *plan = Plan::Rejected(rejection),
                Err(None) => {
                    txn.rollback().await?;
                    return Ok(None);
                }
            }
        }
        self.write_rows(&txn, &rows, now).await?;
        let Some(outcomes) = self.insert_instances(&txn, cmds, &plans, now).await? else {
            txn.rollback().await?;
            return Ok(None);
        };

        let records: Vec<Bind<'_>> = cmds
            .iter()
            .zip(&outcomes)
            .filter_map(|(cmd, outcome)| {
                cmd.idempotency.as_ref().map(|i| self.record_row(cmd, i, outcome, now))
            })
            .collect();
        let written = insert_many(&txn, &self.plans.system.idempotency_put_many, &records).await?;
        if written.len() != cmds.len() {
            // A live record holds one of the keys: another request with it committed after
            // the lookup. The general path answers that command with its outcome.
            txn.rollback().await?;
            return Ok(None);
        }
        txn.commit().await?;
        Ok(Some(outcomes.into_iter().map(|outcome| Executed { outcome, replayed: false }).collect()))
    }

    /// One command's decisions before the database: a rejection, or its new instance and
    /// its effects. Errors other than rejections fail the batch.
    fn bulk_plan<'s>(&'s self, cmd: &Command, now: DateTime<Utc>) -> Result<Plan<'s>, Stop> {
        let Action::Create { machine, input } = &cmd.action else {
            return Err(Stop::Fail(StoreError::Internal(
                "the fast path got a command other than a create".into(),
            )));
        };
        let m = self
            .spec
            .machine(machine)
            .ok_or_else(|| StoreError::UnknownTarget(format!("machine `{machine}`")))?;
        let decided = prepare_create(m, input, now).and_then(|(fields, params)| {
            let env = Env { fields: &fields, params: &params, now };
            let effects = self.plan_effects(&m.create.body.effects, &env)?;
            Ok((fields, effects))
        });
        match decided {
            Ok((fields, effects)) => {
                Ok(Plan::Create { tenant: cmd.tenant.clone(), m, id: Uuid::now_v7(), fields, effects })
            }
            Err(Stop::Reject(rejection)) => Ok(Plan::Rejected(rejection)),
            Err(other) => Err(other),
        }
    }

    /// Locks every resource row the batch's effects touch, in the one lock order, and reads
    /// its effect fields. `None`: an amount or a field is not a whole number.
    async fn lock_rows<'s>(
        &self,
        txn: &DatabaseTransaction,
        plans: &[Plan<'s>],
        now: DateTime<Utc>,
    ) -> Result<Option<BTreeMap<RowId, Row<'s>>>, Stop> {
        let mut wanted: BTreeMap<RowId, (&ir::Resource, &Val)> = BTreeMap::new();
        for plan in plans {
            let Plan::Create { tenant, effects, .. } = plan else { continue };
            for e in effects {
                if !matches!(e.amount, Val::Int(_)) {
                    return Ok(None);
                }
                wanted.insert(row_id(e, tenant), (e.resource, &e.key));
            }
        }
        let mut rows = BTreeMap::new();
        for (id, (r, key)) in wanted {
            let plans = &self.plans.resources[&r.name];
            let b = Bind { tenant: &id.2, key: Some(key), now: Some(now), ..Bind::default() };
            let found = txn.query_one_raw(b.statement(self.plans.backend, &plans.lock)).await?;
            let mut values = BTreeMap::new();
            for f in r.fields.iter().filter(|f| crate::plan::effect_field(f)) {
                let v = match &found {
                    Some(row) => crate::rows::get_val(row, &f.name, f.ty)?,
                    None => crate::plan::zero(f),
                };
                if !matches!(v, Val::Int(_)) {
                    return Ok(None);
                }
                values.insert(f.name.clone(), v);
            }
            let version = match &found {
                Some(row) => row.try_get("", "version")?,
                None => 0,
            };
            let absent = found.is_none();
            let refused = absent && plans.ensure.is_none();
            rows.insert(
                id,
                Row { resource: r, key: key.clone(), values, version, absent, refused, changed: false },
            );
        }
        Ok(Some(rows))
    }

    /// Stores each row the batch changed: a missing one created from zeros first.
    async fn write_rows(
        &self,
        txn: &DatabaseTransaction,
        rows: &BTreeMap<RowId, Row<'_>>,
        now: DateTime<Utc>,
    ) -> Result<(), Stop> {
        for ((_, _, tenant), row) in rows.iter().filter(|(_, row)| row.changed) {
            let plans = &self.plans.resources[&row.resource.name];
            let mut b = Bind { tenant, key: Some(&row.key), now: Some(now), ..Bind::default() };
            if row.absent {
                let ensure = plans.ensure.as_ref().ok_or_else(|| {
                    StoreError::Internal(format!(
                        "{}: an effect applied to a row that cannot start from zeros",
                        row.resource.name
                    ))
                })?;
                if txn.execute_raw(b.statement(self.plans.backend, ensure)).await?.rows_affected() != 1 {
                    // Another transaction created the row after this one looked: start over.
                    return Err(Stop::Retry);
                }
            }
            b.version = Some(row.version);
            b.fields = Some(&row.values);
            txn.execute_raw(b.statement(self.plans.backend, &plans.write)).await?;
        }
        Ok(())
    }

    /// Inserts the applied commands' instances, journal, outbox and timer rows, a statement
    /// per table (and machine), and returns every command's outcome. `None`: an instance
    /// the insert did not return.
    async fn insert_instances(
        &self,
        txn: &DatabaseTransaction,
        cmds: &[Command],
        plans: &[Plan<'_>],
        now: DateTime<Utc>,
    ) -> Result<Option<Vec<Outcome>>, Stop> {
        let mut by_machine: BTreeMap<&str, (&ir::Machine, Vec<Bind<'_>>)> = BTreeMap::new();
        let (mut journal, mut outbox, mut timers) = (Vec::new(), Vec::new(), Vec::new());
        for (cmd, plan) in cmds.iter().zip(plans) {
            let (Plan::Create { m, id, fields, .. }, Action::Create { input, .. }) = (plan, &cmd.action)
            else {
                continue;
            };
            let entity = &id.to_string();
            let b = Bind {
                tenant: &cmd.tenant,
                id: Some(*id),
                now: Some(now),
                fields: Some(fields),
                ..Bind::default()
            };
            by_machine.entry(m.name.as_str()).or_insert_with(|| (*m, Vec::new())).1.push(b);
            let t = Transition {
                tenant: &cmd.tenant,
                machine: &m.name,
                entity,
                version: 1,
                event: &m.create.name,
                from: None,
                to: Some(&m.initial),
            };
            let [j, o] = journal_rows(cmd, t, &Json::Object(input.clone()), now);
            journal.push(j);
            outbox.push(o);
            timers.extend(timer_rows(&cmd.tenant, m, entity, &m.initial, now));
        }
        let mut records: HashMap<Uuid, Record> = HashMap::new();
        for (machine, (m, binds)) in &by_machine {
            for row in insert_many(txn, &self.plans.machines[*machine].insert_many, binds).await? {
                let id: Uuid = row.try_get("", "id")?;
                records.insert(id, machine_record(m, &row)?);
            }
        }
        let system = &self.plans.system;
        insert_many(txn, &system.journal_many, &journal).await?;
        insert_many(txn, &system.outbox_many, &outbox).await?;
        insert_many(txn, &system.timer_arm_many, &timers).await?;
        let mut outcomes = Vec::with_capacity(plans.len());
        for plan in plans {
            outcomes.push(match plan {
                Plan::Rejected(rejection) => Outcome::Rejected { rejection: rejection.clone() },
                Plan::Create { id, .. } => match records.remove(id) {
                    Some(instance) => Outcome::Applied { instance },
                    None => return Ok(None),
                },
            });
        }
        Ok(Some(outcomes))
    }
}

/// Applies one command's effects to the rows, all or nothing. `Err(Some)`: the rejection
/// the command gets (a field's check, or a missing row that cannot start from zeros);
/// `Err(None)`: a value out of range, which the general path decides.
fn apply_effects(
    rows: &mut BTreeMap<RowId, Row<'_>>,
    tenant: &str,
    effects: &[PlannedEffect<'_>],
) -> Result<(), Option<Rejection>> {
    // Each effect's new value, on top of this command's earlier effects on the same field.
    let mut staged: Vec<(RowId, &str, i64)> = Vec::with_capacity(effects.len());
    for e in effects {
        let id = row_id(e, tenant);
        let row = rows.get(&id).ok_or(None)?;
        let field = row.resource.fields.iter().find(|f| f.name == e.effect.field).ok_or(None)?;
        let rejection = || {
            Some(Rejection::ResourceCheck {
                resource: e.effect.resource.clone(),
                key: e.key_text.clone(),
                field: e.effect.field.clone(),
            })
        };
        if row.refused {
            return Err(rejection());
        }
        let (Val::Int(amount), Some(Val::Int(stored))) = (&e.amount, row.values.get(&field.name)) else {
            return Err(None);
        };
        let current = staged
            .iter()
            .rev()
            .find(|(i, f, _)| *i == id && *f == field.name)
            .map_or(*stored, |(_, _, v)| *v);
        let new = match e.effect.op {
            ir::DeltaOp::Add => current.checked_add(*amount),
            ir::DeltaOp::Sub => current.checked_sub(*amount),
        }
        .ok_or(None)?;
        if value::check(field, &Val::Int(new)).is_err() {
            return Err(rejection());
        }
        staged.push((id, field.name.as_str(), new));
    }
    // All of them hold: each is one version of its row, as its own statement would be.
    for (id, field, v) in staged {
        if let Some(row) = rows.get_mut(&id) {
            row.values.insert(field.to_string(), Val::Int(v));
            row.version += 1;
            row.changed = true;
        }
    }
    Ok(())
}

/// A multi-row insert of `rows` (in statements of at most `VALUES_PER_STATEMENT_MAX`
/// values), returning what the statement returns, row after row.
async fn insert_many(
    txn: &DatabaseTransaction,
    many: &Many,
    rows: &[Bind<'_>],
) -> Result<Vec<QueryResult>, Stop> {
    let mut out = Vec::new();
    let per = (VALUES_PER_STATEMENT_MAX / many.slots.len().max(1)).max(1);
    for chunk in rows.chunks(per) {
        let values: Vec<sea_orm::Value> = chunk.iter().flat_map(|b| b.values_of(&many.slots)).collect();
        let stmt = Statement::from_sql_and_values(txn.get_database_backend(), many.sql(chunk.len()), values);
        out.extend(txn.query_all_raw(stmt).await?);
    }
    Ok(out)
}
