//! The transaction executor: one database transaction per command, holding the machine row,
//! the resource effects (in one fixed lock order), the journal row, the outbox row, the
//! timers and the idempotency record, or none of them. This file holds the transactions,
//! their retries and the lookups; one command's statements are in `exec/apply.rs`.

use crate::plan::Plans;
use crate::{Action, Command, Executed, Outcome, Rejection, StoreConfig, StoreError};
use chrono::{DateTime, Utc};
use ordo_spec::ir;
use sea_orm::{
    DatabaseConnection, DatabaseTransaction, DbBackend, DbErr, IsolationLevel, SqliteTransactionMode,
    TransactionOptions, TransactionTrait,
};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use tracing::Instrument as _;

mod apply;
pub(crate) use apply::PlannedEffect;

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
                Ok(Outcome::Applied { row: record })
            }
            Err(Stop::Reject(r)) => {
                inner.rollback().await?;
                Ok(Outcome::Rejected { rejection: r })
            }
            Err(other) => Err(other),
        }
    }

    pub(crate) fn machine(&self, name: &str) -> Result<&ir::Machine, StoreError> {
        self.spec.machine(name).ok_or_else(|| StoreError::UnknownTarget(format!("machine `{name}`")))
    }

    pub(crate) fn resource(&self, name: &str) -> Result<&ir::Resource, StoreError> {
        self.spec.resource(name).ok_or_else(|| StoreError::UnknownTarget(format!("resource `{name}`")))
    }
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
