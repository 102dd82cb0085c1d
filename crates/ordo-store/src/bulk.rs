//! Group commit's fast path: a batch of keyed creates and events runs in one transaction
//! with a few statements per command and no savepoints.
//!
//! The instances the batch's events address are locked first, once each, in the one lock
//! order (table, tenant, id). Everything a command decides is then decided in Rust, in
//! arrival order: a create's input, guards, sets and field checks; an event's parameters,
//! the instance's state and version, the transition's guards, sets and the checks of what
//! they set, exactly as the conditional `UPDATE` and its explanation would; and every
//! effect's key and amount. The resource rows those effects touch are locked once each, in
//! the one lock order (table, then key), and the effects are applied to them in memory in
//! arrival order: a command whose effect would break a resource field's check is rejected,
//! exactly as if it had run alone after the commands before it, and changes nothing. Then
//! each changed resource row is written once, each event's instance once, and the new
//! instances, journal, outbox, timer and idempotency rows go in one multi-row `INSERT` per
//! table. The database's own constraints still hold every row.
//!
//! Whatever this path does not decide exactly (a create that locks other than
//! optimistically, an event that locks with NOWAIT or SKIP LOCKED, an expression that
//! overflows, an amount that is not a whole number, a sum out of range, a key or an
//! instance used twice in the batch, a record another request wrote meanwhile) makes it
//! roll back and say so (`None`): the batch then takes the general path, a savepoint per
//! command.
//!
//! The resource rows and the multi-row statements are in `bulk/rows.rs`.

use crate::decide::{params_json, prepare_create, read_params, set_check_failed, wrong_state};
use crate::exec::{Executor, PlannedEffect, Stop};
use crate::rows::{Bind, Transition, journal_rows, machine_row, record_values, timer_rows};
use crate::value::{self, Env, Val};
use crate::{Action, Command, Executed, Outcome, Rejection, StoreError, StoredRow};
use chrono::{DateTime, Utc};
use ordo_spec::ir;
use sea_orm::{ConnectionTrait, DatabaseTransaction};
use serde_json::{Map, Value as Json};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::Ordering::Relaxed;
use tracing::Instrument as _;
use uuid::Uuid;

mod rows;
use rows::{apply_effects, insert_many};

/// An instance an event of the batch addresses: `(machine, tenant, id)`.
type InstanceId = (String, String, Uuid);

/// An instance as the batch locked it.
struct Current {
    state: String,
    version: i64,
    fields: BTreeMap<String, Val>,
}

/// What one command of the batch does, decided before it writes.
enum Plan<'s> {
    Rejected(Rejection),
    Create {
        tenant: String,
        m: &'s ir::Machine,
        id: Uuid,
        fields: BTreeMap<String, Val>,
        effects: Vec<PlannedEffect<'s>>,
    },
    Fire {
        tenant: String,
        m: &'s ir::Machine,
        id: Uuid,
        event: &'s str,
        from: String,
        to: &'s str,
        /// The instance's version after the transition.
        version: i64,
        /// Its fields after the transition's sets.
        fields: BTreeMap<String, Val>,
        params: BTreeMap<String, Val>,
        effects: Vec<PlannedEffect<'s>>,
    },
}

impl<'s> Plan<'s> {
    /// The tenant and the effects of a command that is still to apply.
    fn effects(&self) -> Option<(&str, &[PlannedEffect<'s>])> {
        match self {
            Plan::Rejected(_) => None,
            Plan::Create { tenant, effects, .. } | Plan::Fire { tenant, effects, .. } => {
                Some((tenant, effects))
            }
        }
    }
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

    /// The isolation the batch runs at, if the fast path can run it: two or more commands
    /// it can take ([`Executor::bulk_kind`]) with distinct keys and distinct instances.
    fn bulk_isolation(&self, cmds: &[Command]) -> Option<ir::Isolation> {
        if cmds.len() < 2 {
            return None;
        }
        let (mut keys, mut instances) = (HashSet::new(), HashSet::new());
        let mut isolation = ir::Isolation::ReadCommitted;
        for cmd in cmds {
            isolation = isolation.max(self.bulk_kind(cmd)?);
            if !keys.insert((&cmd.tenant, &cmd.idempotency.as_ref()?.key)) {
                return None;
            }
            if let Action::Fire { machine, id, .. } = &cmd.action
                && !instances.insert((&cmd.tenant, machine, *id))
            {
                return None;
            }
        }
        Some(isolation)
    }

    /// The isolation a command runs at, if the fast path can take it: a keyed create that
    /// locks optimistically, or a keyed event none of whose transitions locks with NOWAIT
    /// or SKIP LOCKED (the fast path locks the instance and waits, as `lock pessimistic`).
    pub(crate) fn bulk_kind(&self, cmd: &Command) -> Option<ir::Isolation> {
        cmd.idempotency.as_ref()?;
        match &cmd.action {
            Action::Create { machine, .. } => {
                let body = &self.spec.machine(machine)?.create.body;
                (body.lock == ir::Lock::Optimistic).then_some(body.isolation)
            }
            Action::Fire { machine, event, .. } => {
                let e = self.spec.machine(machine)?.event(event)?;
                let waits =
                    |t: &ir::Transition| matches!(t.body.lock, ir::Lock::Optimistic | ir::Lock::Pessimistic);
                e.transitions
                    .iter()
                    .all(waits)
                    .then(|| e.transitions.iter().map(|t| t.body.isolation).max())?
            }
            Action::Operate { .. } => None,
        }
    }

    async fn bulk_attempt(
        &self,
        cmds: &[Command],
        isolation: ir::Isolation,
    ) -> Result<Option<Vec<Executed>>, Stop> {
        let now = Utc::now();
        let txn = self.begin(isolation).await?;
        let current = self.lock_instances(&txn, cmds).await?;
        let mut plans = Vec::with_capacity(cmds.len());
        for cmd in cmds {
            match self.bulk_plan(cmd, &current, now)? {
                Some(plan) => plans.push(plan),
                None => {
                    txn.rollback().await?;
                    return Ok(None);
                }
            }
        }
        let Some(mut rows) = self.lock_rows(&txn, &plans).await? else {
            txn.rollback().await?;
            return Ok(None);
        };
        // Arrival order: each command's effects apply to what the ones before it left.
        for plan in &mut plans {
            let applied = match plan.effects() {
                Some((tenant, effects)) => apply_effects(&mut rows, tenant, effects),
                None => continue,
            };
            match applied {
                Ok(()) => {}
                Err(Some(rejection)) => *plan = Plan::Rejected(rejection),
                Err(None) => {
                    txn.rollback().await?;
                    return Ok(None);
                }
            }
        }
        self.write_rows(&txn, &rows, now).await?;
        let Some(outcomes) = self.write_instances(&txn, cmds, &plans, now).await? else {
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

    /// Locks the instances the batch's events address, in the one lock order (machine
    /// table, tenant, id: one `SELECT ... ORDER BY id FOR UPDATE` per table and tenant),
    /// and reads them. An instance that does not exist is not in the map.
    async fn lock_instances(
        &self,
        txn: &DatabaseTransaction,
        cmds: &[Command],
    ) -> Result<HashMap<InstanceId, Current>, Stop> {
        let mut wanted: BTreeMap<(&str, &str, &str), BTreeSet<Uuid>> = BTreeMap::new();
        for cmd in cmds {
            if let Action::Fire { machine, id, .. } = &cmd.action {
                wanted.entry((&self.machine(machine)?.table, machine, &cmd.tenant)).or_default().insert(*id);
            }
        }
        let mut found = HashMap::new();
        for ((table, machine, tenant), ids) in wanted {
            let m = self.machine(machine)?;
            let ids = ids.into_iter().map(|id| sea_orm::Value::Uuid(Some(id)));
            // A uuid's order is its bytes', as `Uuid`'s is.
            let locked = self.lock_in(table, &crate::plan::machine_columns(m), tenant, "id", ids, "\"id\"");
            for row in txn.query_all_raw(locked).await? {
                let current = Current {
                    state: row.try_get("", "state")?,
                    version: row.try_get("", "version")?,
                    fields: record_values(m, &row)?,
                };
                found.insert((m.name.clone(), tenant.to_string(), row.try_get("", "id")?), current);
            }
        }
        Ok(found)
    }

    /// One command's decisions before it writes: a rejection, or what it writes. Errors
    /// other than rejections fail the batch; `None` hands it to the general path.
    fn bulk_plan<'s>(
        &'s self,
        cmd: &Command,
        instances: &HashMap<InstanceId, Current>,
        now: DateTime<Utc>,
    ) -> Result<Option<Plan<'s>>, Stop> {
        let decided = match &cmd.action {
            Action::Create { machine, input } => self.create_plan(&cmd.tenant, machine, input, now).map(Some),
            Action::Fire { machine, id, event, params, if_match } => {
                let current = instances.get(&(machine.clone(), cmd.tenant.clone(), *id));
                self.fire_plan(&cmd.tenant, machine, *id, event, params, *if_match, current, now)
            }
            Action::Operate { .. } => {
                Err(Stop::Fail(StoreError::Internal("the fast path got an operation".into())))
            }
        };
        match decided {
            Err(Stop::Reject(rejection)) => Ok(Some(Plan::Rejected(rejection))),
            other => other,
        }
    }

    fn create_plan<'s>(
        &'s self,
        tenant: &str,
        machine: &str,
        input: &Map<String, Json>,
        now: DateTime<Utc>,
    ) -> Result<Plan<'s>, Stop> {
        let m = self.machine(machine)?;
        let (fields, params) = prepare_create(m, input, now)?;
        let env = Env { fields: &fields, params: &params, now };
        let effects = self.plan_effects(&m.create.body.effects, &env)?;
        Ok(Plan::Create { tenant: tenant.to_string(), m, id: Uuid::now_v7(), fields, effects })
    }

    /// An event decided against its locked instance as the conditional `UPDATE` and its
    /// explanation decide it: not found, stale version, wrong state, the first false guard,
    /// the first set value that breaks its field's check, in that order. `None`: an
    /// expression overflowed (the database decides that).
    #[allow(clippy::too_many_arguments)]
    fn fire_plan<'s>(
        &'s self,
        tenant: &str,
        machine: &str,
        id: Uuid,
        event: &str,
        input: &Map<String, Json>,
        if_match: Option<i64>,
        current: Option<&Current>,
        now: DateTime<Utc>,
    ) -> Result<Option<Plan<'s>>, Stop> {
        let m = self.machine(machine)?;
        let e = m.event(event).ok_or_else(|| StoreError::UnknownTarget(format!("event `{event}`")))?;
        let params = read_params(e, input)?;
        let Some(cur) = current else { return Err(Rejection::NotFound.into()) };
        if let Some(expected) = if_match
            && expected != cur.version
        {
            return Err(Rejection::StaleVersion { current: cur.version }.into());
        }
        let Some(t) = e.transition_from(&cur.state) else {
            return Err(wrong_state(m, cur.state.clone()).into());
        };
        let env = Env { fields: &cur.fields, params: &params, now };
        for g in &t.body.guards {
            let Ok(v) = value::eval(&g.expr, &env) else { return Ok(None) };
            if !value::holds(&v) {
                return Err(
                    Rejection::GuardFailed { guard: g.name.clone(), condition: g.text.clone() }.into()
                );
            }
        }
        // Every set reads the row as it was, as an UPDATE's SET does.
        let mut fields = cur.fields.clone();
        for s in &t.body.sets {
            let Ok(v) = value::eval(&s.value, &env) else { return Ok(None) };
            fields.insert(s.field.clone(), v);
        }
        for s in &t.body.sets {
            if let (Some(f), Some(v)) = (m.field(&s.field), fields.get(&s.field))
                && value::check(f, v).is_err()
            {
                return Err(set_check_failed(&s.field).into());
            }
        }
        let effects = self.plan_effects(&t.body.effects, &Env { fields: &fields, params: &params, now })?;
        Ok(Some(Plan::Fire {
            tenant: tenant.to_string(),
            m,
            id,
            event: &e.name,
            from: cur.state.clone(),
            to: &t.to,
            version: cur.version + 1,
            fields,
            params,
            effects,
        }))
    }

    /// Writes what the applied commands decided: the new instances (a multi-row insert per
    /// machine), each event's instance, and the journal, outbox and timer rows (a multi-row
    /// insert per table); returns every command's outcome. `None`: an instance the insert
    /// did not return.
    async fn write_instances(
        &self,
        txn: &DatabaseTransaction,
        cmds: &[Command],
        plans: &[Plan<'_>],
        now: DateTime<Utc>,
    ) -> Result<Option<Vec<Outcome>>, Stop> {
        let backend = self.plans.backend;
        let mut by_machine: BTreeMap<&str, (&ir::Machine, Vec<Bind<'_>>)> = BTreeMap::new();
        let (mut journal, mut outbox, mut timers) = (Vec::new(), Vec::new(), Vec::new());
        // The events' instances, as they are written (per machine).
        let mut moved: BTreeMap<&str, (&ir::Machine, Vec<Bind<'_>>)> = BTreeMap::new();
        // The states with timers that events left (by tenant, machine and state): the
        // instances' timers there go.
        let mut left: BTreeMap<(String, String, String), Vec<String>> = BTreeMap::new();
        for (cmd, plan) in cmds.iter().zip(plans) {
            let (t, params) = match plan {
                Plan::Rejected(_) => continue,
                Plan::Create { m, id, fields, .. } => {
                    let Action::Create { input, .. } = &cmd.action else { continue };
                    let b = Bind {
                        tenant: &cmd.tenant,
                        id: Some(*id),
                        now: Some(now),
                        fields: Some(fields),
                        ..Bind::default()
                    };
                    by_machine.entry(m.name.as_str()).or_insert_with(|| (*m, Vec::new())).1.push(b);
                    let t = (*m, id.to_string(), 1, m.create.name.as_str(), None, m.initial.as_str());
                    (t, Json::Object(input.clone()))
                }
                Plan::Fire { m, id, event, from, to, version, fields, params, .. } => {
                    let mut b = Bind {
                        tenant: &cmd.tenant,
                        id: Some(*id),
                        now: Some(now),
                        version: Some(*version),
                        fields: Some(fields),
                        ..Bind::default()
                    };
                    b.values.insert("state", Val::Text(to.to_string()));
                    moved.entry(m.name.as_str()).or_insert_with(|| (*m, Vec::new())).1.push(b);
                    let entity = id.to_string();
                    if m.timers_in(from).next().is_some() {
                        left.entry((cmd.tenant.clone(), m.name.clone(), from.clone()))
                            .or_default()
                            .push(entity.clone());
                    }
                    ((*m, entity, *version, *event, Some(from.as_str()), *to), params_json(params))
                }
            };
            let (m, entity, version, event, from, to) = t;
            let transition = Transition {
                tenant: &cmd.tenant,
                machine: &m.name,
                entity: &entity,
                version,
                event,
                from,
                to: Some(to),
            };
            let [j, o] = journal_rows(cmd, transition, &params, now);
            journal.push(j);
            outbox.push(o);
            timers.extend(timer_rows(&cmd.tenant, m, &entity, to, now));
        }
        // The instances written, new and moved, by id (a batch's events address distinct
        // instances, and new ids are new).
        let mut written: HashMap<Uuid, StoredRow> = HashMap::new();
        for (machine, (m, binds)) in &by_machine {
            for row in insert_many(txn, &self.plans.machines[*machine].insert_many, binds).await? {
                written.insert(row.try_get("", "id")?, machine_row(m, &row)?);
            }
        }
        for (machine, (m, binds)) in &moved {
            for row in insert_many(txn, &self.plans.machines[*machine].write_many, binds).await? {
                written.insert(row.try_get("", "id")?, machine_row(m, &row)?);
            }
        }
        if !left.is_empty() {
            use sea_orm::sea_query::{Alias, Condition, Expr, ExprTrait, Query};
            // `entity IN (...)` per tenant, machine and state left: a list of 4-tuples would
            // be planned as an OR of every one, each row checked against all of them.
            let mut which = Condition::any();
            for ((tenant, machine, state), entities) in left {
                let col = |c: &str| Expr::col(Alias::new(c));
                which = which.add(
                    col("tenant")
                        .eq(tenant)
                        .and(col("machine").eq(machine))
                        .and(col("state").eq(state))
                        .and(col("entity").is_in(entities)),
                );
            }
            let cancel =
                Query::delete().from_table(Alias::new(crate::schema::TIMERS)).cond_where(which).to_owned();
            txn.execute_raw(backend.build(&cancel)).await?;
        }
        let system = &self.plans.system;
        insert_many(txn, &system.journal_many, &journal).await?;
        insert_many(txn, &system.outbox_many, &outbox).await?;
        insert_many(txn, &system.timer_arm_many, &timers).await?;
        let mut outcomes = Vec::with_capacity(plans.len());
        for plan in plans {
            let instance = match plan {
                Plan::Rejected(rejection) => {
                    outcomes.push(Outcome::Rejected { rejection: rejection.clone() });
                    continue;
                }
                Plan::Create { id, .. } | Plan::Fire { id, .. } => written.remove(id),
            };
            match instance {
                Some(instance) => outcomes.push(Outcome::Applied { row: instance }),
                None => return Ok(None),
            }
        }
        Ok(Some(outcomes))
    }
}
