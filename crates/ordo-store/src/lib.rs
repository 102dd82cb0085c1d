//! Ordo's store: tables and SQL plans from the IR, and the executor that runs every
//! command in one transaction on PostgreSQL or SQLite.
//!
//! The front door is [`Store::open`] (connect, optionally migrate, compile the plans) and
//! [`Store::execute`]. Only this crate writes SQL; it knows nothing of HTTP.

mod batch;
mod bulk;
mod decide;
pub mod evolve;
mod exec;
mod keyed;
mod migration;
mod outbox;
pub mod plan;
mod rows;
mod timers;
pub use batch::{
    BATCH_LANES_DEFAULT, BATCH_LINGER_MS_DEFAULT, BATCH_MAX_DEFAULT, BATCH_WAIT_MS_MAX_DEFAULT,
    KEY_QUEUE_MAX_DEFAULT,
};
pub use evolve::{Apply, SpecSource};
pub use migration::{MigrateAction, install, migrate, migrate_specs, migrations};
pub use outbox::{ClaimedEvent, EVENTS_PAGE_MAX, OutboxBatch, OutboxEvent};
pub use sea_orm;
pub mod schema;
pub mod value;

use ordo_spec::ir;
use sea_orm::{ConnectOptions, Database, DatabaseConnection, DbBackend, DbErr};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json};
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

/// Connections in the pool, by default.
pub const POOL_SIZE_DEFAULT: u32 = 16;
/// How long a command waits for a pooled connection before `Unavailable`, by default.
pub const ACQUIRE_TIMEOUT_MS_DEFAULT: u64 = 5_000;
/// How long an idle pooled connection is kept, by default.
pub const IDLE_TIMEOUT_MS_DEFAULT: u64 = 300_000;
/// Retries of a command after a serialization failure, deadlock or busy database.
pub const RETRIES_MAX_DEFAULT: u32 = 10;
/// The ceiling of one backoff between retries, in milliseconds.
pub const RETRY_BACKOFF_MS_MAX_DEFAULT: u64 = 200;
/// How long an idempotency record answers replays: 24 hours.
pub const IDEMPOTENCY_TTL_MS_DEFAULT: u64 = 24 * 3_600_000;
/// How long an outbox row is kept after the relay published it: 7 days. The events feed
/// (`events_after`) reaches back this far for published events; unpublished ones stay.
pub const OUTBOX_RETENTION_MS_DEFAULT: u64 = 7 * 24 * 3_600_000;
/// How long SQLite waits for the write lock before reporting busy (then retried).
pub const SQLITE_BUSY_TIMEOUT_MS: u64 = 10_000;

#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// `postgres://...` or `sqlite://file.db?mode=rwc` (or `sqlite::memory:`).
    pub url: String,
    pub pool_size: u32,
    pub acquire_timeout_ms: u64,
    pub idle_timeout_ms: u64,
    pub retries_max: u32,
    pub retry_backoff_ms_max: u64,
    pub idempotency_ttl_ms: u64,
    /// PostgreSQL only: the schema the tables live in (created when missing); none: the
    /// connection's default (`public`).
    pub schema: Option<String>,
    /// Group commit: keyed commands that arrive while a batch of their key runs wait for
    /// it and then run many to a transaction (`batch.rs`). Off (the default): every command
    /// runs alone. It pays on hot keys (a flash sale) and costs on spread-out mixed loads.
    pub group_commit: bool,
    /// Commands per transaction at most.
    pub batch_max: usize,
    /// Commands waiting on one key at most; past it, `Busy`.
    pub key_queue_max: usize,
    /// How long a command may wait for its key before it is answered `Busy` instead.
    pub batch_wait_ms_max: u64,
    /// Transactions that combine several keys' batches running at once at most (0: keys
    /// never share a transaction).
    pub batch_lanes: usize,
    /// How long a hot key's next batch waits for more of its commands (0: never).
    pub batch_linger_ms: u64,
}

/// The PostgreSQL schema, or the suffix of the SQLite file, of shadow traffic's tables.
pub const SHADOW_SCHEMA: &str = "ordo_shadow";

impl StoreConfig {
    pub fn new(url: impl Into<String>) -> StoreConfig {
        StoreConfig {
            url: url.into(),
            pool_size: POOL_SIZE_DEFAULT,
            acquire_timeout_ms: ACQUIRE_TIMEOUT_MS_DEFAULT,
            idle_timeout_ms: IDLE_TIMEOUT_MS_DEFAULT,
            retries_max: RETRIES_MAX_DEFAULT,
            retry_backoff_ms_max: RETRY_BACKOFF_MS_MAX_DEFAULT,
            idempotency_ttl_ms: IDEMPOTENCY_TTL_MS_DEFAULT,
            schema: None,
            group_commit: false,
            batch_max: BATCH_MAX_DEFAULT,
            key_queue_max: KEY_QUEUE_MAX_DEFAULT,
            batch_wait_ms_max: BATCH_WAIT_MS_MAX_DEFAULT,
            batch_lanes: BATCH_LANES_DEFAULT,
            batch_linger_ms: BATCH_LINGER_MS_DEFAULT,
        }
    }

    /// The same settings over the shadow tables, which load tests write instead of the real
    /// ones: the schema `ordo_shadow` of the same PostgreSQL database, or the SQLite file
    /// beside the real one (`ordo.db` -> `ordo.ordo_shadow.db`). An in-memory database has
    /// no beside.
    pub fn shadow(&self) -> Result<StoreConfig, StoreError> {
        let mut shadow = self.clone();
        if self.url.starts_with("postgres") {
            shadow.schema = Some(SHADOW_SCHEMA.to_string());
            return Ok(shadow);
        }
        let in_memory = self.url.contains(":memory:") || self.url.contains("mode=memory");
        let rest = self.url.strip_prefix("sqlite://").or_else(|| self.url.strip_prefix("sqlite:"));
        let (Some(rest), false) = (rest, in_memory) else {
            return Err(StoreError::Invalid(format!(
                "shadow tables need a PostgreSQL database or an SQLite file, not `{}`",
                self.url
            )));
        };
        let (path, query) = rest.split_once('?').map_or((rest, None), |(p, q)| (p, Some(q)));
        let file = std::path::Path::new(path);
        let stem = file.file_stem().and_then(|s| s.to_str()).unwrap_or("ordo");
        let ext = file.extension().and_then(|s| s.to_str()).map_or(String::new(), |e| format!(".{e}"));
        let name = format!("{stem}.{SHADOW_SCHEMA}{ext}");
        let shadow_path = file.with_file_name(name);
        shadow.url =
            format!("sqlite://{}{}", shadow_path.display(), query.map_or(String::new(), |q| format!("?{q}")));
        Ok(shadow)
    }
}

/// A state-changing request, for one tenant.
#[derive(Debug, Clone)]
pub struct Command {
    pub tenant: String,
    /// When given, the outcome is recorded under (tenant, key) in the same transaction,
    /// and a later command with the same key gets that outcome back instead of applying.
    pub idempotency: Option<IdempotencyKey>,
    pub action: Action,
    /// The W3C `traceparent` of the request that sent it, carried into its outbox event so
    /// consumers continue the trace.
    pub trace: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey {
    pub key: String,
    /// What the request was (method, route, canonical body), so that a key reused for
    /// another request is refused rather than replayed.
    pub fingerprint: String,
}

#[derive(Debug, Clone)]
pub enum Action {
    /// Create an instance of a machine: its fields and the create's parameters.
    Create { machine: String, input: Map<String, Json> },
    /// Fire an event on an instance; `if_match` is the version the caller last saw.
    Fire { machine: String, id: Uuid, event: String, params: Map<String, Json>, if_match: Option<i64> },
    /// Run an operation on a resource row.
    Operate { resource: String, key: Json, operation: String, params: Map<String, Json> },
}

/// What a command did: the outcome, and whether it is a replay of an earlier one.
#[derive(Debug, Clone, PartialEq)]
pub struct Executed {
    pub outcome: Outcome,
    pub replayed: bool,
}

impl Executed {
    /// The outcome, in its record's form, that a cache may keep as this key's answer:
    /// only a command decided just now (a replayed record may be near the end of its
    /// retention, and a reused key's record is another request's).
    pub fn settled(&self) -> Option<String> {
        match &self.outcome {
            _ if self.replayed => None,
            Outcome::Rejected { rejection: Rejection::KeyReused } => None,
            o => Some(o.recorded_form()),
        }
    }

    /// A kept answer (a record's fingerprint and outcome, as `settled` gave them) for a
    /// request with fingerprint `expected`: the same replay, or `KeyReused`, as the
    /// database record would give.
    pub fn answered(fingerprint: String, outcome: &str, expected: &str) -> Result<Executed, StoreError> {
        let outcome = serde_json::from_str(outcome)
            .map_err(|e| StoreError::Internal(format!("a kept answer does not parse: {e}")))?;
        Ok(exec::replay((fingerprint, outcome), expected))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    Applied { instance: Record },
    Rejected { rejection: Rejection },
}

impl Outcome {
    /// The outcome as its idempotency record stores it.
    pub(crate) fn recorded_form(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordKind {
    Machine,
    Resource,
}

/// A machine instance or a resource row, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub kind: RecordKind,
    /// The machine's or resource's name.
    pub name: String,
    /// The instance's id, or the resource row's key as text.
    pub id: String,
    pub state: Option<String>,
    pub version: i64,
    pub fields: Map<String, Json>,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

/// Why the lifecycle refused a command. Every rejection changes nothing but the
/// idempotency record that remembers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "rejection", rename_all = "snake_case")]
pub enum Rejection {
    NotFound,
    /// A field or parameter is missing, of the wrong type, unknown, or breaks its check.
    InvalidInput {
        field: String,
        reason: String,
    },
    /// The event has no transition from the current state.
    WrongState {
        state: String,
        allowed: Vec<String>,
    },
    GuardFailed {
        guard: String,
        condition: String,
    },
    /// `If-Match` named another version than the current one.
    StaleVersion {
        current: i64,
    },
    /// A `set` would break the field's check.
    CheckFailed {
        field: String,
        reason: String,
    },
    /// A change to a resource row would break its check (or the row cannot start from zeros).
    ResourceCheck {
        resource: String,
        key: String,
        field: String,
    },
    /// The idempotency key was used before for a different request.
    KeyReused,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Transient contention that outlasted the retries, or a lock not available (NOWAIT).
    #[error("busy: {reason}")]
    Busy { reason: String },
    /// The database cannot be reached (down, pool exhausted, connection lost).
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("unknown {0}")]
    UnknownTarget(String),
    #[error("invalid request: {0}")]
    Invalid(String),
    #[error(
        "spec `{spec}`: {summary}; review with `cargo xtask migrate plan`, apply with `cargo xtask migrate up` (or start the server with --migrate for safe changes)"
    )]
    Drift { spec: String, summary: String },
    #[error("migration: {0}")]
    Migration(String),
    #[error(transparent)]
    Plan(#[from] plan::PlanError),
    #[error("database error: {0}")]
    Internal(String),
}

impl From<DbErr> for StoreError {
    fn from(e: DbErr) -> StoreError {
        match &e {
            DbErr::ConnectionAcquire(_) => StoreError::Unavailable(e.to_string()),
            DbErr::Conn(_) => StoreError::Unavailable(e.to_string()),
            DbErr::Exec(sea_orm::RuntimeErr::SqlxError(s))
            | DbErr::Query(sea_orm::RuntimeErr::SqlxError(s))
                if matches!(
                    **s,
                    sea_orm::sqlx::Error::Io(_)
                        | sea_orm::sqlx::Error::PoolTimedOut
                        | sea_orm::sqlx::Error::PoolClosed
                        | sea_orm::sqlx::Error::WorkerCrashed
                        | sea_orm::sqlx::Error::Protocol(_)
                ) =>
            {
                StoreError::Unavailable(e.to_string())
            }
            _ => StoreError::Internal(e.to_string()),
        }
    }
}

/// Prepared statements each database connection keeps.
pub const STATEMENT_CACHE_CAPACITY: usize = 1024;

pub async fn connect(config: &StoreConfig) -> Result<DatabaseConnection, StoreError> {
    let mut options = ConnectOptions::new(config.url.clone());
    let in_memory = config.url.contains(":memory:") || config.url.contains("mode=memory");
    options
        // An in-memory SQLite database lives and dies with its one connection.
        .max_connections(if in_memory { 1 } else { config.pool_size })
        .min_connections(if in_memory { 1 } else { 0 })
        .acquire_timeout(Duration::from_millis(config.acquire_timeout_ms))
        .idle_timeout(Duration::from_millis(config.idle_timeout_ms))
        .sqlx_logging(false)
        // Group commit's multi-row statements differ in text by their number of rows: a
        // cache of sqlx's default 100 statements would evict and prepare them again and again.
        .map_sqlx_postgres_opts(|o| o.statement_cache_capacity(STATEMENT_CACHE_CAPACITY))
        .map_sqlx_sqlite_opts(|o| {
            o.busy_timeout(Duration::from_millis(SQLITE_BUSY_TIMEOUT_MS))
                .statement_cache_capacity(STATEMENT_CACHE_CAPACITY)
                .journal_mode(sea_orm::sqlx::sqlite::SqliteJournalMode::Wal)
                .synchronous(sea_orm::sqlx::sqlite::SqliteSynchronous::Normal)
                .foreign_keys(true)
        });
    let Some(schema) = &config.schema else {
        return Database::connect(options).await.map_err(StoreError::from);
    };
    let valid = schema.len() <= 63
        && schema.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && schema.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !valid || !config.url.starts_with("postgres") {
        return Err(StoreError::Invalid(format!(
            "schema `{schema}`: a lower-case PostgreSQL identifier, and only with PostgreSQL"
        )));
    }
    options.set_schema_search_path(schema.clone());
    let db = Database::connect(options).await?;
    use sea_orm::ConnectionTrait;
    db.execute_unprepared(&format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\"")).await?;
    Ok(db)
}

/// The outcome of a batch of one.
pub(crate) fn only(mut done: Vec<Executed>) -> Result<Executed, StoreError> {
    done.pop().ok_or_else(|| StoreError::Internal("a batch of one gave no outcome".to_string()))
}

/// A snapshot of [`Store::stats`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StoreStats {
    /// Transactions retried after a transient conflict (serialization, deadlock, busy).
    pub retries: u64,
    /// Transactions begun, and the total time spent getting a connection and beginning.
    pub begins: u64,
    pub begin_wait_s: f64,
    /// Connections open, idle among them, and the pool's bound.
    pub pool_size: u32,
    pub pool_idle: u32,
    pub pool_max: u32,
    /// Group commit: transactions of batched commands, the commands in them, batches run
    /// again one by one after failing whole, commands not run (given up, or waited too
    /// long), total time commands waited for their key, and the commands waiting now.
    pub batches: u64,
    /// Batches that ran on the fast path: one statement per table, no savepoints.
    pub fast_batches: u64,
    pub batched_commands: u64,
    pub batch_splits: u64,
    pub batch_shed: u64,
    pub batch_wait_s: f64,
    pub batch_queued: u64,
}

/// A snapshot of [`Store::backlog`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backlog {
    pub oldest_unsent_s: f64,
    pub due_timers: u64,
}

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

    /// What the executor and its pool have done and hold, for metrics.
    pub fn stats(&self) -> StoreStats {
        use std::sync::atomic::Ordering::Relaxed;
        let s = &self.exec.stats;
        let idle = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        let (pool_size, pool_idle) = match self.backend() {
            DbBackend::Postgres => {
                let pool = self.exec.db.get_postgres_connection_pool();
                (pool.size(), idle(pool.num_idle()))
            }
            DbBackend::Sqlite => {
                let pool = self.exec.db.get_sqlite_connection_pool();
                (pool.size(), idle(pool.num_idle()))
            }
            _ => (0, 0),
        };
        StoreStats {
            retries: s.retries.load(Relaxed),
            begins: s.begins.load(Relaxed),
            begin_wait_s: s.begin_wait_us.load(Relaxed) as f64 / 1e6,
            pool_size,
            pool_idle,
            pool_max: self.exec.config.pool_size,
            batches: self.batch_stat(|b| b.batches.load(Relaxed)),
            fast_batches: s.bulk_batches.load(Relaxed),
            batched_commands: self.batch_stat(|b| b.commands.load(Relaxed)),
            batch_splits: self.batch_stat(|b| b.split.load(Relaxed)),
            batch_shed: self.batch_stat(|b| b.shed.load(Relaxed)),
            batch_wait_s: self.batch_stat(|b| b.wait_us.load(Relaxed)) as f64 / 1e6,
            batch_queued: self.batch_stat(|b| b.queued.load(Relaxed) as u64),
        }
    }

    fn batch_stat(&self, f: impl Fn(&batch::BatchStats) -> u64) -> u64 {
        self.batcher.as_ref().map_or(0, |b| f(&b.stats))
    }

    /// The work waiting in the system tables at `now`: the age of the oldest unsent outbox
    /// event (0 when none waits) and how many timers are due.
    pub async fn backlog(&self, now: chrono::DateTime<chrono::Utc>) -> Result<Backlog, StoreError> {
        use sea_orm::sea_query::{Alias, Expr, ExprTrait, Func, Query};
        let a = Alias::new;
        let oldest = Query::select()
            .expr_as(Func::min(Expr::col(a("created_at"))), a("oldest"))
            .from(a(schema::OUTBOX))
            .and_where(Expr::col(a("sent_at")).is_null())
            .to_owned();
        let due = Query::select()
            .expr_as(Func::count(Expr::col(a("id"))), a("due"))
            .from(a(schema::TIMERS))
            .and_where(Expr::col(a("due_at")).lte(now))
            .to_owned();
        use sea_orm::ConnectionTrait;
        let db = &self.exec.db;
        let row = |q: sea_orm::sea_query::SelectStatement| async move {
            let statement = db.get_database_backend().build(&q);
            db.query_one_raw(statement)
                .await
                .map_err(|e| exec::stop_to_error(exec::classify(e)))?
                .ok_or_else(|| StoreError::Internal("an aggregate gave no row".to_string()))
        };
        let internal = |e: DbErr| StoreError::Internal(e.to_string());
        let oldest: Option<chrono::DateTime<chrono::Utc>> =
            row(oldest).await?.try_get("", "oldest").map_err(internal)?;
        let due: i64 = row(due).await?.try_get("", "due").map_err(internal)?;
        Ok(Backlog {
            oldest_unsent_s: oldest.map_or(0.0, |t| Ord::max((now - t).num_milliseconds(), 0) as f64 / 1e3),
            due_timers: u64::try_from(due).unwrap_or(0),
        })
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

    pub async fn instance(
        &self,
        tenant: &str,
        machine: &str,
        id: Uuid,
    ) -> Result<Option<Record>, StoreError> {
        self.exec.instance(tenant, machine, id).await
    }

    pub async fn resource(
        &self,
        tenant: &str,
        resource: &str,
        key: &Json,
    ) -> Result<Option<Record>, StoreError> {
        self.exec.resource_row(tenant, resource, key).await
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

    /// An instance's journal in version order, after `after_version`, at most
    /// `JOURNAL_PAGE_MAX` entries (fewer when `limit` says so).
    pub async fn journal(
        &self,
        tenant: &str,
        machine: &str,
        id: Uuid,
        after_version: i64,
        limit: u64,
    ) -> Result<Vec<JournalEntry>, StoreError> {
        use sea_orm::ConnectionTrait;
        use sea_orm::sea_query::{Alias, Expr, ExprTrait, Order, Query};
        let a = Alias::new;
        let q = Query::select()
            .columns([a("version"), a("event"), a("from_state"), a("to_state"), a("params"), a("created_at")])
            .from(a(schema::JOURNAL))
            .and_where(Expr::col(a("tenant")).eq(tenant))
            .and_where(Expr::col(a("machine")).eq(machine))
            .and_where(Expr::col(a("entity")).eq(id.to_string()))
            .and_where(Expr::col(a("version")).gt(after_version))
            .order_by(a("version"), Order::Asc)
            .limit(limit.clamp(1, JOURNAL_PAGE_MAX))
            .to_owned();
        let rows = self.exec.db.query_all(&q).await?;
        rows.iter()
            .map(|r| {
                let params: String = r.try_get("", "params")?;
                Ok(JournalEntry {
                    version: r.try_get("", "version")?,
                    event: r.try_get("", "event")?,
                    from: r.try_get("", "from_state")?,
                    to: r.try_get("", "to_state")?,
                    params: serde_json::from_str(&params).unwrap_or(Json::Null),
                    at: r.try_get("", "created_at")?,
                })
            })
            .collect::<Result<_, DbErr>>()
            .map_err(StoreError::from)
    }

    /// Deletes idempotency records past their retention, at most `limit` per call (the
    /// sweeper calls it until it returns fewer); returns how many went.
    pub async fn purge_expired(
        &self,
        now: chrono::DateTime<chrono::Utc>,
        limit: u64,
    ) -> Result<u64, StoreError> {
        use sea_orm::sea_query::{Alias, Expr, ExprTrait};
        let expired = Expr::col(Alias::new("expires_at")).lte(now);
        self.purge(schema::IDEMPOTENCY, &["tenant", "key"], expired, limit).await
    }

    /// Deletes outbox rows the relay published at or before `before`, at most `limit` per
    /// call (the sweeper calls it until it returns fewer); unpublished rows are never
    /// deleted. Returns how many went.
    pub async fn purge_sent_outbox(
        &self,
        before: chrono::DateTime<chrono::Utc>,
        limit: u64,
    ) -> Result<u64, StoreError> {
        use sea_orm::sea_query::{Alias, Expr, ExprTrait};
        let sent_at = Expr::col(Alias::new("sent_at"));
        self.purge(
            schema::OUTBOX,
            &["tenant", "id"],
            sent_at.clone().is_not_null().and(sent_at.lte(before)),
            limit,
        )
        .await
    }

    /// Deletes at most `limit` rows of `table` matching `condition` (rows picked by their
    /// primary key `key`), so one sweep never holds a long transaction.
    async fn purge(
        &self,
        table: &str,
        key: &[&str],
        condition: sea_orm::sea_query::Expr,
        limit: u64,
    ) -> Result<u64, StoreError> {
        use sea_orm::ConnectionTrait;
        use sea_orm::sea_query::{Alias, Expr, ExprTrait, Query};
        let cols = || key.iter().map(|c| Expr::col(Alias::new(*c)));
        let picked = Query::select()
            .exprs(cols())
            .from(Alias::new(table))
            .and_where(condition)
            .limit(Ord::max(limit, 1))
            .to_owned();
        let delete = Query::delete()
            .from_table(Alias::new(table))
            .and_where(Expr::tuple(cols()).in_subquery(picked))
            .to_owned();
        Ok(self.exec.db.execute(&delete).await?.rows_affected())
    }
}

/// The most journal entries one read returns.
pub const JOURNAL_PAGE_MAX: u64 = 500;

/// One transition of an instance, as the journal recorded it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JournalEntry {
    pub version: i64,
    pub event: String,
    pub from: Option<String>,
    pub to: Option<String>,
    pub params: Json,
    pub at: chrono::DateTime<chrono::Utc>,
}
