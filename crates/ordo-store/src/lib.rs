//! Ordo's store: tables and SQL plans from the IR, and the executor that runs every
//! command in one transaction on PostgreSQL or SQLite.
//!
//! The front door is [`Store::open`] (connect, optionally migrate, compile the plans) and
//! [`Store::execute`]. Only this crate writes SQL; it knows nothing of HTTP.

mod batch;
mod bulk;
mod command;
mod config;
mod decide;
pub mod evolve;
mod exec;
pub mod invariants;
mod keyed;
mod migration;
mod outbox;
pub mod plan;
mod read;
mod rows;
mod timers;
mod upkeep;
pub use batch::{
    BATCH_LANES_DEFAULT, BATCH_LINGER_MS_DEFAULT, BATCH_MAX_DEFAULT, BATCH_WAIT_MS_MAX_DEFAULT,
    KEY_QUEUE_MAX_DEFAULT,
};
pub use command::{
    Action, Command, Executed, IdempotencyKey, Outcome, Rejection, RowKind, StoreError, StoredRow,
};
pub use config::{
    ACQUIRE_TIMEOUT_MS_DEFAULT, IDEMPOTENCY_TTL_MS_DEFAULT, IDLE_TIMEOUT_MS_DEFAULT,
    OUTBOX_RETENTION_MS_DEFAULT, POOL_SIZE_DEFAULT, RETRIES_MAX_DEFAULT, RETRY_BACKOFF_MS_MAX_DEFAULT,
    SHADOW_SCHEMA, SQLITE_BUSY_TIMEOUT_MS, STATEMENT_CACHE_CAPACITY, StoreConfig, connect,
};
pub use evolve::{Apply, SpecSource};
pub use invariants::{InvariantCheck, Sides};
pub use migration::{MigrateAction, install, migrate, migrate_specs, migrations};
pub use outbox::{ClaimedEvent, EVENTS_PAGE_MAX, OutboxBatch, OutboxEvent};
pub use read::{JOURNAL_PAGE_MAX, JournalEntry};
pub use sea_orm;
pub use upkeep::{Backlog, StoreStats};
pub mod schema;
pub mod value;

use command::only;
use ordo_spec::ir;
use sea_orm::{DatabaseConnection, DbBackend};
use std::sync::Arc;

/// A spec's compiled plans over a connection pool: the executor.
pub struct Store {
    exec: Arc<exec::Executor>,
    batcher: Option<batch::Batcher>,
}

impl Store {
    /// Connects, migrates when asked (a database of this one spec; one that serves several
    /// is migrated with [`migrate`] naming them all), checks that the tables match the spec,
    /// and compiles every plan once.
    pub async fn open(
        config: StoreConfig,
        spec_name: &str,
        spec: ir::Spec,
        migrate_up: bool,
    ) -> Result<Store, StoreError> {
        let db = connect(&config).await?;
        if migrate_up {
            migrate(&db, &[(spec_name.to_string(), spec.clone())], MigrateAction::Up).await?;
        }
        exec::verify_schema(&db, spec_name, &spec).await?;
        let plans = plan::compile(&spec, db.get_database_backend())?;
        let stats = exec::Stats::default();
        let limits = batch::Limits {
            batch_max: config.batch_max,
            queue_max: config.key_queue_max,
            wait_max: std::time::Duration::from_millis(config.batch_wait_ms_max),
            lanes: config.batch_lanes,
            linger: std::time::Duration::from_millis(config.batch_linger_ms),
        };
        let on = config.group_commit;
        let exec =
            Arc::new(exec::Executor { db, spec: Arc::new(spec), plans: Arc::new(plans), config, stats });
        let batcher = on.then(|| batch::Batcher::new(exec.clone(), limits));
        Ok(Store { exec, batcher })
    }

    pub fn spec(&self) -> &ir::Spec {
        &self.exec.spec
    }

    pub fn plans(&self) -> &plan::Plans {
        &self.exec.plans
    }

    pub fn backend(&self) -> DbBackend {
        self.exec.plans.backend
    }

    /// The pool, for reads the executor does not offer (audits, tests).
    pub fn connection(&self) -> &DatabaseConnection {
        &self.exec.db
    }

    /// Runs one command in one transaction. Rejections are `Ok` outcomes; `Err` is for
    /// what the lifecycle did not decide (busy, unavailable, unknown names).
    pub async fn execute(&self, cmd: &Command) -> Result<Executed, StoreError> {
        only(self.exec.execute_batch(std::slice::from_ref(cmd)).await?)
    }

    /// The outcome recorded under a keyed command's key, if any: its replay (or `KeyReused`
    /// when the key was used for another request), with one read and no transaction. The
    /// server asks before it takes the Redis lease, so a retry needs neither.
    pub async fn recorded(&self, cmd: &Command) -> Result<Option<Executed>, StoreError> {
        self.exec.recorded(cmd).await
    }

    /// [`Store::execute`] after [`Store::recorded`] found nothing: the record is not read
    /// again (the record's insert still meets a request that committed meanwhile, and
    /// answers with its outcome).
    /// Keyed commands go through group commit (many to a transaction, in arrival order per
    /// key; see `batch.rs`) unless `StoreConfig::group_commit` is off.
    pub async fn execute_unrecorded(&self, cmd: &Command) -> Result<Executed, StoreError> {
        match &self.batcher {
            Some(b) if cmd.idempotency.is_some() => b.submit(cmd.clone()).await,
            _ => only(self.exec.run(std::slice::from_ref(cmd), cmd.idempotency.is_some()).await?),
        }
    }

    /// Runs several commands in one transaction, each with its own outcome (a rejection
    /// undoes only its own command). It all commits or, on an error, none of it does.
    /// One transaction for many commands is the road past one-transaction-per-request
    /// throughput, and to serving a hot row faster than its lock allows.
    pub async fn execute_batch(&self, cmds: &[Command]) -> Result<Vec<Executed>, StoreError> {
        self.exec.execute_batch(cmds).await
    }

    /// Fires the timers due at `now` (at most `limit`), each at most once however many
    /// servers sweep; returns how many were taken. See `Executor::fire_due_timers`.
    pub async fn fire_due_timers(
        &self,
        now: chrono::DateTime<chrono::Utc>,
        limit: u64,
    ) -> Result<usize, StoreError> {
        self.exec.fire_due_timers(now, limit).await
    }
}
