//! `ORDO_RECORD=FILE`: the shape of the traffic, one JSON line per API request (time,
//! method, route template, status, a hash of the idempotency key, shadow or not), so that
//! `cargo xtask pressure --replay FILE --speed 3x` can rerun a real peak against shadow
//! tables. No bodies, no ids, no API keys, no tenants: the shape only.

use serde::{Deserialize, Serialize};
use std::hash::{Hash, Hasher};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use tokio::io::AsyncWriteExt;

/// Lines waiting for the writer at most; past it, lines are dropped (and counted), never
/// making a request wait.
const RECORD_QUEUE_MAX: usize = 65_536;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrafficRecord {
    /// Milliseconds since the Unix epoch, when the request arrived.
    pub at_ms: i64,
    pub method: String,
    /// The route template (`/orders/{id}/pay`).
    pub route: String,
    pub status: u16,
    /// A hash of the Idempotency-Key: equal for a retry of the same request.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub key: Option<String>,
    #[serde(default)]
    pub shadow: bool,
}

/// A key's stand-in in a recording.
pub fn key_hash(key: &str) -> String {
    let mut h = std::hash::DefaultHasher::new();
    key.hash(&mut h);
    format!("{:016x}", h.finish())
}

/// Whether a route is part of the API's traffic (not health, metrics or docs).
pub fn recorded(route: &str) -> bool {
    !["/healthz", "/readyz", "/metrics", "/openapi.json", "/docs"].iter().any(|p| route.starts_with(p))
}

pub struct Recorder {
    tx: tokio::sync::mpsc::Sender<TrafficRecord>,
    dropped: AtomicU64,
}

impl Recorder {
    /// Appends to `path` (created if missing) from a task of its own.
    pub async fn open(path: &Path) -> Result<Recorder, String> {
        let file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .await
            .map_err(|e| format!("ORDO_RECORD {}: {e}", path.display()))?;
        let (tx, mut rx) = tokio::sync::mpsc::channel::<TrafficRecord>(RECORD_QUEUE_MAX);
        tokio::spawn(async move {
            let mut out = tokio::io::BufWriter::new(file);
            while let Some(r) = rx.recv().await {
                let mut line = serde_json::to_string(&r).unwrap_or_default();
                line.push('\n');
                let mut result = out.write_all(line.as_bytes()).await;
                // Written through whenever the queue is empty, so a crash loses little.
                if rx.is_empty() && result.is_ok() {
                    result = out.flush().await;
                }
                if let Err(e) = result {
                    tracing::error!(error = %e, "recording traffic failed; recording stops");
                    return;
                }
            }
        });
        Ok(Recorder { tx, dropped: AtomicU64::new(0) })
    }

    pub fn record(&self, r: TrafficRecord) {
        if self.tx.try_send(r).is_err() && self.dropped.fetch_add(1, Relaxed) == 0 {
            tracing::warn!("the traffic recording falls behind; lines are dropped");
        }
    }
}

/// Reads a recording, oldest first.
pub fn read(text: &str) -> Result<Vec<TrafficRecord>, String> {
    let mut records = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| serde_json::from_str(l).map_err(|e| format!("line {}: {e}", i + 1)))
        .collect::<Result<Vec<TrafficRecord>, String>>()?;
    records.sort_by_key(|r| r.at_ms);
    Ok(records)
}
