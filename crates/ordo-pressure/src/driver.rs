//! The open-model load driver. Requests leave at their intended times, whatever the server
//! does; each latency runs from the intended time, so a slow server cannot hide its
//! latency by slowing the sender (no coordinated omission). The traffic follows the shipped
//! specs' lifecycles: orders placed (a share on one hot SKU), paid, shipped, delivered,
//! cancelled and refunded; wallets topped up; transfers initiated, settled and failed. A
//! share of requests lose their response and are sent again with the same key, at once in
//! parallel or later, and each answer is checked against the first.

use crate::report::{Recorder, StageSummary};
use crate::scenario::{Scenario, Stage};
use crate::traffic::{Answer, Class, Op, OpKind, Seen, Taken, Target, differs, op_of_route, transport};
use anyhow::{Result, bail};
use serde_json::{Value, json};
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// What the client knows of the instances it made.
struct World {
    rng: fastrand::Rng,
    /// Order ids by the state they were last seen in (taken out while a request is on them).
    orders: BTreeMap<String, Vec<String>>,
    all_orders: Vec<String>,
    pending_transfers: Vec<String>,
}

impl World {
    fn take_order(&mut self, state: &str) -> Option<String> {
        let ids = self.orders.get_mut(state)?;
        (!ids.is_empty()).then(|| {
            let i = self.rng.usize(..ids.len());
            ids.swap_remove(i)
        })
    }

    /// Any order it knows, whatever its state (for conflicting commands and reads).
    fn any_order(&mut self) -> String {
        let i = self.rng.usize(..self.all_orders.len());
        self.all_orders[i].clone()
    }

    fn put_order(&mut self, id: String, state: &str) {
        self.orders.entry(state.to_string()).or_default().push(id);
    }
}

/// A request whose answer is "lost", to be sent again later.
struct Later {
    due: Instant,
    op: Op,
    first: Answer,
}

pub struct Driver {
    client: reqwest::Client,
    target: Target,
    pub scenario: Scenario,
    run_id: String,
    seq: AtomicU64,
    world: Mutex<World>,
    later: Mutex<VecDeque<Later>>,
    seen: Mutex<Vec<Seen>>,
    pub recorder: Mutex<Recorder>,
    in_flight: AtomicUsize,
    sent: AtomicU64,
    /// Which server the next send goes to.
    next_url: AtomicUsize,
    stop: AtomicBool,
    started: Instant,
    hot_sku: String,
}

/// The requests of one slot of the schedule.
enum Slot {
    /// A new request of the mix.
    New,
    /// A recorded request (replay): its operation, and its key's identity in the recording.
    Recorded(OpKind, Option<String>),
}

impl Driver {
    pub fn new(target: Target, scenario: Scenario) -> Result<Arc<Driver>> {
        target.check()?;
        scenario.validate()?;
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(scenario.request_timeout_ms))
            .pool_max_idle_per_host(scenario.max_in_flight)
            .build()?;
        let run_id = format!("{:x}", chrono::Utc::now().timestamp_micros());
        Ok(Arc::new(Driver {
            client,
            world: Mutex::new(World {
                rng: fastrand::Rng::with_seed(scenario.seed),
                orders: BTreeMap::new(),
                all_orders: Vec::new(),
                pending_transfers: Vec::new(),
            }),
            hot_sku: format!("hot-{run_id}"),
            run_id,
            target,
            scenario,
            seq: AtomicU64::new(0),
            later: Mutex::new(VecDeque::new()),
            seen: Mutex::new(Vec::new()),
            recorder: Mutex::new(Recorder::new()),
            in_flight: AtomicUsize::new(0),
            sent: AtomicU64::new(0),
            next_url: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
            started: Instant::now(),
        }))
    }

    /// The instant the run's times count from.
    pub fn started(&self) -> Instant {
        self.started
    }

    pub fn seen(&self) -> Vec<Seen> {
        lock(&self.seen).clone()
    }

    fn key(&self) -> String {
        format!("p-{}-{}", self.run_id, self.seq.fetch_add(1, Relaxed))
    }

    fn sku(&self, i: usize) -> String {
        format!("sku-{}-{i}", self.run_id)
    }

    fn account(&self, i: usize) -> String {
        format!("acct-{}-{i}", self.run_id)
    }

    /// Sends `op`, and again with the same key while the answer is worth retrying, as the
    /// scenario's retry policy says: backing off (doubling, with jitter), never sooner than
    /// the server's `Retry-After`, within the retry budget from `due`. `pair`: one of two
    /// copies sent at once, for which "key in use" is an expected answer, not one to retry.
    async fn send_retrying(&self, op: &Op, due: Instant, pair: bool) -> Answer {
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

    async fn send(&self, op: &Op) -> Answer {
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
            kind: OpKind::Deposit,
            post: true,
            path,
            body: Some(body),
            key: Some(self.key()),
            taken: None,
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

    /// The next request of the mix, from what the client knows.
    fn next_op(&self, wanted: Option<OpKind>) -> Op {
        let s = &self.scenario;
        let mut guard = lock(&self.world);
        let w = &mut *guard;
        let m = &s.mix;
        let kind = wanted.unwrap_or_else(|| {
            let weights = [
                (OpKind::Place, m.place),
                (OpKind::Pay, m.pay),
                (OpKind::Ship, m.ship),
                (OpKind::Deliver, m.deliver),
                (OpKind::Cancel, m.cancel),
                (OpKind::Refund, m.refund),
                (OpKind::Deposit, m.deposit),
                (OpKind::Initiate, m.initiate),
                (OpKind::Settle, m.settle),
                (OpKind::Fail, m.fail),
                (OpKind::Read, m.read),
            ];
            let total: u32 = weights.iter().map(|(_, w)| w).sum();
            let mut pick = w.rng.u32(..total.max(1));
            weights
                .iter()
                .find(|(_, weight)| {
                    if pick < *weight {
                        true
                    } else {
                        pick -= weight;
                        false
                    }
                })
                .map_or(OpKind::Place, |(k, _)| *k)
        });
        let account = self.account(w.rng.usize(..s.accounts));
        let op = |kind, path: String, body: Option<Value>, taken| Op {
            kind,
            post: body.is_some(),
            path,
            body,
            key: None,
            taken,
        };
        let found = match kind {
            OpKind::Place | OpKind::Deposit | OpKind::Initiate | OpKind::Read => None,
            OpKind::Settle | OpKind::Fail => {
                let n = w.pending_transfers.len();
                (n > 0).then(|| {
                    let i = w.rng.usize(..n);
                    let id = w.pending_transfers.swap_remove(i);
                    let body = if kind == OpKind::Settle {
                        json!({"reference": "r"})
                    } else {
                        json!({"reason": "load"})
                    };
                    op(
                        kind,
                        format!("/transfers/{id}/{}", kind.label()),
                        Some(body),
                        Some(Taken::Transfer(id)),
                    )
                })
            }
            event => {
                let body = match event {
                    OpKind::Ship => json!({"carrier": "ups", "tracking": "1Z"}),
                    OpKind::Refund => json!({"reason": "returned"}),
                    _ => json!({}),
                };
                let conflicting = w.rng.f64() < s.conflict_share && !w.all_orders.is_empty();
                if conflicting {
                    let id = w.any_order();
                    Some(op(event, format!("/orders/{id}/{}", event.label()), Some(body), None))
                } else {
                    event.order_source().and_then(|state| w.take_order(state)).map(|id| {
                        let path = format!("/orders/{id}/{}", event.label());
                        op(event, path, Some(body), Some(Taken::Order(id)))
                    })
                }
            }
        };
        // Nothing to fire an event on yet: make something instead.
        let kind = match (&found, kind) {
            (Some(_), k) => k,
            (None, OpKind::Settle | OpKind::Fail) => OpKind::Initiate,
            (None, OpKind::Deposit | OpKind::Initiate | OpKind::Read) => kind,
            (None, _) => OpKind::Place,
        };
        let mut op = match found {
            Some(op) => op,
            None => match kind {
                OpKind::Deposit => op(
                    kind,
                    format!("/wallet/{account}/deposit"),
                    Some(json!({"amount": w.rng.i64(1..=1_000)})),
                    None,
                ),
                OpKind::Initiate => {
                    let payee = loop {
                        let p = self.account(w.rng.usize(..s.accounts));
                        if p != account {
                            break p;
                        }
                    };
                    let body = json!({"payer": account, "payee": payee, "amount": w.rng.i64(1..=100)});
                    op(kind, "/transfers".to_string(), Some(body), None)
                }
                OpKind::Read if !w.all_orders.is_empty() => {
                    let id = w.any_order();
                    op(kind, format!("/orders/{id}"), None, None)
                }
                OpKind::Read => op(kind, format!("/inventory/{}", self.hot_sku), None, None),
                _ => {
                    let sku = if w.rng.f64() < s.hot_share {
                        self.hot_sku.clone()
                    } else {
                        self.sku(w.rng.usize(..s.skus))
                    };
                    let body = json!({
                        "sku": sku,
                        "quantity": w.rng.i64(1..=3),
                        "account": account,
                        "amount": w.rng.i64(1..=1_000),
                    });
                    op(OpKind::Place, "/orders".to_string(), Some(body), None)
                }
            },
        };
        if op.post {
            op.key = Some(self.key());
        }
        op
    }

    /// Puts what a request learnt back into the world.
    fn learn(&self, op: &Op, a: &Answer) {
        let mut w = lock(&self.world);
        let state = a.body["state"].as_str();
        // A replay is the first send's answer: new to the client when that one was lost.
        let fresh = !a.replayed || a.retries > 0;
        match (&op.taken, op.kind, a.class()) {
            (_, OpKind::Place, Class::Ok) if fresh => {
                if let Some(id) = a.body["id"].as_str() {
                    w.put_order(id.to_string(), "pending");
                    w.all_orders.push(id.to_string());
                }
            }
            (_, OpKind::Initiate, Class::Ok) if fresh => {
                if let Some(id) = a.body["id"].as_str() {
                    w.pending_transfers.push(id.to_string());
                }
            }
            // The answer (or the problem of an invalid transition) says where it is now.
            (Some(Taken::Order(id)), _, Class::Ok | Class::Rejected) => {
                if let Some(state) = state {
                    w.put_order(id.clone(), state);
                }
            }
            (Some(Taken::Transfer(id)), _, Class::Rejected) if state == Some("pending") => {
                w.pending_transfers.push(id.clone());
            }
            // Unknown outcome: it stays out of the lists (conflicting commands still find it).
            _ => {}
        }
    }

    fn note_seen(&self, op: &Op, a: &Answer) {
        let (Some(key), Class::Ok) = (&op.key, a.class()) else { return };
        let created = match (op.kind, a.body["id"].as_str(), a.status) {
            (OpKind::Place, Some(id), Some(201)) => Some(("orders".to_string(), id.to_string())),
            (OpKind::Initiate, Some(id), Some(201)) => Some(("transfers".to_string(), id.to_string())),
            _ => None,
        };
        lock(&self.seen).push(Seen { key: key.clone(), created });
    }

    /// Sends one slot's request(s) and records them against `intended`.
    /// `lose`: this request may lose its response (be re-sent at once or later); not for
    /// recorded traffic, whose retries are in the recording.
    async fn run_slot(
        self: Arc<Self>,
        op: Op,
        intended: Instant,
        stage: usize,
        replay_of: Option<Answer>,
        lose: bool,
    ) {
        let parallel = lose && replay_of.is_none() && op.key.is_some() && {
            let mut w = lock(&self.world);
            w.rng.f64() < self.scenario.lost_parallel_share
        };
        let (first, twin) = if parallel {
            let (a, b) = tokio::join!(
                self.send_retrying(&op, intended, true),
                self.send_retrying(&op, intended, true)
            );
            (a, Some(b))
        } else {
            (self.send_retrying(&op, intended, false).await, None)
        };
        let latency = intended.elapsed();
        let mut answers = vec![first.clone()];
        answers.extend(twin.clone());
        // A re-sent request must get the first outcome back.
        let mismatch = match (&replay_of, &twin) {
            (Some(original), _) => differs(original, &first, false),
            (None, Some(twin)) => differs(&first, twin, true),
            (None, None) => None,
        };
        {
            let mut rec = lock(&self.recorder);
            let t = intended.saturating_duration_since(self.started);
            for a in &answers {
                rec.record(
                    t,
                    stage,
                    op.kind,
                    latency,
                    a.class(),
                    (a.class() == Class::Error).then(|| a.error_kind()),
                );
                rec.record_done(t, latency, a.class() == Class::Error, a.retries);
            }
            if let Some(m) = &mismatch {
                rec.record_error(t, stage, m.clone());
            }
        }
        for a in &answers {
            self.note_seen(&op, a);
        }
        if replay_of.is_none() {
            // Of two parallel copies, the one that ran (not replayed, not refused as in
            // use) says what was made.
            let ran = |a: &Answer| (!a.replayed || a.retries > 0) && a.problem() != "idempotency-key-in-use";
            let fresh = twin.as_ref().filter(|t| !ran(&first) && ran(t)).unwrap_or(&first);
            self.learn(&op, fresh);
            let later = lose && op.key.is_some() && first.class() != Class::Error && {
                let mut w = lock(&self.world);
                w.rng.f64() < self.scenario.lost_later_share
            };
            if later {
                let due = Instant::now() + Duration::from_millis(self.scenario.lost_later_ms);
                lock(&self.later).push_back(Later { due, op, first });
            }
        }
        self.in_flight.fetch_sub(1, Relaxed);
    }

    /// Sends `op` at `intended` unless the client is saturated or the run is over.
    fn launch(
        self: &Arc<Self>,
        op: Op,
        intended: Instant,
        stage: usize,
        replay_of: Option<Answer>,
        lose: bool,
    ) -> bool {
        if self.stop.load(Relaxed) || self.sent.load(Relaxed) >= self.scenario.max_requests {
            self.stop.store(true, Relaxed);
            return false;
        }
        self.sent.fetch_add(1, Relaxed);
        if self.in_flight.load(Relaxed) >= self.scenario.max_in_flight {
            let t = intended.saturating_duration_since(self.started);
            lock(&self.recorder).record_unsent(t, stage, "client saturated (max_in_flight)".to_string());
            return true;
        }
        self.in_flight.fetch_add(1, Relaxed);
        tokio::spawn(self.clone().run_slot(op, intended, stage, replay_of, lose));
        true
    }

    /// The slot's request: a due re-send of a lost response first, else a new one.
    fn slot_op(&self, slot: &Slot) -> (Op, Option<Answer>) {
        if let Slot::Recorded(kind, _) = slot {
            return (self.next_op(Some(*kind)), None);
        }
        let now = Instant::now();
        let due = {
            let mut later = lock(&self.later);
            match later.front() {
                Some(l) if l.due <= now => later.pop_front(),
                _ => None,
            }
        };
        match due {
            Some(l) => (l.op, Some(l.first)),
            None => (self.next_op(None), None),
        }
    }

    /// Runs a schedule of (offset, slot) from now, then waits for the last answers.
    async fn run_schedule(self: &Arc<Self>, schedule: impl Iterator<Item = (Duration, Slot)>, stage: usize) {
        let start = Instant::now();
        let deadline = self.started + Duration::from_secs_f64(self.scenario.max_secs);
        // Recorded keys map to requests of this run, so a recorded retry is a retry here too
        // (sent as is: it takes nothing from the world's lists).
        let mut keys: BTreeMap<String, Op> = BTreeMap::new();
        for (offset, slot) in schedule {
            let at = start + offset;
            if at > deadline {
                self.stop.store(true, Relaxed);
                break;
            }
            tokio::time::sleep_until(at).await;
            let (op, replay_of) = match &slot {
                Slot::Recorded(_, Some(k)) if keys.contains_key(k) => (keys[k].clone(), None),
                _ => self.slot_op(&slot),
            };
            if let Slot::Recorded(_, Some(k)) = &slot {
                keys.entry(k.clone()).or_insert_with(|| Op { taken: None, ..op.clone() });
            }
            let lose = matches!(slot, Slot::New);
            if !self.launch(op, at, stage, replay_of, lose) {
                break;
            }
        }
        self.drain().await;
    }

    /// Waits for the requests in flight (each is bounded by the request timeout, and its
    /// retries by the retry budget).
    async fn drain(&self) {
        let retrying = if self.scenario.retry.attempts > 0 { self.scenario.retry.budget_ms } else { 0 };
        let bound =
            Instant::now() + Duration::from_millis(self.scenario.request_timeout_ms + retrying + 1_000);
        while self.in_flight.load(Relaxed) > 0 && Instant::now() < bound {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// One stage: a schedule (at `per_s` on average), recorded and judged on its own.
    async fn stage(
        self: &Arc<Self>,
        label: String,
        per_s: f64,
        schedule: impl Iterator<Item = (Duration, Slot)>,
    ) -> StageSummary {
        let stage = lock(&self.recorder).begin_stage(label, per_s, self.started.elapsed());
        self.run_schedule(schedule, stage).await;
        lock(&self.recorder).end_stage(stage, self.started.elapsed(), &self.scenario.thresholds)
    }

    /// One stage at a constant rate.
    async fn rate_stage(self: &Arc<Self>, label: String, per_s: f64, secs: f64) -> StageSummary {
        let n = (per_s * secs).round() as u64;
        let schedule = (0..n).map(move |i| (Duration::from_secs_f64(i as f64 / per_s), Slot::New));
        self.stage(label, per_s, schedule).await
    }

    /// Runs `work` under the live progress line.
    async fn with_progress<T>(self: &Arc<Self>, work: impl Future<Output = T>) -> T {
        let progress = tokio::spawn(progress(self.clone()));
        let out = work.await;
        progress.abort();
        end_progress();
        out
    }

    /// The peak search: double until a threshold breaks, then bisect.
    async fn peak(self: &Arc<Self>, from: f64) -> (Option<f64>, Vec<StageSummary>) {
        let p = self.scenario.peak.clone();
        let mut rate = from.max(p.start_per_s);
        let mut good: Option<f64> = None;
        let mut bad: Option<f64> = None;
        let mut steps = Vec::new();
        while !self.stop.load(Relaxed) && rate <= p.max_per_s {
            let s = self.rate_stage(format!("peak {rate:.0}/s"), rate, p.step_secs).await;
            let passed = s.passed;
            steps.push(s);
            if passed {
                good = Some(rate);
                rate *= 2.0;
            } else {
                bad = Some(rate);
                break;
            }
        }
        for _ in 0..p.refine_steps {
            let (Some(g), Some(b)) = (good, bad) else { break };
            if self.stop.load(Relaxed) || b - g < 1.0 {
                break;
            }
            let mid = (g + b) / 2.0;
            let s = self.rate_stage(format!("peak {mid:.0}/s"), mid, p.step_secs).await;
            if s.passed {
                good = Some(mid)
            } else {
                bad = Some(mid)
            }
            steps.push(s);
        }
        (good, steps)
    }

    /// Runs the stages. Returns each stage's summary, the peak found (if one was asked
    /// for) and the steps of its search (which break thresholds by design).
    pub async fn run(
        self: &Arc<Self>,
        stages: &[Stage],
    ) -> (Vec<StageSummary>, Option<f64>, Vec<StageSummary>) {
        self.with_progress(self.stages(stages)).await
    }

    async fn stages(
        self: &Arc<Self>,
        stages: &[Stage],
    ) -> (Vec<StageSummary>, Option<f64>, Vec<StageSummary>) {
        let mut summaries = Vec::new();
        let mut peak = None;
        let mut peak_steps = Vec::new();
        let mut last_rate = 0.0;
        for stage in stages {
            if self.stop.load(Relaxed) {
                break;
            }
            match stage {
                Stage::Rate { per_s, secs } => {
                    summaries.push(self.rate_stage(stage.label(), *per_s, *secs).await);
                    last_rate = *per_s;
                }
                Stage::Peak => {
                    let (found, steps) = self.peak(last_rate).await;
                    peak = found;
                    peak_steps.extend(steps);
                    // How the service runs with headroom: half the peak, held twice as long.
                    if let Some(p) = peak.filter(|_| !self.stop.load(Relaxed)) {
                        let secs = self.scenario.peak.step_secs * 2.0;
                        summaries.push(
                            self.rate_stage(format!("50% of peak {:.0}/s", p / 2.0), p / 2.0, secs).await,
                        );
                    }
                }
            }
        }
        (summaries, peak, peak_steps)
    }

    /// Replays a recorded traffic shape `speed` times faster.
    pub async fn replay(
        self: &Arc<Self>,
        records: &[ordo_record::TrafficRecord],
        speed: f64,
    ) -> StageSummary {
        let first = records.first().map_or(0, |r| r.at_ms);
        let span_s = records.last().map_or(0, |r| r.at_ms - first) as f64 / 1e3 / speed;
        let rate = if span_s > 0.0 { records.len() as f64 / span_s } else { records.len() as f64 };
        let schedule = records.iter().filter_map(move |r| {
            let kind = op_of_route(&r.method, &r.route)?;
            let offset = Duration::from_secs_f64((r.at_ms - first) as f64 / 1e3 / speed);
            Some((offset, Slot::Recorded(kind, r.key.clone())))
        });
        self.with_progress(self.stage(format!("replay {speed}x"), rate, schedule)).await
    }
}

/// The live progress line: rewritten every second on a terminal, a line every five
/// seconds in a log.
async fn progress(d: Arc<Driver>) {
    use std::io::IsTerminal as _;
    let terminal = std::io::stderr().is_terminal();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    for n in 1u64.. {
        tick.tick().await;
        let line = lock(&d.recorder).progress_line(d.started.elapsed());
        if terminal {
            eprint!("\r{line}   ");
        } else if n % 5 == 0 {
            eprintln!("{line}");
        }
    }
}

/// Ends the rewritten progress line on a terminal.
fn end_progress() {
    use std::io::IsTerminal as _;
    if std::io::stderr().is_terminal() {
        eprintln!();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests;
