//! The scheduler: slots sent at their intended times (new requests, due re-sends of lost
//! answers, recorded traffic), each slot's answers recorded and compared, stages at a rate,
//! the peak search, replays, and the live progress line.

use super::{Driver, Later, Slot, lock};
use crate::report::StageSummary;
use crate::scenario::Stage;
use crate::traffic::{Answer, Class, Op, differs, op_of_route};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;
use tokio::time::Instant;

impl Driver {
    /// Sends one slot's request(s) and records them against `intended`.
    /// `lose`: this request may lose its response (be re-sent at once or later); not for
    /// recorded traffic, whose retries are in the recording.
    pub(super) async fn run_slot(
        self: Arc<Self>,
        op: Op,
        intended: Instant,
        stage: usize,
        replay_of: Option<Answer>,
        lose: bool,
    ) {
        let parallel =
            lose && replay_of.is_none() && op.key.is_some() && self.chance(self.scenario.lost_parallel_share);
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
            let mut rec = lock(&self.tally);
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
            let later = lose
                && op.key.is_some()
                && first.class() != Class::Error
                && self.chance(self.scenario.lost_later_share);
            if later {
                let due = Instant::now() + Duration::from_millis(self.scenario.lost_later_ms);
                lock(&self.later).push_back(Later { due, op, first });
            }
        }
        self.in_flight.fetch_sub(1, Relaxed);
    }

    /// Sends `op` at `intended` unless the client is saturated or the run is over.
    pub(super) fn launch(
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
            lock(&self.tally).record_unsent(t, stage, "client saturated (max_in_flight)".to_string());
            return true;
        }
        self.in_flight.fetch_add(1, Relaxed);
        tokio::spawn(self.clone().run_slot(op, intended, stage, replay_of, lose));
        true
    }

    /// The slot's request: a due re-send of a lost response first, else a new one.
    pub(super) fn slot_op(&self, slot: &Slot) -> (Op, Option<Answer>) {
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
    pub(super) async fn run_schedule(
        self: &Arc<Self>,
        schedule: impl Iterator<Item = (Duration, Slot)>,
        stage: usize,
    ) {
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
    pub(super) async fn drain(&self) {
        let retrying = if self.scenario.retry.attempts > 0 { self.scenario.retry.budget_ms } else { 0 };
        let bound =
            Instant::now() + Duration::from_millis(self.scenario.request_timeout_ms + retrying + 1_000);
        while self.in_flight.load(Relaxed) > 0 && Instant::now() < bound {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// One stage: a schedule (at `per_s` on average), recorded and judged on its own.
    pub(super) async fn stage(
        self: &Arc<Self>,
        label: String,
        per_s: f64,
        schedule: impl Iterator<Item = (Duration, Slot)>,
    ) -> StageSummary {
        let stage = lock(&self.tally).begin_stage(label, per_s, self.started.elapsed());
        self.run_schedule(schedule, stage).await;
        lock(&self.tally).end_stage(stage, self.started.elapsed(), &self.scenario.thresholds)
    }

    /// One stage at a constant rate.
    pub(super) async fn rate_stage(self: &Arc<Self>, label: String, per_s: f64, secs: f64) -> StageSummary {
        let n = (per_s * secs).round() as u64;
        let schedule = (0..n).map(move |i| (Duration::from_secs_f64(i as f64 / per_s), Slot::New));
        self.stage(label, per_s, schedule).await
    }

    /// Runs `work` under the live progress line.
    pub(super) async fn with_progress<T>(self: &Arc<Self>, work: impl Future<Output = T>) -> T {
        let progress = tokio::spawn(progress(self.clone()));
        let out = work.await;
        progress.abort();
        end_progress();
        out
    }

    /// The peak search: double until a threshold breaks, then bisect.
    pub(super) async fn peak(self: &Arc<Self>, from: f64) -> (Option<f64>, Vec<StageSummary>) {
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

    pub(super) async fn stages(
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
        let line = lock(&d.tally).progress_line(d.started.elapsed());
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
