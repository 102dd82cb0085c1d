//! The outbox relay: publishes committed events to one Redis Stream per machine
//! (`<prefix>events:<Machine>`, `XADD`), then marks them sent. At least once: a relay that
//! dies between `XADD` and marking leaves the rows unsent, and they are published again.
//! In order per instance, however many servers relay (see `Store::claim_outbox`).
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
}

impl Relay {
    pub async fn connect(url: &str, prefix: &str) -> Result<Relay, String> {
        let config = Config::from_url(url).map_err(|e| e.to_string())?;
        let timeout = Duration::from_millis(RELAY_REDIS_TIMEOUT_MS);
        let client = Builder::from_config(config)
            .with_performance_config(|p| p.default_command_timeout = timeout)
            .set_policy(ReconnectPolicy::new_exponential(0, 100, 1_000, 2))
            .build()
            .map_err(|e| e.to_string())?;
        // The connection task lives with the runtime; its handle is not needed.
        drop(client.connect());
        let _ = tokio::time::timeout(timeout, client.wait_for_connect()).await;
        Ok(Relay { client, prefix: prefix.to_string() })
    }

    /// The stream a machine's (or resource's) events go to.
    pub fn stream(&self, machine: &str) -> String {
        format!("{}events:{machine}", self.prefix)
    }

    /// One round: claim a batch, `XADD` each event, mark the batch sent. Returns how many
    /// were published. On a Redis error the batch is released unsent.
    #[tracing::instrument(level = "debug", name = "relay.batch", skip_all, fields(events))]
    pub async fn round(&self, store: &Store, limit: u64) -> Result<usize, String> {
        let batch = store.claim_outbox(limit).await.map_err(|e| e.to_string())?;
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
            let () = pipeline
                .xadd(self.stream(&e.machine), false, None::<()>, "*", fields)
                .await
                .map_err(|err| err.to_string())?;
        }
        if !batch.events.is_empty() {
            let ids: Vec<String> = pipeline
                .all()
                .instrument(tracing::debug_span!("redis.xadd", events = batch.events.len()))
                .await
                .map_err(|err| err.to_string())?;
            if ids.len() != batch.events.len() {
                return Err(format!("the pipeline gave {} ids for {} events", ids.len(), batch.events.len()));
            }
        }
        batch.mark_sent(chrono::Utc::now()).await.map_err(|e| e.to_string())
    }

    /// Trims one stream as the module says: removes the entries older than `retention_ms`
    /// (before `now_ms`) that every consumer group has read and acknowledged. Returns how
    /// many entries went.
    #[tracing::instrument(level = "debug", name = "relay.trim", skip(self))]
    pub async fn trim(&self, stream: &str, now_ms: u64, retention_ms: u64) -> Result<u64, String> {
        let exists: u64 = self.client.exists(stream).await.map_err(|e| e.to_string())?;
        if exists == 0 {
            return Ok(0);
        }
        let mut keep_from = EntryId(now_ms.saturating_sub(retention_ms), 0);
        let groups: Vec<HashMap<String, Value>> =
            self.client.xinfo_groups(stream).await.map_err(|e| e.to_string())?;
        for group in groups {
            let text = |k: &str| group.get(k).and_then(Value::as_string);
            let (Some(name), Some(last)) = (text("name"), text("last-delivered-id")) else {
                return Err(format!("{stream}: a consumer group without a name or last-delivered-id"));
            };
            let last = EntryId::parse(&last).ok_or_else(|| format!("{stream}: entry id `{last}`"))?;
            let pending = group.get("pending").and_then(Value::as_u64).unwrap_or(0);
            let first_unacked = if pending > 0 {
                // XPENDING's summary: [count, smallest id, greatest id, consumers].
                let summary: Vec<Value> =
                    self.client.xpending(stream, name.as_str(), ()).await.map_err(|e| e.to_string())?;
                let smallest = summary.get(1).and_then(Value::as_string);
                smallest
                    .and_then(|s| EntryId::parse(&s))
                    .ok_or_else(|| format!("{stream}: XPENDING {summary:?}"))?
            } else {
                last.next()
            };
            keep_from = keep_from.min(first_unacked);
        }
        let cut = format!("{}-{}", keep_from.0, keep_from.1);
        self.client.xtrim(stream, ("MINID", "=", cut)).await.map_err(|e| e.to_string())
    }
}
