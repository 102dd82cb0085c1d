//! One command's statements inside its transaction: a create's insert, an event's
//! conditional update (and the read that explains a refusal), an operation, the resource
//! effects in the one lock order, the journal and outbox rows, and the timers.

use super::{Executor, Stop, classify};
use crate::decide::{
    overflow, params_json, prepare_create, read_params, read_values, reject_unknown, why, wrong_state,
};
use crate::plan::{self, TransitionPlan};
use crate::rows::{Bind, Transition, journal_rows, machine_row, record_values, resource_row, timer_rows};
use crate::value::{self, Env, Val};
use crate::{Action, Command, Rejection, StoreError, StoredRow};
use chrono::{DateTime, Utc};
use ordo_spec::ir;
use sea_orm::{ConnectionTrait, DatabaseTransaction, QueryResult};
use serde_json::{Map, Value as Json};
use uuid::Uuid;

impl Executor {
    pub(crate) async fn apply(
        &self,
        conn: &DatabaseTransaction,
        cmd: &Command,
        now: DateTime<Utc>,
    ) -> Result<StoredRow, Stop> {
        match &cmd.action {
            Action::Create { machine, input } => self.create(conn, cmd, machine, input, now).await,
            Action::Fire { machine, id, event, params, if_match } => {
                self.fire(conn, cmd, machine, *id, event, params, *if_match, now).await
            }
            Action::Operate { resource, key, operation, params } => {
                self.operate(conn, cmd, resource, key, operation, params, now).await
            }
        }
    }

    async fn create(
        &self,
        conn: &DatabaseTransaction,
        cmd: &Command,
        machine: &str,
        input: &Map<String, Json>,
        now: DateTime<Utc>,
    ) -> Result<StoredRow, Stop> {
        let m = self.machine(machine)?;
        let plan = &self.plans.machines[machine];
        let create = &m.create;
        let (fields, params) = prepare_create(m, input, now)?;
        let id = Uuid::now_v7();
        let b = Bind {
            tenant: &cmd.tenant,
            id: Some(id),
            now: Some(now),
            fields: Some(&fields),
            ..Bind::default()
        };
        let row = conn
            .query_one_raw(b.statement(self.backend(), &plan.insert))
            .await?
            .ok_or_else(|| Stop::Fail(StoreError::Internal("INSERT returned no row".to_string())))?;
        let record = machine_row(m, &row)?;
        let env = Env { fields: &fields, params: &params, now };
        self.effects(conn, &cmd.tenant, &create.body.effects, &env).await?;
        let entity = id.to_string();
        let input_json = Json::Object(input.clone());
        self.journal(conn, cmd, &m.name, &entity, 1, &create.name, None, Some(&m.initial), &input_json, now)
            .await?;
        self.arm_timers(conn, &cmd.tenant, m, &entity, &m.initial, now).await?;
        Ok(record)
    }

    #[allow(clippy::too_many_arguments)]
    async fn fire(
        &self,
        conn: &DatabaseTransaction,
        cmd: &Command,
        machine: &str,
        id: Uuid,
        event: &str,
        params: &Map<String, Json>,
        if_match: Option<i64>,
        now: DateTime<Utc>,
    ) -> Result<StoredRow, Stop> {
        let m = self.machine(machine)?;
        let e = m
            .event(event)
            .ok_or_else(|| Stop::Fail(StoreError::UnknownTarget(format!("event `{event}`"))))?;
        let plans = &self.plans.machines[machine];
        let transitions = &plans.events[event];
        let params = read_params(e, params)?;
        let b = Bind {
            tenant: &cmd.tenant,
            id: Some(id),
            now: Some(now),
            version: if_match,
            params: Some(&params),
            ..Bind::default()
        };
        let pessimistic =
            e.transitions.iter().find(|t| t.body.lock != ir::Lock::Optimistic).map(|t| t.body.lock);

        // Which transition can apply: with one source, try it at once (one statement);
        // otherwise read the state first (locking the row in pessimistic mode).
        let (applied, chosen): (Option<QueryResult>, Option<&TransitionPlan>) =
            if transitions.len() == 1 && pessimistic.is_none() {
                let t = &transitions[0];
                (self.run_update(conn, &b, t, if_match).await?, Some(t))
            } else {
                let select = match pessimistic {
                    Some(mode) => plan::lock_variant(&plans.lock, mode, self.backend()),
                    None => plans.select.clone(),
                };
                let current = conn.query_one_raw(b.statement(self.backend(), &select)).await?;
                let Some(current) = current else {
                    if pessimistic == Some(ir::Lock::PessimisticSkipLocked) {
                        // Absent under SKIP LOCKED may mean locked: look without the lock.
                        if conn.query_one_raw(b.statement(self.backend(), &plans.select)).await?.is_some() {
                            return Err(Stop::Fail(StoreError::Busy {
                                reason: "the row is locked (skip locked)".to_string(),
                            }));
                        }
                    }
                    return Err(Rejection::NotFound.into());
                };
                let state: String = current.try_get("", "state")?;
                let version: i64 = current.try_get("", "version")?;
                if let Some(expected) = if_match
                    && expected != version
                {
                    return Err(Rejection::StaleVersion { current: version }.into());
                }
                match transitions.iter().find(|t| t.from == state) {
                    None => return Err(wrong_state(m, state).into()),
                    Some(t) => (self.run_update(conn, &b, t, if_match).await?, Some(t)),
                }
            };
        let (Some(row), Some(t)) = (applied, chosen) else {
            return Err(self.explain(conn, &b, m, transitions, if_match).await);
        };
        let record = machine_row(m, &row)?;
        let fields = record_values(m, &row)?;
        let transition = e
            .transition_from(&t.from)
            .ok_or_else(|| Stop::Fail(StoreError::Internal("transition vanished".to_string())))?;
        let env = Env { fields: &fields, params: &params, now };
        self.effects(conn, &cmd.tenant, &transition.body.effects, &env).await?;
        let entity = id.to_string();
        let params_json = params_json(&params);
        self.journal(
            conn,
            cmd,
            &m.name,
            &entity,
            record.version,
            event,
            Some(&t.from),
            Some(&t.to),
            &params_json,
            now,
        )
        .await?;
        if m.timers_in(&t.from).next().is_some() {
            let mut cancel = Bind { tenant: &cmd.tenant, ..Bind::default() };
            cancel.values.insert("machine", Val::Text(m.name.clone()));
            cancel.values.insert("entity", Val::Text(entity.clone()));
            cancel.values.insert("state", Val::Text(t.from.clone()));
            conn.execute_raw(cancel.statement(self.backend(), &self.plans.system.timer_cancel)).await?;
        }
        self.arm_timers(conn, &cmd.tenant, m, &entity, &t.to, now).await?;
        Ok(record)
    }

    async fn run_update(
        &self,
        conn: &DatabaseTransaction,
        b: &Bind<'_>,
        t: &TransitionPlan,
        if_match: Option<i64>,
    ) -> Result<Option<QueryResult>, Stop> {
        let sql = if if_match.is_some() { &t.update_if_match } else { &t.update };
        Ok(conn.query_one_raw(b.statement(self.backend(), sql)).await?)
    }

    /// After an update that changed nothing: one read that says why. Finding nothing wrong
    /// means another transaction moved the row in between: the command is tried again.
    async fn explain(
        &self,
        conn: &DatabaseTransaction,
        b: &Bind<'_>,
        m: &ir::Machine,
        transitions: &[TransitionPlan],
        if_match: Option<i64>,
    ) -> Stop {
        let plans = &self.plans.machines[&m.name];
        let current = match conn.query_one_raw(b.statement(self.backend(), &plans.select)).await {
            Ok(Some(row)) => row,
            Ok(None) => return Rejection::NotFound.into(),
            Err(e) => return classify(e),
        };
        let (state, version): (String, i64) =
            match (current.try_get("", "state"), current.try_get("", "version")) {
                (Ok(s), Ok(v)) => (s, v),
                (Err(e), _) | (_, Err(e)) => return classify(e),
            };
        if let Some(expected) = if_match
            && expected != version
        {
            return Rejection::StaleVersion { current: version }.into();
        }
        let Some(t) = transitions.iter().find(|t| t.from == state) else {
            return wrong_state(m, state).into();
        };
        match conn.query_one_raw(b.statement(self.backend(), &t.explain.sql)).await {
            Ok(Some(row)) => why(&row, &t.explain).map_or(Stop::Retry, Stop::Reject),
            Ok(None) => Rejection::NotFound.into(),
            Err(e) => classify(e),
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn operate(
        &self,
        conn: &DatabaseTransaction,
        cmd: &Command,
        resource: &str,
        key: &Json,
        operation: &str,
        params: &Map<String, Json>,
        now: DateTime<Utc>,
    ) -> Result<StoredRow, Stop> {
        let r = self.resource(resource)?;
        let op = r
            .operations
            .iter()
            .find(|o| o.name == operation)
            .ok_or_else(|| Stop::Fail(StoreError::UnknownTarget(format!("operation `{operation}`"))))?;
        let plans = &self.plans.resources[resource];
        let op_plan = &plans.operations[operation];
        let key = value::from_json(&r.key, Some(key))
            .map_err(|e| Rejection::InvalidInput { field: e.field, reason: e.reason })?;
        reject_unknown(params, &op.params.iter().collect::<Vec<_>>(), operation)?;
        let params = read_values(&op.params, params)?;
        let b = Bind {
            tenant: &cmd.tenant,
            key: Some(&key),
            now: Some(now),
            params: Some(&params),
            ..Bind::default()
        };
        let mut updated = conn.query_one_raw(b.statement(self.backend(), &op_plan.update)).await?;
        if updated.is_none()
            && let Some(ensure) = &plans.ensure
            && conn.execute_raw(b.statement(self.backend(), ensure)).await?.rows_affected() == 1
        {
            // The row did not exist: it starts from zeros, and the operation applies to that.
            updated = conn.query_one_raw(b.statement(self.backend(), &op_plan.update)).await?;
        }
        let Some(row) = updated else {
            let explained = conn.query_one_raw(b.statement(self.backend(), &op_plan.explain.sql)).await?;
            return Err(match explained {
                None => Rejection::NotFound.into(),
                Some(row) => match why(&row, &op_plan.explain) {
                    Some(Rejection::CheckFailed { field, .. }) => {
                        Rejection::ResourceCheck { resource: r.name.clone(), key: key.to_key_text(), field }
                            .into()
                    }
                    Some(other) => other.into(),
                    None => Stop::Retry,
                },
            });
        };
        let record = resource_row(r, &row)?;
        let mut journal_params = Map::new();
        journal_params.insert(r.key.name.clone(), key.to_json());
        for (k, v) in &params {
            journal_params.insert(k.clone(), v.to_json());
        }
        let entity = key.to_key_text();
        self.journal(
            conn,
            cmd,
            &r.name,
            &entity,
            record.version,
            operation,
            None,
            None,
            &Json::Object(journal_params),
            now,
        )
        .await?;
        Ok(record)
    }

    /// Applies resource effects in one fixed order (table, then key), so that no two
    /// transactions wait for each other's rows in a cycle.
    #[tracing::instrument(level = "debug", name = "db.effects", skip_all)]
    async fn effects(
        &self,
        conn: &DatabaseTransaction,
        tenant: &str,
        effects: &[ir::Effect],
        env: &Env<'_>,
    ) -> Result<(), Stop> {
        for PlannedEffect { key_text, key, effect: e, amount, .. } in self.plan_effects(effects, env)? {
            let plans = &self.plans.resources[&e.resource];
            let sql = &plans.effects[&(e.field.clone(), e.op)];
            let mut b = Bind { tenant, key: Some(&key), now: Some(env.now), ..Bind::default() };
            b.values.insert("amount", amount);
            let rejection = || Rejection::ResourceCheck {
                resource: e.resource.clone(),
                key: key_text.clone(),
                field: e.field.clone(),
            };
            if conn.query_one_raw(b.statement(self.backend(), sql)).await?.is_some() {
                continue;
            }
            // No row changed: either the row is missing (it starts from zeros) or the
            // change would break the field's check.
            let Some(ensure) = &plans.ensure else { return Err(rejection().into()) };
            let created = conn.execute_raw(b.statement(self.backend(), ensure)).await?.rows_affected();
            if created == 0 || conn.query_one_raw(b.statement(self.backend(), sql)).await?.is_none() {
                return Err(rejection().into());
            }
        }
        Ok(())
    }

    /// A body's effects with their keys and amounts evaluated, in the one lock order.
    pub(crate) fn plan_effects<'s>(
        &'s self,
        effects: &'s [ir::Effect],
        env: &Env<'_>,
    ) -> Result<Vec<PlannedEffect<'s>>, Stop> {
        let mut planned = Vec::with_capacity(effects.len());
        for e in effects {
            let key = value::eval(&e.key, env).map_err(overflow(&e.field))?;
            let amount = value::eval(&e.amount, env).map_err(overflow(&e.field))?;
            let r = self
                .spec
                .resource(&e.resource)
                .ok_or_else(|| Stop::Fail(StoreError::Internal(format!("no resource {}", e.resource))))?;
            planned.push(PlannedEffect { resource: r, key_text: key.to_key_text(), key, effect: e, amount });
        }
        planned.sort_by(|a, b| (&a.resource.table, &a.key_text).cmp(&(&b.resource.table, &b.key_text)));
        Ok(planned)
    }

    #[allow(clippy::too_many_arguments)]
    #[tracing::instrument(level = "debug", name = "db.journal", skip_all)]
    async fn journal(
        &self,
        conn: &DatabaseTransaction,
        cmd: &Command,
        machine: &str,
        entity: &str,
        version: i64,
        event: &str,
        from: Option<&str>,
        to: Option<&str>,
        params: &Json,
        now: DateTime<Utc>,
    ) -> Result<(), Stop> {
        let t = Transition { tenant: &cmd.tenant, machine, entity, version, event, from, to };
        let [journal, outbox] = journal_rows(cmd, t, params, now);
        conn.execute_raw(journal.statement(self.backend(), &self.plans.system.journal)).await?;
        conn.execute_raw(outbox.statement(self.backend(), &self.plans.system.outbox)).await?;
        Ok(())
    }

    #[tracing::instrument(level = "debug", name = "db.timers", skip_all)]
    async fn arm_timers(
        &self,
        conn: &DatabaseTransaction,
        tenant: &str,
        m: &ir::Machine,
        entity: &str,
        state: &str,
        now: DateTime<Utc>,
    ) -> Result<(), Stop> {
        for b in timer_rows(tenant, m, entity, state, now) {
            conn.execute_raw(b.statement(self.backend(), &self.plans.system.timer_arm)).await?;
        }
        Ok(())
    }
}

/// One resource effect of a body, its key and amount evaluated.
pub(crate) struct PlannedEffect<'s> {
    pub resource: &'s ir::Resource,
    pub key_text: String,
    pub key: Val,
    pub effect: &'s ir::Effect,
    pub amount: Val,
}
