//! What goes into the store and what comes out: a `Command` (tenant, idempotency key and
//! fingerprint, action), its `Executed` outcome (applied with the row, or a typed
//! `Rejection`), the rows read back (`StoredRow`), and `StoreError` for what the lifecycle did
//! not decide.

use crate::{exec, plan};
use sea_orm::DbErr;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json};
use uuid::Uuid;

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
    Applied {
        /// Stored as `instance`, the name records written before carry.
        #[serde(rename = "instance")]
        row: StoredRow,
    },
    Rejected {
        rejection: Rejection,
    },
}

impl Outcome {
    /// The outcome as its idempotency record stores it.
    pub(crate) fn recorded_form(&self) -> String {
        serde_json::to_string(self).expect("an Outcome serializes: its maps have string keys")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RowKind {
    Machine,
    Resource,
}

/// A machine instance or a resource row, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredRow {
    pub kind: RowKind,
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

/// The outcome of a batch of one.
pub(crate) fn only(mut done: Vec<Executed>) -> Result<Executed, StoreError> {
    done.pop().ok_or_else(|| StoreError::Internal("a batch of one gave no outcome".to_string()))
}
