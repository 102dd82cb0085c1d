//! Group commit: concurrent commands run many to a transaction, each with its own outcome,
//! idempotency record, journal and outbox rows, as if it had run alone.
//!
//! Commands go to one of a few lanes by what they touch first (a resource key, the
//! resource key a create takes from, an instance), and each lane runs one transaction at a
//! time: the first command of an idle lane starts at once (no added latency at low load),
//! and while a transaction commits the next batch fills. Commands on one key are thus
//! executed in arrival order, so a hot SKU's stock goes to the buyers who came first, and
//! the lane pays one commit for many of them. A batch that fails as a whole (an error that
//! is not a rejection, a lost connection, retries exhausted) is run again one command at a
//! time, so one bad command never fails its neighbours; a command whose first attempt did
//! commit is then answered from its idempotency record.

use crate::exec::Executor;
use crate::{Action, Command, Executed, StoreError};
use ordo_spec::ir;
use serde_json::Value as Json;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::Instant;
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument as _;

/// Commands in one transaction at most. A keyed command takes two savepoints, and
/// PostgreSQL slows every session once a transaction has more than 64 subtransactions.
pub const BATCH_MAX_DEFAULT: usize = 32;
/// Commands waiting in one lane at most; past it a command is refused as busy (503 with
/// Retry-After), never left to wait without bound.
pub const LANE_QUEUE_MAX_DEFAULT: usize = 10_000;
/// Lanes on PostgreSQL (SQLite has one writer, so one lane), at most the pool's size.
pub const LANES_DEFAULT: usize = 8;

/// Counters of the batcher's work, for metrics.
#[derive(Debug, Default)]
pub(crate) struct BatchStats {
    pub batches: AtomicU64,
    pub commands: AtomicU64,
    /// Batches that failed as a whole and were run one command at a time.
    pub split: AtomicU64,
    pub wait_us: AtomicU64,
    pub queued: AtomicUsize,
}

struct Job {
    cmd: Command,
    /// The caller's span: the batch's database spans go under its first command's.
    span: tracing::Span,
    queued: Instant,
    reply: oneshot::Sender<Result<Executed, StoreError>>,
}

pub(crate) struct Batcher {
    lanes: Vec<mpsc::Sender<Job>>,
    pub stats: Arc<BatchStats>,
    spec: Arc<ir::Spec>,
}

impl Batcher {
    pub fn start(exec: Arc<Executor>, lanes: usize, batch_max: usize, queue_max: usize) -> Batcher {
        let stats = Arc::new(BatchStats::default());
        let spec = exec.spec.clone();
        let senders = (0..lanes.max(1))
            .map(|_| {
                let (tx, rx) = mpsc::channel(queue_max.max(1));
                tokio::spawn(lane(exec.clone(), rx, batch_max.max(1), stats.clone()));
                tx
            })
            .collect();
        Batcher { lanes: senders, stats, spec }
    }

    /// Queues a keyed command whose record was just looked for and not found, and waits for
    /// its outcome. The command is queued before this first awaits, so commands submitted
    /// in some order from one task reach their lane in that order.
    pub async fn submit(&self, cmd: Command) -> Result<Executed, StoreError> {
        let (reply, answer) = oneshot::channel();
        let lane = &self.lanes[self.lane_of(&cmd)];
        lane.try_send(Job { cmd, span: tracing::Span::current(), queued: Instant::now(), reply }).map_err(
            |e| match e {
                mpsc::error::TrySendError::Full(_) => {
                    StoreError::Busy { reason: "the command queue is full".to_string() }
                }
                mpsc::error::TrySendError::Closed(_) => {
                    StoreError::Unavailable("the batcher has stopped".to_string())
                }
            },
        )?;
        self.stats.queued.fetch_add(1, Relaxed);
        answer.await.map_err(|_| StoreError::Internal("a batch ended without answering".to_string()))?
    }

    /// The lane of what the command touches first: the resource row an operation or a
    /// create's first effect takes from, else the instance.
    fn lane_of(&self, cmd: &Command) -> usize {
        let mut h = DefaultHasher::new();
        cmd.tenant.hash(&mut h);
        match &cmd.action {
            Action::Operate { resource, key, .. } => (resource, key.to_string()).hash(&mut h),
            Action::Create { machine, input } => {
                let first = self.spec.machine(machine).and_then(|m| m.create.body.effects.first());
                let key = first.and_then(|e| match &e.key {
                    ir::Expr::Field(f) | ir::Expr::Param(f) => input.get(f).map(Json::to_string),
                    ir::Expr::Value(v) => Some(v.to_string()),
                    _ => None,
                });
                match (first, key) {
                    (Some(e), Some(k)) => (&e.resource, k).hash(&mut h),
                    _ => (machine, input.len()).hash(&mut h),
                }
            }
            Action::Fire { machine, id, .. } => (machine, id).hash(&mut h),
        }
        (h.finish() % self.lanes.len() as u64) as usize
    }
}

async fn lane(exec: Arc<Executor>, mut rx: mpsc::Receiver<Job>, batch_max: usize, stats: Arc<BatchStats>) {
    while let Some(first) = rx.recv().await {
        let mut jobs = vec![first];
        while jobs.len() < batch_max {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        stats.queued.fetch_sub(jobs.len(), Relaxed);
        stats.batches.fetch_add(1, Relaxed);
        stats.commands.fetch_add(jobs.len() as u64, Relaxed);
        let waited: u128 = jobs.iter().map(|j| j.queued.elapsed().as_micros()).sum();
        stats.wait_us.fetch_add(u64::try_from(waited).unwrap_or(u64::MAX), Relaxed);
        let cmds: Vec<Command> = jobs.iter().map(|j| j.cmd.clone()).collect();
        let spans: Vec<tracing::Span> = jobs.iter().map(|j| j.span.clone()).collect();
        // In a task of its own, so that a panic in one batch answers its commands with an
        // error and the lane goes on.
        let outcomes =
            tokio::spawn(batch(exec.clone(), cmds, spans, stats.clone())).await.unwrap_or_else(|e| {
                let what = if e.is_panic() { "panicked" } else { "was cancelled" };
                tracing::error!("a batch {what}; its commands are answered with an error");
                (0..jobs.len()).map(|_| Err(StoreError::Internal(format!("the batch {what}")))).collect()
            });
        for (job, outcome) in jobs.into_iter().zip(outcomes) {
            let _ = job.reply.send(outcome);
        }
    }
}

/// Runs one batch: its outcomes in order, one per command.
async fn batch(
    exec: Arc<Executor>,
    cmds: Vec<Command>,
    spans: Vec<tracing::Span>,
    stats: Arc<BatchStats>,
) -> Vec<Result<Executed, StoreError>> {
    // Every queued command's record was looked for before it was queued. The batch's spans
    // go under its first command's request; the others' requests say they ran in a batch.
    for span in &spans[1..] {
        tracing::debug!(parent: span, batched = cmds.len(), "ran in a batch of another request's trace");
    }
    match exec.run(&cmds, true).instrument(spans[0].clone()).await {
        Ok(done) if done.len() == cmds.len() => done.into_iter().map(Ok).collect(),
        Ok(done) => {
            let e = format!("a batch of {} gave {} outcomes", cmds.len(), done.len());
            cmds.iter().map(|_| Err(StoreError::Internal(e.clone()))).collect()
        }
        Err(e) if cmds.len() == 1 => vec![Err(e)],
        Err(e) => {
            tracing::debug!(error = %e, commands = cmds.len(), "a batch failed; running its commands one by one");
            stats.split.fetch_add(1, Relaxed);
            let mut out = Vec::with_capacity(cmds.len());
            for (cmd, span) in cmds.iter().zip(spans) {
                // The batch may have committed before its answer was lost: the record is
                // read again, so such a command is answered from it.
                let result =
                    exec.run(std::slice::from_ref(cmd), false).instrument(span).await.and_then(crate::only);
                out.push(result);
            }
            out
        }
    }
}
