//! The driver's HTTP client: one request sent with the target's headers (bearer key,
//! `X-Load-Test`, `Idempotency-Key`), retried with the same key as the scenario's policy
//! says, and the run's funding before the load.

use super::Driver;
use super::workload::request;
use crate::traffic::{Answer, Class, Op, OpKind, transport};
use anyhow::{Result, bail};
use serde_json::{Value, json};
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;
use tokio::time::Instant;

impl Driver {
    /// Sends `op`, and again with the same key while the answer is worth retrying, as the
    /// scenario's retry policy says: backing off (doubling, with jitter), never sooner than
    /// the server's `Retry-After`, within the retry budget from `due`. `pair`: one of two
    /// copies sent at once, for which "key in use" is an expected answer, not one to retry.
    pub(super) async fn send_retrying(&self, op: &Op, due: Instant, pair: bool) -> Answer {
        let policy = &self.scenario.retry;
        let give_up = due + Duration::from_millis(policy.budget_ms);
        let mut backoff = policy.backoff_ms;
        let mut retries = 0;
        loop {
            let mut answer = self.send(op).await;
            answer.retries = retries;
            let in_use = answer.problem() == "idempotency-key-in-use";
            if retries >= policy.attempts || !answer.worth_retrying() || pair && in_use {
                return answer;
            }
            let jittered = backoff / 2 + fastrand::u64(0..=backoff / 2);
            let wait = Duration::from_millis(jittered.max(answer.retry_after_ms.unwrap_or(0)));
            if Instant::now() + wait >= give_up {
                return answer;
            }
            tokio::time::sleep(wait).await;
            backoff = (backoff * 2).min(policy.backoff_max_ms);
            retries += 1;
        }
    }

    pub(super) async fn send(&self, op: &Op) -> Answer {
        let urls = &self.target.base_urls;
        let base = &urls[self.next_url.fetch_add(1, Relaxed) % urls.len()];
        let url = format!("{base}{}", op.path);
        let mut req = if op.post { self.client.post(url) } else { self.client.get(url) };
        if let Some(k) = &self.target.api_key {
            req = req.header("Authorization", format!("Bearer {k}"));
        }
        if self.target.shadow {
            req = req.header("X-Load-Test", "true");
        }
        if let Some(key) = &op.key {
            req = req.header("Idempotency-Key", key);
        }
        if let Some(body) = &op.body {
            req = req.header("Content-Type", "application/json").body(body.to_string());
        }
        match req.send().await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let replayed = resp.headers().get("idempotent-replayed").is_some_and(|v| v == "true");
                let retry_after_ms = resp
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok())
                    .map(|s| s.saturating_mul(1_000));
                match resp.bytes().await {
                    Ok(bytes) => Answer {
                        status: Some(status),
                        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
                        replayed,
                        error: None,
                        retry_after_ms,
                        retries: 0,
                    },
                    Err(e) => Answer { status: Some(status), ..Answer::failed(transport(&e)) },
                }
            }
            Err(e) => Answer::failed(transport(&e)),
        }
    }

    /// Funds the run: stock for every SKU and the hot one, money for every wallet and
    /// account. Refuses to go on if any of it fails.
    pub async fn setup(&self) -> Result<()> {
        let s = &self.scenario;
        let mut ops = Vec::new();
        let post = |path: String, body: Value| Op {
            key: Some(self.key()),
            ..request(OpKind::Deposit, path, Some(body), None)
        };
        for i in 0..s.skus {
            ops.push(post(
                format!("/inventory/{}/restock", self.sku(i)),
                json!({"quantity": s.stock_per_sku}),
            ));
        }
        ops.push(post(format!("/inventory/{}/restock", self.hot_sku), json!({"quantity": s.hot_stock})));
        for i in 0..s.accounts {
            ops.push(post(format!("/wallet/{}/deposit", self.account(i)), json!({"amount": s.balance})));
            ops.push(post(format!("/account/{}/deposit", self.account(i)), json!({"amount": s.balance})));
        }
        for op in &ops {
            let a = self.send(op).await;
            if a.class() != Class::Ok {
                bail!("setup: {} answered {}", op.path, a.error_kind());
            }
            self.note_seen(op, &a);
        }
        Ok(())
    }
}
