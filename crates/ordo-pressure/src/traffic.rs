//! The traffic's vocabulary, shared by the driver, the report and the audit: where the
//! load goes, the operations and requests of the mix, how an answer counts, what a client
//! saw succeed, and the idempotency contract a re-sent request's answer must keep.

use anyhow::{Context, Result, bail};
use serde_json::Value;
/// Where the load goes.
#[derive(Debug, Clone)]
pub struct Target {
    /// `http://127.0.0.1:PORT` of each server: requests go round them, as a load balancer
    /// would send them, and a retry goes to the next one. Only loopback addresses.
    pub base_urls: Vec<String>,
    pub api_key: Option<String>,
    /// Send `X-Load-Test: true` (served from shadow tables).
    pub shadow: bool,
}

impl Target {
    /// One server.
    pub fn one(base_url: String, api_key: Option<String>, shadow: bool) -> Target {
        Target { base_urls: vec![base_url], api_key, shadow }
    }

    pub fn check(&self) -> Result<()> {
        if self.base_urls.is_empty() {
            bail!("no server to send the load to");
        }
        for url in &self.base_urls {
            let host = url
                .strip_prefix("http://")
                .context("the target is an http:// URL")?
                .split(['/', ':'])
                .next()
                .unwrap_or_default();
            if !matches!(host, "127.0.0.1" | "localhost" | "[::1]") {
                bail!("load goes to 127.0.0.1 only, not `{host}`");
            }
        }
        Ok(())
    }

    /// The servers, for reports.
    pub fn label(&self) -> String {
        self.base_urls.join(", ")
    }
}

/// The operations of the mix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OpKind {
    Place,
    Pay,
    Ship,
    Deliver,
    Cancel,
    Refund,
    Deposit,
    Initiate,
    Settle,
    Fail,
    Read,
}

impl OpKind {
    pub fn label(self) -> &'static str {
        match self {
            OpKind::Place => "place",
            OpKind::Pay => "pay",
            OpKind::Ship => "ship",
            OpKind::Deliver => "deliver",
            OpKind::Cancel => "cancel",
            OpKind::Refund => "refund",
            OpKind::Deposit => "deposit",
            OpKind::Initiate => "initiate",
            OpKind::Settle => "settle",
            OpKind::Fail => "fail",
            OpKind::Read => "read",
        }
    }

    /// The order state an event is sent from, when it is not a conflicting command.
    pub(crate) fn order_source(self) -> Option<&'static str> {
        match self {
            OpKind::Pay => Some("pending"),
            OpKind::Ship => Some("paid"),
            OpKind::Deliver => Some("shipped"),
            OpKind::Cancel => Some("pending"),
            OpKind::Refund => Some("delivered"),
            _ => None,
        }
    }
}

/// One request.
#[derive(Debug, Clone)]
pub struct Op {
    pub kind: OpKind,
    pub post: bool,
    pub path: String,
    pub body: Option<Value>,
    pub key: Option<String>,
    /// The order or transfer taken from the world's lists for this request; it goes back
    /// with its new state when the answer comes.
    pub(crate) taken: Option<Taken>,
}

#[derive(Debug, Clone)]
pub(crate) enum Taken {
    Order(String),
    Transfer(String),
}

/// How an answer counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// 2xx.
    Ok,
    /// A correct refusal of the lifecycle: invalid transition, sold out, guard, key in use.
    Rejected,
    /// Anything else: 5xx, timeouts, refused connections, unexpected problems, and answers
    /// to a re-sent request that differ from the first.
    Error,
}

/// The problem types that are correct answers under contention, not errors.
const EXPECTED_PROBLEMS: &[&str] =
    &["invalid-transition", "resource-check", "idempotency-key-in-use", "guard-failed", "stale-version"];

#[derive(Debug, Clone)]
pub struct Answer {
    pub status: Option<u16>,
    pub body: Value,
    pub replayed: bool,
    /// The error kind, for `Class::Error`.
    pub error: Option<String>,
    /// The server's `Retry-After`, in milliseconds.
    pub retry_after_ms: Option<u64>,
    /// Sends of this request before this answer (0: it is the first's).
    pub retries: u32,
}

impl Answer {
    pub fn class(&self) -> Class {
        match self.status {
            Some(200..=299) => Class::Ok,
            Some(409 | 412 | 422) if EXPECTED_PROBLEMS.contains(&self.problem()) => Class::Rejected,
            _ => Class::Error,
        }
    }

    pub(crate) fn problem(&self) -> &str {
        self.body["type"].as_str().unwrap_or_default().trim_start_matches("urn:ordo:problem:")
    }

    /// Whether a client that retries sends it again: no answer, a server error, too many
    /// requests or a timeout, or a key still held by a request that may have died with its
    /// server. The same key makes this safe.
    pub(crate) fn worth_retrying(&self) -> bool {
        matches!(self.status, None | Some(408 | 429 | 500..)) || self.problem() == "idempotency-key-in-use"
    }

    pub(crate) fn failed(error: String) -> Answer {
        Answer {
            status: None,
            body: Value::Null,
            replayed: false,
            error: Some(error),
            retry_after_ms: None,
            retries: 0,
        }
    }

    pub(crate) fn error_kind(&self) -> String {
        match (&self.error, self.status) {
            (Some(e), _) => e.clone(),
            (None, Some(s)) if self.problem().is_empty() => format!("http {s}"),
            (None, Some(s)) => format!("http {s} {}", self.problem()),
            (None, None) => "no answer".to_string(),
        }
    }
}

/// A 2xx the client saw for a keyed request: the audit checks that it exists.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Seen {
    pub key: String,
    /// (table, id) of an instance it created.
    pub created: Option<(String, String)>,
}

/// The operation of a recorded route (`POST /orders/{id}/pay` is a pay).
pub fn op_of_route(method: &str, route: &str) -> Option<OpKind> {
    let parts: Vec<&str> = route.trim_start_matches('/').split('/').collect();
    Some(match (method, parts.as_slice()) {
        ("POST", ["orders"]) => OpKind::Place,
        ("POST", ["transfers"]) => OpKind::Initiate,
        ("POST", ["orders", _, event]) => match *event {
            "pay" => OpKind::Pay,
            "ship" => OpKind::Ship,
            "deliver" => OpKind::Deliver,
            "cancel" => OpKind::Cancel,
            "refund" => OpKind::Refund,
            _ => return None,
        },
        ("POST", ["transfers", _, "settle"]) => OpKind::Settle,
        ("POST", ["transfers", _, "fail"]) => OpKind::Fail,
        ("POST", ["wallet" | "account" | "inventory", _, _]) => OpKind::Deposit,
        ("GET", _) => OpKind::Read,
        _ => return None,
    })
}

/// Whether a re-sent request's answer breaks the idempotency contract: it must be the
/// first outcome again (marked replayed), or, while the first is still running, 409
/// key-in-use. `concurrent`: both were in flight together.
pub(crate) fn differs(first: &Answer, again: &Answer, concurrent: bool) -> Option<String> {
    let decided = |a: &Answer| {
        matches!(a.class(), Class::Ok | Class::Rejected) && a.problem() != "idempotency-key-in-use"
    };
    if !decided(first) || !decided(again) {
        // A key in use, or an error: nothing to compare.
        return None;
    }
    let same = first.status == again.status
        && first.body["id"] == again.body["id"]
        && first.problem() == again.problem();
    if !same {
        return Some(format!(
            "replay mismatch: {:?} {} then {:?} {}",
            first.status,
            first.problem(),
            again.status,
            again.problem()
        ));
    }
    if !concurrent && !again.replayed {
        return Some("replay mismatch: a re-sent request was not marked Idempotent-Replayed".to_string());
    }
    None
}

pub(crate) fn transport(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timeout".to_string()
    } else if e.is_connect() {
        "connection refused".to_string()
    } else {
        "connection error".to_string()
    }
}
