//! The transaction executor: one database transaction per command, holding the machine row,
//! the resource effects (in one fixed lock order), the journal row, the outbox row, the
//! timers and the idempotency record, or none of them.

use crate::decide::{
    overflow, params_json, prepare_create, read_params, read_values, reject_unknown, why, wrong_state,
};
use crate::plan::{self, Plans, TransitionPlan};
use crate::rows::{
    Bind, Transition, journal_rows, machine_record, record_values, resource_record, timer_rows,
};
use crate::value::{self, Env, Val};
use crate::{Action, Command, Executed, Outcome, Record, Rejection, StoreConfig, StoreError};
use chrono::{DateTime, Utc};
use ordo_spec::ir;
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr, IsolationLevel, QueryResult,
    SqliteTransactionMode, TransactionOptions, TransactionTrait,
};
use serde_json::{Map, Value as Json};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use tracing::Instrument as _;
use uuid::Uuid;

/// How a step of a command ended when it did not apply.
pub(crate) enum Stop {
    /// Decided by the lifecycle: stored as the command's outcome.
    Reject(Rejection),
    /// Transient (serialization failure, deadlock, lost race): the command is tried again.
    Retry,
    Fail(StoreError),
}

impl From<DbErr> for Stop {
    fn from(e: DbErr) -> Stop {
        classify(e)
    }
}

impl From<StoreError> for Stop {
    fn from(e: StoreError) -> Stop {
        Stop::Fail(e)
    }
}

impl From<Rejection> for Stop {
    fn from(r: Rejection) -> Stop {
        Stop::Reject(r)
    }
}

/// The SQLSTATE (PostgreSQL) or result code (SQLite) of a database error, if it has one.
fn db_code(e: &DbErr) -> Option<String> {
    let rt = match e {
        DbErr::Exec(rt) | DbErr::Query(rt) | DbErr::Conn(rt) => rt,
        _ => return None,
    };
    match rt {
        sea_orm::RuntimeErr::SqlxError(e) => {
            e.as_database_error().and_then(|d| d.code()).map(|c| c.into_owned())
        }
        _ => None,
    }
}

/// Sorts a database error into retry (serialization failure, deadlock, SQLite busy),
/// busy (lock not available under NOWAIT), unavailable (connection) or internal.
pub(crate) fn classify(e: DbErr) -> Stop {
    match db_code(&e).as_deref() {
        Some("40001" | "40P01") => return Stop::Retry,
        // SQLITE_BUSY and its extended codes: another writer holds the database.
        Some("5" | "261" | "517" | "773") => return Stop::Retry,
        Some("55P03") => {
            return Stop::Fail(StoreError::Busy { reason: "the row is locked (nowait)".to_string() });
        }
        _ => {}
    }
    Stop::Fail(StoreError::from(e))
}

pub(crate) struct Executor {
    pub db: DatabaseConnection,
    pub spec: Arc<ir::Spec>,
    pub plans: Arc<Plans>,
    pub config: StoreConfig,
    pub stats: Stats,
}

/// Counters of the executor's work, read by the server's metrics.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub retries: AtomicU64,
    pub begins: AtomicU64,
    /// Time spent getting a connection from the pool and beginning, in microseconds.
    pub begin_wait_us: AtomicU64,
    /// Batches that ran on the fast path (`bulk`): a fixed number of statements each.
    pub bulk_batches: AtomicU64,
}

impl Executor {
    pub(crate) fn backend(&self) -> DbBackend {
        self.plans.backend
    }

    /// The isolation level a command runs at: its body's, the strictest when an event has
    /// several transitions (which one applies is known only inside the transaction).
    fn isolation(&self, action: &Action) -> ir::Isolation {
        let bodies: Vec<&ir::Body> = match action {
            Action::Create { machine, .. } => {
                self.spec.machine(machine).map(|m| vec![&m.create.body]).unwrap_or_default()
            }
            Action::Fire { machine, event, .. } => self
                .spec
                .machine(machine)
                .and_then(|m| m.event(event))
                .map(|e| e.transitions.iter().map(|t| &t.body).collect())
                .unwrap_or_default(),
            Action::Operate { resource, operation, .. } => self
                .spec
                .resource(resource)
                .and_then(|r| r.operations.iter().find(|o| o.name == *operation))
                .map(|o| vec![&o.body])
                .unwrap_or_default(),
        };
        bodies.iter().map(|b| b.isolation).max().unwrap_or(ir::Isolation::ReadCommitted)
    }

    #[tracing::instrument(level = "debug", name = "db.begin", skip_all)]
    pub(crate) async fn begin(&self, isolation: ir::Isolation) -> Result<DatabaseTransaction, Stop> {
        let options = match self.backend() {
            // SQLite has one writer: take the write lock at BEGIN, so that two transactions
            // never both read and then fail to upgrade (the "database is locked" deadlock).
            DbBackend::Sqlite => TransactionOptions {
                sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
                ..TransactionOptions::default()
            },
            // Read committed is PostgreSQL's default: saying so would cost a round trip
            // (`SET TRANSACTION`) on every command for nothing.
            _ => TransactionOptions {
                isolation_level: match isolation {
                    ir::Isolation::ReadCommitted => None,
                    ir::Isolation::RepeatableRead => Some(IsolationLevel::RepeatableRead),
                    ir::Isolation::Serializable => Some(IsolationLevel::Serializable),
                },
                ..TransactionOptions::default()
            },
        };
        let started = std::time::Instant::now();
        let txn = self.db.begin_with_options(options).await;
        let waited = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.stats.begins.fetch_add(1, Relaxed);
        self.stats.begin_wait_us.fetch_add(waited, Relaxed);
        Ok(txn?)
    }

    /// Runs commands in one transaction, each with its own outcome, retrying transient
    /// failures of the whole transaction with jittered backoff up to `config.retries_max`
    /// times, then answering `Busy`. One command is a batch of one.
    pub async fn execute_batch(&self, cmds: &[Command]) -> Result<Vec<Executed>, StoreError> {
        // A single keyed command whose outcome is recorded is answered from the record with
        // no transaction: a retry costs one read.
        if let [cmd] = cmds
            && cmd.idempotency.is_some()
        {
            if let Some(done) = self.recorded(cmd).await? {
                return Ok(vec![done]);
            }
            return self.run(cmds, true).await;
        }
        self.run(cmds, false).await
    }

    /// The outcome recorded under a keyed command's key, if any: its replay, or `KeyReused`
    /// when the key was used for another request. One read, outside any transaction.
    pub async fn recorded(&self, cmd: &Command) -> Result<Option<Executed>, StoreError> {
        let Some(idem) = &cmd.idempotency else { return Ok(None) };
        let found = self.stored(&self.db, &cmd.tenant, &idem.key, Utc::now()).await.map_err(stop_to_error)?;
        Ok(found.map(|f| replay(f, &idem.fingerprint)))
    }

    /// Runs the commands in a transaction, retried as `execute_batch` says. `looked_up`: the
    /// (single) command's record was just looked for and was not there, so the first attempt
    /// does not read it again; its record's insert still finds a winner that commits meanwhile.
    #[tracing::instrument(level = "debug", name = "store.execute", skip_all, fields(commands = cmds.len()))]
    pub async fn run(&self, cmds: &[Command], mut looked_up: bool) -> Result<Vec<Executed>, StoreError> {
        for cmd in cmds {
            self.check_target(&cmd.action)?;
        }
        let isolation =
            cmds.iter().map(|c| self.isolation(&c.action)).max().unwrap_or(ir::Isolation::ReadCommitted);
        let mut tries = 0;
        loop {
            match self.attempt(cmds, isolation, looked_up).await {
                Ok(done) => return Ok(done),
                Err(stop) => self.after_failure(&mut tries, stop).await?,
            }
            // A retry reads the record again, in its transaction.
            looked_up = false;
        }
    }

    /// After a failed attempt: `Ok` to try again (after a jittered backoff), at most
    /// `config.retries_max` times for transient failures; otherwise the error to answer.
    pub(crate) async fn after_failure(&self, tries: &mut u32, stop: Stop) -> Result<(), StoreError> {
        match stop {
            Stop::Retry if *tries < self.config.retries_max => {
                *tries += 1;
                self.stats.retries.fetch_add(1, Relaxed);
                tracing::debug!(attempt = *tries, "transient conflict; retrying");
                tokio::time::sleep(backoff(*tries, self.config.retry_backoff_ms_max)).await;
                Ok(())
            }
            Stop::Retry => Err(StoreError::Busy {
                reason: format!("still conflicting after {} retries", self.config.retries_max),
            }),
            Stop::Fail(e) => Err(e),
            // Rejections are outcomes, decided inside `decide`; none reaches here.
            Stop::Reject(r) => Err(StoreError::Internal(format!("unexpected rejection {r:?}"))),
        }
    }

    fn check_target(&self, action: &Action) -> Result<(), StoreError> {
        let unknown = |what: String| Err(StoreError::UnknownTarget(what));
        match action {
            Action::Create { machine, .. } => {
                self.machine(machine)?;
            }
            Action::Fire { machine, event, .. } => {
                if self.machine(machine)?.event(event).is_none() {
                    return unknown(format!("event `{event}` of `{machine}`"));
                }
            }
            Action::Operate { resource, operation, .. } => {
                if !self.resource(resource)?.operations.iter().any(|o| o.name == *operation) {
                    return unknown(format!("operation `{operation}` of `{resource}`"));
                }
            }
        }
        Ok(())
    }

    #[tracing::instrument(level = "debug", name = "db.transaction", skip_all, fields(isolation = ?isolation))]
    /// `looked_up`: the command's record was just looked for, and was not there.
    async fn attempt(
        &self,
        cmds: &[Command],
        isolation: ir::Isolation,
        looked_up: bool,
    ) -> Result<Vec<Executed>, Stop> {
        if let [cmd] = cmds
            && let Some(idem) = &cmd.idempotency
        {
            return Ok(vec![self.solo(cmd, idem, isolation, looked_up).await?]);
        }
        let txn = self.begin(isolation).await?;
        let now = Utc::now();
        let mut done = Vec::with_capacity(cmds.len());
        for cmd in cmds {
            done.push(self.one(&txn, cmd, now, looked_up).await?);
        }
        txn.commit().instrument(tracing::debug_span!("db.commit")).await?;
        Ok(done)
    }

    /// Applies a command in a savepoint: its writes stay when it applies and are undone
    /// when the lifecycle rejects it.
    #[tracing::instrument(level = "debug", name = "db.apply", skip_all)]
    pub(crate) async fn decide(
        &self,
        conn: &DatabaseTransaction,
        cmd: &Command,
        now: DateTime<Utc>,
    ) -> Result<Outcome, Stop> {
        let inner = conn.begin().await?;
        match self.apply(&inner, cmd, now).await {
            Ok(record) => {
                inner.commit().await?;
                Ok(Outcome::Applied { instance: record })
            }
            Err(Stop::Reject(r)) => {
                inner.rollback().await?;
                Ok(Outcome::Rejected { rejection: r })
            }
            Err(other) => Err(other),
        }
    }

    pub(crate) async fn apply(
        &self,
        conn: &DatabaseTransaction,
        cmd: &Command,
        now: DateTime<Utc>,
    ) -> Result<Record, Stop> {
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
    ) -> Result<Record, Stop> {
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
        let record = machine_record(m, &row)?;
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
    ) -> Result<Record, Stop> {
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
        let record = machine_record(m, &row)?;
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
    ) -> Result<Record, Stop> {
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
        let record = resource_record(r, &row)?;
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

    pub(crate) fn machine(&self, name: &str) -> Result<&ir::Machine, StoreError> {
        self.spec.machine(name).ok_or_else(|| StoreError::UnknownTarget(format!("machine `{name}`")))
    }

    fn resource(&self, name: &str) -> Result<&ir::Resource, StoreError> {
        self.spec.resource(name).ok_or_else(|| StoreError::UnknownTarget(format!("resource `{name}`")))
    }

    pub async fn instance(
        &self,
        tenant: &str,
        machine: &str,
        id: Uuid,
    ) -> Result<Option<Record>, StoreError> {
        let m = self.machine(machine)?;
        let b = Bind { tenant, id: Some(id), ..Bind::default() };
        let row =
            self.db.query_one_raw(b.statement(self.backend(), &self.plans.machines[machine].select)).await?;
        row.map(|r| machine_record(m, &r).map_err(stop_to_error)).transpose()
    }

    pub async fn resource_row(
        &self,
        tenant: &str,
        resource: &str,
        key: &Json,
    ) -> Result<Option<Record>, StoreError> {
        let r = self.resource(resource)?;
        let key = value::from_json(&r.key, Some(key))
            .map_err(|e| StoreError::Invalid(format!("{}: {}", e.field, e.reason)))?;
        let b = Bind { tenant, key: Some(&key), ..Bind::default() };
        let row = self
            .db
            .query_one_raw(b.statement(self.backend(), &self.plans.resources[resource].select))
            .await?;
        row.map(|r2| resource_record(r, &r2).map_err(stop_to_error)).transpose()
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

pub(crate) fn stop_to_error(s: Stop) -> StoreError {
    match s {
        Stop::Fail(e) => e,
        Stop::Retry => StoreError::Busy { reason: "conflict".to_string() },
        Stop::Reject(r) => StoreError::Internal(format!("unexpected rejection {r:?}")),
    }
}

/// Jittered exponential backoff: up to 2^attempt ms, capped.
fn backoff(attempt: u32, cap_ms: u64) -> std::time::Duration {
    let ceiling = (1u64 << attempt.min(16)).min(cap_ms).max(1);
    std::time::Duration::from_millis(fastrand::u64(ceiling / 2..=ceiling))
}

pub(crate) fn replay((fingerprint, outcome): (String, Outcome), expected: &str) -> Executed {
    if fingerprint == expected {
        Executed { outcome, replayed: true }
    } else {
        Executed { outcome: Outcome::Rejected { rejection: Rejection::KeyReused }, replayed: false }
    }
}

/// Whether the tables of `spec_name` were created from this very spec.
pub(crate) async fn verify_schema(
    db: &DatabaseConnection,
    spec_name: &str,
    spec: &ir::Spec,
) -> Result<(), StoreError> {
    let source =
        crate::evolve::SpecSource { name: spec_name.to_string(), source: String::new(), ir: spec.clone() };
    match crate::evolve::serving(db, &source).await? {
        crate::evolve::Serving::Current { .. } | crate::evolve::Serving::Older { .. } => Ok(()),
        crate::evolve::Serving::Differs { summary } => {
            Err(StoreError::Drift { spec: spec_name.to_string(), summary })
        }
    }
}
