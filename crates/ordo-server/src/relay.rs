//! The outbox relay: publishes committed events to one Redis Stream per machine
//! (`<prefix>events:<Machine>`, `XADD`), then marks them sent. At least once: a relay that
//! dies between `XADD` and marking leaves the rows unsent, and they are published again.
//! In order per instance, however many servers relay (see `Store::claim_outbox`).

use fred::prelude::*;
use ordo_store::Store;
use std::time::Duration;
use tracing::Instrument as _;

/// Events published per round (one database transaction).
pub const RELAY_BATCH_MAX: u64 = 500;
/// The bound on each Redis call of the relay.
pub const RELAY_REDIS_TIMEOUT_MS: u64 = 2_000;

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
}
