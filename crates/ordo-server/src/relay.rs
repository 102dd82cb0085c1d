//! The outbox relay: publishes committed events to one Redis Stream per machine
//! (`<prefix>events:<Machine>`, `XADD`), then marks them sent. At least once: a relay that
//! dies between `XADD` and marking leaves the rows unsent, and they are published again.
//! In order per instance, however many servers relay (see `Store::claim_outbox`).
//!
//! Redis holds the streams only in memory (Ordo's data is the database's): a Redis restarted
//! empty, flushed or replaced loses the entries no consumer has read yet. The relay notices
//! (its marker key `<prefix>relay:epoch` is gone) before its next round and marks every
//! outbox row published within the stream retention unsent again, so they are published
//! anew, in order per instance; consumers recreate their groups from the start of the new
//! streams and skip what they had applied (their processed-messages rows). An entry older
//! than the retention that a lagging group had not read is lost with Redis; such a consumer
//! catches up from the events feed (docs/operations.md).
//!
//! Streams are trimmed (`Relay::trim`, every `STREAM_TRIM_INTERVAL_MS`): an entry goes once
//! it is older than the retention and every consumer group of its stream has read it and
//! acknowledged it. An entry a group has not yet read, or read and left pending, is never
//! trimmed, however old; a stream without groups keeps the retention's worth.

use fred::prelude::*;
use ordo_store::Store;
use std::collections::HashMap;
use std::time::Duration;
use tracing::Instrument as _;

/// Events published per round (one database transaction).
pub const RELAY_BATCH_MAX: u64 = 500;
/// The bound on each Redis call of the relay.
pub const RELAY_REDIS_TIMEOUT_MS: u64 = 2_000;
/// How long a published entry stays in its stream at least (`ORDO_STREAM_RETENTION_MS`):
/// a new consumer group can start this far back; older history is in the events feed.
pub const STREAM_RETENTION_MS_DEFAULT: u64 = 3_600_000;
/// How often streams are trimmed.
pub const STREAM_TRIM_INTERVAL_MS: u64 = 60_000;

/// How long one relay holds the recovery of lost streams before another may take it over.
pub const RECOVERY_HOLD_MS: i64 = 10_000;

/// What stops a relay call: Redis or the database failing, or Redis answering otherwise
/// than the relay's commands promise.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("redis: {0}")]
    Redis(#[from] fred::error::Error),
    #[error("database: {0}")]
    Store(#[from] ordo_store::StoreError),
    #[error("redis answered unexpectedly: {0}")]
    Unexpected(String),
}

/// What [`Relay::recover`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recovery {
    /// Redis holds what was published.
    Healthy,
    /// Redis had lost it; this many outbox rows now wait to be published (again).
    Republished(u64),
    /// Another relay is recovering: publish nothing until it is done.
    Waiting,
}

/// A stream entry id, `<ms>-<seq>`, ordered as Redis orders them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct EntryId(u64, u64);

impl EntryId {
    fn parse(s: &str) -> Option<EntryId> {
        let (ms, seq) = s.split_once('-')?;
        Some(EntryId(ms.parse().ok()?, seq.parse().ok()?))
    }

    /// The id right after this one.
    fn next(self) -> EntryId {
        match self.1.checked_add(1) {
            Some(seq) => EntryId(self.0, seq),
            None => EntryId(self.0.saturating_add(1), 0),
        }
    }
}

pub struct Relay {
    client: Client,
    prefix: String,
    /// How far back rows are published again when Redis lost the streams.
    republish_ms: u64,
}

impl Relay {
    pub async fn connect(url: &str, prefix: &str) -> Result<Relay, RelayError> {
        let config = Config::from_url(url)?;
        let timeout = Duration::from_millis(RELAY_REDIS_TIMEOUT_MS);
        let client = Builder::from_config(config)
            .with_performance_config(|p| p.default_command_timeout = timeout)
            // Pipelined XADDs must not wait for a delayed ACK (Nagle).
            .with_connection_config(|c| c.tcp.nodelay = Some(true))
            .set_policy(ReconnectPolicy::new_exponential(0, 100, 1_000, 2))
            .build()?;
        // The connection task lives with the runtime; its handle is not needed.
        drop(client.connect());
        let _ = tokio::time::timeout(timeout, client.wait_for_connect()).await;
        Ok(Relay { client, prefix: prefix.to_string(), republish_ms: STREAM_RETENTION_MS_DEFAULT })
    }

    /// Publishes again, after Redis lost the streams, the rows sent within `window_ms` (the
    /// stream retention the server is configured with).
    pub fn republishing(mut self, window_ms: u64) -> Relay {
        self.republish_ms = window_ms;
        self
    }

    /// The key whose absence says Redis no longer holds what this relay published.
    fn epoch_key(&self) -> String {
        format!("{}relay:epoch", self.prefix)
    }

    /// Whether this round may publish. When the marker is gone (Redis restarted empty,
    /// flushed, or new), one relay takes the recovery (`<prefix>relay:recovering`, held
    /// `RECOVERY_HOLD_MS`), marks the rows published within the window unsent, sets the
    /// marker again, and goes on; the others publish nothing until the marker is back, so
    /// the recovery waits only for rounds that were already under way (their rows are
    /// included). A relay that dies mid-recovery leaves the hold to expire and the next one
    /// starts over: rows published twice, never a row lost.
    pub async fn recover(&self, store: &Store) -> Result<Recovery, RelayError> {
        let key = self.epoch_key();
        let present: u64 = self.client.exists(&key).await?;
        if present > 0 {
            return Ok(Recovery::Healthy);
        }
        let hold = format!("{}relay:recovering", self.prefix);
        let expire = Some(Expiration::PX(RECOVERY_HOLD_MS));
        let took: Option<String> = self.client.set(&hold, "1", expire, Some(SetOptions::NX), false).await?;
        if took.is_none() {
            return Ok(Recovery::Waiting);
        }
        // Another relay may have finished just before the hold was free: it sets the marker
        // before it lets go.
        let present: u64 = self.client.exists(&key).await?;
        if present > 0 {
            let _: u64 = self.client.del(&hold).await?;
            return Ok(Recovery::Healthy);
        }
        let window = chrono::Duration::milliseconds(i64::try_from(self.republish_ms).unwrap_or(i64::MAX));
        let waiting = store.republish_since(chrono::Utc::now() - window).await?;
        let now = chrono::Utc::now().to_rfc3339();
        let () = self.client.set(&key, now, None, None, false).await?;
        let _: u64 = self.client.del(&hold).await?;
        tracing::warn!(
            waiting,
            window_ms = self.republish_ms,
            "Redis held no relay marker (restarted empty, flushed, or new): the events published within the window go out again"
        );
        Ok(Recovery::Republished(waiting))
    }

    /// The stream a machine's (or resource's) events go to.
    pub fn stream(&self, machine: &str) -> String {
        format!("{}events:{machine}", self.prefix)
    }

    /// One round: recover lost streams (see [`Relay::recover`]), claim a batch, `XADD` each
    /// event, mark the batch sent. Returns how many were published. On a Redis error the batch is released unsent.
    #[tracing::instrument(level = "debug", name = "relay.batch", skip_all, fields(events))]
    pub async fn round(&self, store: &Store, limit: u64) -> Result<usize, RelayError> {
        if self.recover(store).await? == Recovery::Waiting {
            return Ok(0);
        }
        let batch = store.claim_outbox(limit).await?;
        let span = tracing::Span::current();
        span.record("events", batch.events.len());
        // Each event's request trace, linked from the batch that publishes it.
        for e in &batch.events {
            if let Some(parent) = e.event.payload["traceparent"].as_str() {
                let cx = crate::telemetry::remote_context(parent, None);
                tracing_opentelemetry::OpenTelemetrySpanExt::add_link(&span, cx);
            }
        }
        // One pipeline, one round trip for the whole batch: the relay keeps up with group
        // commit's rate. Entries of one stream keep their order within the pipeline.
        let pipeline = self.client.pipeline();
        for e in &batch.events {
            let p = &e.event.payload;
            let field = |k: &str| match &p[k] {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Null => String::new(),
                other => other.to_string(),
            };
            let mut fields: Vec<(String, String)> = vec![
                ("id".to_string(), field("id")),
                ("tenant".to_string(), field("tenant")),
                ("machine".to_string(), field("machine")),
                ("entity".to_string(), field("entity")),
                ("version".to_string(), field("version")),
                ("event".to_string(), field("event")),
                ("from".to_string(), field("from")),
                ("to".to_string(), field("to")),
                ("params".to_string(), field("params")),
                ("at".to_string(), field("at")),
                ("cursor".to_string(), e.event.cursor.clone()),
            ];
            if p["traceparent"].is_string() {
                fields.push(("traceparent".to_string(), field("traceparent")));
            }
            let () = pipeline.xadd(self.stream(&e.machine), false, None::<()>, "*", fields).await?;
        }
        if !batch.events.is_empty() {
            let ids: Vec<String> = pipeline
                .all()
                .instrument(tracing::debug_span!("redis.xadd", events = batch.events.len()))
                .await?;
            if ids.len() != batch.events.len() {
                return Err(RelayError::Unexpected(format!(
                    "the pipeline gave {} ids for {} events",
                    ids.len(),
                    batch.events.len()
                )));
            }
        }
        Ok(batch.mark_sent(chrono::Utc::now()).await?)
    }

    /// Trims one stream as the module says: removes the entries older than `retention_ms`
    /// (before `now_ms`) that every consumer group has read and acknowledged. Returns how
    /// many entries went.
    #[tracing::instrument(level = "debug", name = "relay.trim", skip(self))]
    pub async fn trim(&self, stream: &str, now_ms: u64, retention_ms: u64) -> Result<u64, RelayError> {
        let exists: u64 = self.client.exists(stream).await?;
        if exists == 0 {
            return Ok(0);
        }
        let mut keep_from = EntryId(now_ms.saturating_sub(retention_ms), 0);
        let groups: Vec<HashMap<String, Value>> = self.client.xinfo_groups(stream).await?;
        for group in groups {
            let text = |k: &str| group.get(k).and_then(Value::as_string);
            let (Some(name), Some(last)) = (text("name"), text("last-delivered-id")) else {
                return Err(RelayError::Unexpected(format!(
                    "{stream}: a consumer group without a name or last-delivered-id"
                )));
            };
            let last = EntryId::parse(&last)
                .ok_or_else(|| RelayError::Unexpected(format!("{stream}: entry id `{last}`")))?;
            let pending = group.get("pending").and_then(Value::as_u64).unwrap_or(0);
            let first_unacked = if pending > 0 {
                // XPENDING's summary: [count, smallest id, greatest id, consumers].
                let summary: Vec<Value> = self.client.xpending(stream, name.as_str(), ()).await?;
                let smallest = summary.get(1).and_then(Value::as_string);
                smallest
                    .and_then(|s| EntryId::parse(&s))
                    .ok_or_else(|| RelayError::Unexpected(format!("{stream}: XPENDING {summary:?}")))?
            } else {
                last.next()
            };
            keep_from = keep_from.min(first_unacked);
        }
        let cut = format!("{}-{}", keep_from.0, keep_from.1);
        Ok(self.client.xtrim(stream, ("MINID", "=", cut)).await?)
    }
}
