//! How to reach the database and how the store behaves on it: `StoreConfig` with its named
//! defaults (pool, timeouts, retries, retention, group commit), the shadow copy's schema, and
//! `connect`, which opens the pool with the session settings every connection needs.

use crate::StoreError;
use crate::batch::{
    BATCH_LANES_DEFAULT, BATCH_LINGER_MS_DEFAULT, BATCH_MAX_DEFAULT, BATCH_WAIT_MS_MAX_DEFAULT,
    KEY_QUEUE_MAX_DEFAULT,
};
use sea_orm::{ConnectOptions, Database, DatabaseConnection};
use std::time::Duration;

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
