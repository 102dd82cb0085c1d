//! `ORDO_RECORD=FILE`: the shape of the traffic, one JSON line per API request (time,
//! method, route template, status, a hash of the idempotency key, shadow or not), so that
//! `cargo xtask pressure --replay FILE --speed 3x` can rerun a real peak against shadow
//! tables. No bodies, no ids, no API keys, no tenants: the shape only.

pub use ordo_record::{TrafficRecord, key_hash, recorded};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use tokio::io::AsyncWriteExt;

/// Lines waiting for the writer at most; past it, lines are dropped (and counted), never
/// making a request wait.
const RECORD_QUEUE_MAX: usize = 65_536;

pub struct Recorder {
    tx: tokio::sync::mpsc::Sender<TrafficRecord>,
    dropped: AtomicU64,
}

impl Recorder {
    /// Appends to `path` (created if missing) from a task of its own.
    pub async fn open(path: &Path) -> std::io::Result<Recorder> {
        let file = tokio::fs::OpenOptions::new().create(true).append(true).open(path).await?;
        let (tx, mut rx) = tokio::sync::mpsc::channel::<TrafficRecord>(RECORD_QUEUE_MAX);
        tokio::spawn(async move {
            let mut out = tokio::io::BufWriter::new(file);
            while let Some(r) = rx.recv().await {
                let mut line = serde_json::to_string(&r).expect("a traffic record serializes");
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
