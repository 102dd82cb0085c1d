//! A consumer of Ordo's event streams for a user's worker. Each event is applied once: the
//! handler's own database writes and a processed-messages row commit together, the entry
//! is acknowledged (`XACK`) only after that commit, entries a crashed consumer left pending
//! are reclaimed (`XAUTOCLAIM`), and an entry delivered too often goes to a dead-letter
//! stream so the group moves on.

use fred::prelude::*;
use sea_orm::sea_query::IntoIden;
use sea_orm::sea_query::{Alias, ColumnDef, Expr, ExprTrait, Index, Query, Table};
use sea_orm::{ConnectionTrait, DatabaseConnection, DatabaseTransaction, TransactionTrait};
use sea_orm_migration::{MigrationName, MigrationTrait, MigratorTrait, SchemaManager, async_trait};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

/// Entries read per poll, by default.
pub const BATCH_DEFAULT: u64 = 100;
/// How long a poll waits for new entries, by default.
pub const BLOCK_MS_DEFAULT: u64 = 1_000;
/// How long an entry may stay pending with a consumer before another reclaims it.
pub const CLAIM_IDLE_MS_DEFAULT: u64 = 30_000;
/// Deliveries after which an entry goes to the dead-letter stream.
pub const DELIVERIES_MAX_DEFAULT: u64 = 5;
/// The bound on every Redis call besides the blocking read.
pub const REDIS_TIMEOUT_MS: u64 = 2_000;

/// The table that remembers which events a consumer group applied.
pub const PROCESSED: &str = "ordo_processed";

/// The consumer's own schema, by migration: the processed-messages table. Its history is
/// kept in `ordo_consumer_migrations`, apart from the store's, so the worker's database may
/// also be the store's.
pub struct Migrator;

impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(ProcessedTable)]
    }

    fn migration_table_name() -> sea_orm::DynIden {
        Alias::new("ordo_consumer_migrations").into_iden()
    }
}

/// Applies the consumer's migrations that `db` lacks; a database that has them all is left
/// as it is.
pub async fn migrate(db: &DatabaseConnection) -> Result<(), ConsumerError> {
    Ok(Migrator::up(db, None).await?)
}

struct ProcessedTable;

impl MigrationName for ProcessedTable {
    fn name(&self) -> &str {
        "m0001_ordo_processed"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for ProcessedTable {
    async fn up(&self, manager: &SchemaManager) -> Result<(), sea_orm::DbErr> {
        // `if_not_exists`: a database whose table an earlier consumer made at run time.
        let table = Table::create()
            .table(Alias::new(PROCESSED))
            .if_not_exists()
            .col(ColumnDef::new(Alias::new("consumer")).text().not_null())
            .col(ColumnDef::new(Alias::new("event_id")).text().not_null())
            .col(ColumnDef::new(Alias::new("processed_at")).timestamp_with_time_zone().not_null())
            .primary_key(Index::create().col(Alias::new("consumer")).col(Alias::new("event_id")))
            .to_owned();
        manager.create_table(table).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), sea_orm::DbErr> {
        manager.drop_table(Table::drop().table(Alias::new(PROCESSED)).to_owned()).await
    }
}

#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    pub redis_url: String,
    /// The stream, e.g. `ordo:events:Order`.
    pub stream: String,
    /// The consumer group: one processed-messages namespace, one position in the stream.
    pub group: String,
    /// This worker's name within the group.
    pub consumer: String,
    pub batch: u64,
    pub block_ms: u64,
    pub claim_idle_ms: u64,
    pub deliveries_max: u64,
    /// Where poison entries go; default `<stream>:dead`.
    pub dead_letter: String,
}

impl ConsumerConfig {
    pub fn new(redis_url: &str, stream: &str, group: &str, consumer: &str) -> ConsumerConfig {
        ConsumerConfig {
            redis_url: redis_url.to_string(),
            stream: stream.to_string(),
            group: group.to_string(),
            consumer: consumer.to_string(),
            batch: BATCH_DEFAULT,
            block_ms: BLOCK_MS_DEFAULT,
            claim_idle_ms: CLAIM_IDLE_MS_DEFAULT,
            deliveries_max: DELIVERIES_MAX_DEFAULT,
            dead_letter: format!("{stream}:dead"),
        }
    }
}

/// One event as the relay published it: `id`, `tenant`, `machine`, `entity`, `version`,
/// `event`, `from`, `to`, `params` (JSON), `at`, `cursor`, and `traceparent` when the
/// request that caused it carried a trace context.
#[derive(Debug, Clone)]
pub struct Event {
    pub stream_id: String,
    pub fields: HashMap<String, String>,
}

impl Event {
    pub fn get(&self, name: &str) -> &str {
        self.fields.get(name).map_or("", String::as_str)
    }

    /// The event's own id (the journal row's), the same however often it is delivered.
    pub fn id(&self) -> &str {
        self.get("id")
    }
}

/// Creates the consumer group (and the stream) from the stream's start, if missing.
async fn group(redis: &Client, config: &ConsumerConfig) -> Result<(), ConsumerError> {
    let created: Result<String, _> = redis.xgroup_create(&config.stream, &config.group, "0", true).await;
    match created {
        Err(e) if !e.details().contains("BUSYGROUP") => Err(e.into()),
        _ => Ok(()),
    }
}

/// A stream entry as Redis returns it: its id and its fields.
type Entry = (String, HashMap<String, String>);

/// What a worker does with an event, inside the transaction that also records it processed.
pub trait Handler: Send + Sync {
    fn handle<'a>(
        &'a self,
        txn: &'a DatabaseTransaction,
        event: &'a Event,
    ) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>>;
}

#[derive(Debug, thiserror::Error)]
pub enum ConsumerError {
    #[error("redis: {0}")]
    Redis(#[from] fred::error::Error),
    #[error("database: {0}")]
    Database(#[from] sea_orm::DbErr),
    #[error("the database has no `ordo_processed` table: run `ordo_consumer::migrate` on it first")]
    NotMigrated,
}

/// What one poll did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Poll {
    pub applied: usize,
    /// Delivered again but already applied: acknowledged without running the handler.
    pub duplicates: usize,
    /// The handler failed: left pending, to be delivered again.
    pub failed: usize,
    pub dead_lettered: usize,
}

pub struct Consumer {
    redis: Client,
    db: DatabaseConnection,
    config: ConsumerConfig,
}

impl Consumer {
    /// Connects and creates the group (and the stream) if missing. `db` must hold the
    /// processed-messages table: run [`migrate`] on it first (at deployment, as the store's
    /// migrations are run).
    pub async fn connect(config: ConsumerConfig, db: DatabaseConnection) -> Result<Consumer, ConsumerError> {
        let redis = Builder::from_config(Config::from_url(&config.redis_url)?)
            .with_performance_config(|p| {
                p.default_command_timeout = Duration::from_millis(REDIS_TIMEOUT_MS + config.block_ms)
            })
            // Acknowledgements must not wait for a delayed ACK (Nagle).
            .with_connection_config(|c| c.tcp.nodelay = Some(true))
            // A Redis restarted or a connection cut: reconnect, and the next poll goes on.
            .set_policy(ReconnectPolicy::new_exponential(0, 100, 2_000, 2))
            .build()?;
        redis.init().await?;
        if !SchemaManager::new(&db).has_table(PROCESSED).await? {
            return Err(ConsumerError::NotMigrated);
        }
        group(&redis, &config).await?;
        Ok(Consumer { redis, db, config })
    }

    /// Reclaims entries idle past `claim_idle_ms`, then reads new ones, and handles each.
    /// A group Redis no longer has (restarted empty or flushed: the relay then publishes
    /// again what the lost streams held) is made again from the start of the stream, and
    /// what was applied before is skipped as duplicates.
    pub async fn poll(&self, handler: &dyn Handler) -> Result<Poll, ConsumerError> {
        match self.read_and_handle(handler).await {
            Err(ConsumerError::Redis(e)) if e.details().contains("NOGROUP") => {
                group(&self.redis, &self.config).await?;
                Ok(Poll::default())
            }
            other => other,
        }
    }

    async fn read_and_handle(&self, handler: &dyn Handler) -> Result<Poll, ConsumerError> {
        let c = &self.config;
        let mut poll = Poll::default();
        let (_, stale): (String, Vec<Entry>) = self
            .redis
            .xautoclaim_values(&c.stream, &c.group, &c.consumer, c.claim_idle_ms, "0-0", Some(c.batch), false)
            .await?;
        // A read that times out with nothing new is a nil reply, which does not convert to
        // a map: that one is "no entries"; any other error is reported.
        let fresh: HashMap<String, Vec<Entry>> = match self
            .redis
            .xreadgroup_map(&c.group, &c.consumer, Some(c.batch), Some(c.block_ms), false, &c.stream, ">")
            .await
        {
            Ok(read) => read,
            Err(e) if *e.kind() == fred::error::ErrorKind::Parse => HashMap::new(),
            Err(e) => return Err(e.into()),
        };
        let entries = stale.into_iter().chain(fresh.into_values().flatten());
        for (stream_id, fields) in entries {
            self.one(handler, Event { stream_id, fields }, &mut poll).await?;
        }
        Ok(poll)
    }

    /// Handles one entry in a span that continues the trace of the request that caused
    /// the event (its `traceparent`), when the worker exports traces.
    async fn one(&self, handler: &dyn Handler, event: Event, poll: &mut Poll) -> Result<(), ConsumerError> {
        use opentelemetry::propagation::TextMapPropagator as _;
        use tracing::Instrument as _;
        use tracing_opentelemetry::OpenTelemetrySpanExt as _;
        let span = tracing::info_span!(
            "consumer.handle",
            otel.kind = "consumer",
            stream = %self.config.stream,
            event = %event.get("event"),
            entity = %event.get("entity"),
            event_id = %event.id(),
        );
        if let Some(parent) = event.fields.get("traceparent") {
            let carrier = HashMap::from([("traceparent".to_string(), parent.clone())]);
            let cx = opentelemetry_sdk::propagation::TraceContextPropagator::new().extract(&carrier);
            // Fails only when the worker has no trace layer: then there is nothing to join.
            let _ = span.set_parent(cx);
        }
        self.process(handler, event, poll).instrument(span).await
    }

    async fn process(
        &self,
        handler: &dyn Handler,
        event: Event,
        poll: &mut Poll,
    ) -> Result<(), ConsumerError> {
        let c = &self.config;
        let pending: Vec<(String, String, u64, u64)> = self
            .redis
            .xpending(&c.stream, &c.group, (event.stream_id.as_str(), event.stream_id.as_str(), 1))
            .await?;
        let deliveries = pending.first().map_or(1, |p| p.3);
        if deliveries > c.deliveries_max {
            let mut fields: Vec<(String, String)> = event.fields.clone().into_iter().collect();
            fields.push(("dead_after_deliveries".to_string(), deliveries.to_string()));
            fields.push(("stream_id".to_string(), event.stream_id.clone()));
            let _: String = self.redis.xadd(&c.dead_letter, false, None::<()>, "*", fields).await?;
            let _: u64 = self.redis.xack(&c.stream, &c.group, event.stream_id.as_str()).await?;
            poll.dead_lettered += 1;
            return Ok(());
        }
        let txn = self.db.begin().await?;
        let seen = Query::select()
            .expr(Expr::val(1))
            .from(Alias::new(PROCESSED))
            .and_where(Expr::col(Alias::new("consumer")).eq(c.group.as_str()))
            .and_where(Expr::col(Alias::new("event_id")).eq(event.id()))
            .to_owned();
        if txn.query_one(&seen).await?.is_some() {
            txn.commit().await?;
            let _: u64 = self.redis.xack(&c.stream, &c.group, event.stream_id.as_str()).await?;
            poll.duplicates += 1;
            return Ok(());
        }
        match handler.handle(&txn, &event).await {
            Ok(()) => {
                let mark = Query::insert()
                    .into_table(Alias::new(PROCESSED))
                    .columns([Alias::new("consumer"), Alias::new("event_id"), Alias::new("processed_at")])
                    .values([
                        c.group.clone().into(),
                        event.id().to_string().into(),
                        chrono::Utc::now().into(),
                    ])
                    .map_err(|e| sea_orm::DbErr::Custom(e.to_string()))?
                    .to_owned();
                txn.execute(&mark).await?;
                txn.commit().await?;
                // Only now: a crash before this line redelivers, and the row above dedupes.
                let _: u64 = self.redis.xack(&c.stream, &c.group, event.stream_id.as_str()).await?;
                poll.applied += 1;
            }
            Err(_) => {
                txn.rollback().await?;
                poll.failed += 1;
            }
        }
        Ok(())
    }
}
