//! The format of a traffic recording (`ORDO_RECORD=FILE`): one JSON line per API request
//! (time, method, route template, status, a hash of the idempotency key, shadow or not).
//! The server writes it; `cargo xtask pressure --replay` reads it. It is a crate of its own
//! so that the pressure test and `xtask` never link the server (whose build compiles the
//! specs) to read it.

use serde::{Deserialize, Serialize};
use std::hash::{Hash, Hasher};

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
