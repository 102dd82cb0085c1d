//! Group commit: concurrent commands on one key run many to a transaction, each with its
//! own outcome, idempotency record, journal and outbox rows, as if it had run alone.
//!
//! Every keyed command has a key: what it touches first (an operation's resource row, the
//! row a create's first effect takes from, else the instance). A command whose key has no
//! batch in flight starts at once, alone (no added latency, and commands on different keys
//! never wait for each other); one that arrives while a batch of its key runs waits in that
//! key's queue, and when the batch commits the next one takes the queue, up to `batch_max`.
//! Commands on one key thus run in arrival order, so a hot SKU's stock goes to the buyers
//! who came first, and the key pays one commit for many of them.
//!
//! A batch that fails as a whole (an error that is not a rejection, a lost connection,
//! retries exhausted) is run again one command at a time, so one bad command never fails
//! its neighbours; a command whose first attempt did commit is then answered from its
//! idempotency record. A batch that panics answers its commands with an error, and its key
//! goes on. A command whose request gave up while it waited is not run; one that waited
//! longer than `batch_wait_ms_max` is answered busy (503), so an overload sheds instead of
//! building a backlog that outlives it.

use crate::exec::Executor;
use crate::{Action, Command, Executed, StoreError};
use serde_json::Value as Json;
use std::collections::{HashMap, VecDeque};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use tracing::Instrument as _;

/// Commands in one batch at most. The fast path (keyed creates) runs a batch in one
/// transaction with a fixed number of statements; the general path splits it.
pub const BATCH_MAX_DEFAULT: usize = 128;
/// Commands in one transaction of the general path at most: a keyed command takes two
/// savepoints, and PostgreSQL slows every session once a transaction has more than 64
/// subtransactions.
pub const SAVEPOINT_BATCH_MAX: usize = 32;
/// Commands waiting on one key at most; past it a command is refused as busy (503 with
/// Retry-After).
pub const KEY_QUEUE_MAX_DEFAULT: usize = 10_000;
/// How long a command may wait for its key before it is answered busy instead of run.
pub const BATCH_WAIT_MS_MAX_DEFAULT: u64 = 2_000;

/// Counters of the batcher's work, for metrics.
#[derive(Debug, Default)]
pub(crate) struct BatchStats {
    pub batches: AtomicU64,
    pub commands: AtomicU64,
    /// Batches that failed as a whole and were run one command at a time.
    pub split: AtomicU64,
    /// Commands not run: their request gave up, or they waited too long.
    pub shed: AtomicU64,
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

/// The keys with a batch in flight, each with the commands waiting for it.
type Queues = Mutex<HashMap<u64, VecDeque<Job>>>;

pub(crate) struct Batcher {
    queues: Arc<Queues>,
    exec: Arc<Executor>,
    pub stats: Arc<BatchStats>,
    batch_max: usize,
    queue_max: usize,
    wait_max: Duration,
}

impl Batcher {
    pub fn new(exec: Arc<Executor>, batch_max: usize, queue_max: usize, wait_ms_max: u64) -> Batcher {
        Batcher {
            queues: Arc::new(Mutex::new(HashMap::new())),
            exec,
            stats: Arc::new(BatchStats::default()),
            batch_max: batch_max.max(1),
            queue_max: queue_max.max(1),
            wait_max: Duration::from_millis(wait_ms_max),
        }
    }

    /// Runs a keyed command whose record was just looked for and not found, with the other
    /// commands of its key. It is queued before this first awaits, so commands submitted in
    /// some order from one task reach their key's queue in that order.
    pub async fn submit(&self, cmd: Command) -> Result<Executed, StoreError> {
        let key = self.key_of(&cmd);
        let (reply, answer) = oneshot::channel();
        let job = Job { cmd, span: tracing::Span::current(), queued: Instant::now(), reply };
        let start = {
            let mut queues = self.queues.lock().map_err(|_| poisoned())?;
            match queues.get_mut(&key) {
                Some(waiting) if waiting.len() >= self.queue_max => {
                    return Err(StoreError::Busy { reason: "too many commands wait on one key".to_string() });
                }
                Some(waiting) => {
                    waiting.push_back(job);
                    self.stats.queued.fetch_add(1, Relaxed);
                    None
                }
                None => {
                    queues.insert(key, VecDeque::new());
                    Some(job)
                }
            }
        };
        if let Some(job) = start {
            let driver = Driver {
                key,
                queues: self.queues.clone(),
                exec: self.exec.clone(),
                stats: self.stats.clone(),
                batch_max: self.batch_max,
                wait_max: self.wait_max,
            };
            tokio::spawn(driver.run(vec![job]));
        }
        answer.await.map_err(|_| StoreError::Internal("a batch ended without answering".to_string()))?
    }

    /// What the command touches first, hashed with its tenant.
    fn key_of(&self, cmd: &Command) -> u64 {
        let mut h = DefaultHasher::new();
        cmd.tenant.hash(&mut h);
        match &cmd.action {
            Action::Operate { resource, key, .. } => (resource, key.to_string()).hash(&mut h),
            Action::Create { machine, input } => {
                let first = self.exec.spec.machine(machine).and_then(|m| m.create.body.effects.first());
                let key = first.and_then(|e| match &e.key {
                    ordo_spec::ir::Expr::Field(f) | ordo_spec::ir::Expr::Param(f) => {
                        input.get(f).map(Json::to_string)
                    }
                    ordo_spec::ir::Expr::Value(v) => Some(v.to_string()),
                    _ => None,
                });
                match (first, key) {
                    (Some(e), Some(k)) => (&e.resource, k).hash(&mut h),
                    // Nothing shared to queue behind: a key of its own.
                    _ => uuid::Uuid::now_v7().hash(&mut h),
                }
            }
            Action::Fire { machine, id, .. } => (machine, id).hash(&mut h),
        }
        h.finish()
    }
}

fn poisoned() -> StoreError {
    StoreError::Internal("the batch queues were poisoned by a panic".to_string())
}

/// Runs the batches of one key until its queue is empty, then lets the key go.
struct Driver {
    key: u64,
    queues: Arc<Queues>,
    exec: Arc<Executor>,
    stats: Arc<BatchStats>,
    batch_max: usize,
    wait_max: Duration,
}

impl Driver {
    async fn run(self, mut jobs: Vec<Job>) {
        loop {
            self.stats.batches.fetch_add(1, Relaxed);
            self.stats.commands.fetch_add(jobs.len() as u64, Relaxed);
            let waited: u128 = jobs.iter().map(|j| j.queued.elapsed().as_micros()).sum();
            self.stats.wait_us.fetch_add(u64::try_from(waited).unwrap_or(u64::MAX), Relaxed);
            let cmds: Vec<Command> = jobs.iter().map(|j| j.cmd.clone()).collect();
            let spans: Vec<tracing::Span> = jobs.iter().map(|j| j.span.clone()).collect();
            // In a task of its own, so that a panic answers its commands and the key goes on.
            let outcomes = tokio::spawn(batch(self.exec.clone(), cmds, spans, self.stats.clone()))
                .await
                .unwrap_or_else(|e| {
                    let what = if e.is_panic() { "panicked" } else { "was cancelled" };
                    tracing::error!("a batch {what}; its commands are answered with an error");
                    (0..jobs.len()).map(|_| Err(StoreError::Internal(format!("the batch {what}")))).collect()
                });
            for (job, outcome) in jobs.drain(..).zip(outcomes) {
                let _ = job.reply.send(outcome);
            }
            match self.next() {
                Some(next) => jobs = next,
                None => return,
            }
        }
    }

    /// The next batch of the key, or `None` when nothing waits (the key is let go).
    fn next(&self) -> Option<Vec<Job>> {
        let mut queues = match self.queues.lock() {
            Ok(q) => q,
            Err(p) => p.into_inner(),
        };
        loop {
            let waiting = queues.get_mut(&self.key)?;
            let mut jobs = Vec::new();
            while jobs.len() < self.batch_max {
                let Some(job) = waiting.pop_front() else { break };
                self.stats.queued.fetch_sub(1, Relaxed);
                if job.reply.is_closed() {
                    // Its request gave up before it ran: as if it had never come.
                    self.stats.shed.fetch_add(1, Relaxed);
                } else if job.queued.elapsed() > self.wait_max {
                    self.stats.shed.fetch_add(1, Relaxed);
                    let _ = job.reply.send(Err(StoreError::Busy {
                        reason: "the command waited too long for its key".to_string(),
                    }));
                } else {
                    jobs.push(job);
                }
            }
            if !jobs.is_empty() {
                return Some(jobs);
            }
            if waiting.is_empty() {
                queues.remove(&self.key);
                return None;
            }
        }
    }
}

/// Runs one batch: its outcomes in order, one per command. Keyed creates take the fast path
/// (`bulk`); anything else, or a batch the fast path hands back, runs a savepoint per
/// command, at most `SAVEPOINT_BATCH_MAX` commands to a transaction.
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
    match exec.run_bulk(&cmds).instrument(spans[0].clone()).await {
        Ok(Some(done)) if done.len() == cmds.len() => return done.into_iter().map(Ok).collect(),
        Ok(Some(done)) => return mismatch(cmds.len(), done.len()),
        Ok(None) => {}
        Err(e) => return one_by_one(&exec, &cmds, spans, &stats, &e).await,
    }
    let mut out = Vec::with_capacity(cmds.len());
    for (chunk, spans) in cmds.chunks(SAVEPOINT_BATCH_MAX).zip(spans.chunks(SAVEPOINT_BATCH_MAX)) {
        match exec.run(chunk, true).instrument(spans[0].clone()).await {
            Ok(done) if done.len() == chunk.len() => out.extend(done.into_iter().map(Ok)),
            Ok(done) => out.extend(mismatch(chunk.len(), done.len())),
            Err(e) if chunk.len() == 1 => out.push(Err(e)),
            Err(e) => out.extend(one_by_one(&exec, chunk, spans.to_vec(), &stats, &e).await),
        }
    }
    out
}

fn mismatch(commands: usize, outcomes: usize) -> Vec<Result<Executed, StoreError>> {
    let e = format!("a batch of {commands} gave {outcomes} outcomes");
    (0..commands).map(|_| Err(StoreError::Internal(e.clone()))).collect()
}

/// After a batch failed as a whole: its commands one at a time, each reading its record
/// again (the batch may have committed before its answer was lost: such a command is
/// answered from its record).
async fn one_by_one(
    exec: &Executor,
    cmds: &[Command],
    spans: Vec<tracing::Span>,
    stats: &BatchStats,
    error: &StoreError,
) -> Vec<Result<Executed, StoreError>> {
    tracing::debug!(%error, commands = cmds.len(), "a batch failed; running its commands one by one");
    stats.split.fetch_add(1, Relaxed);
    let mut out = Vec::with_capacity(cmds.len());
    for (cmd, span) in cmds.iter().zip(spans) {
        out.push(exec.run(std::slice::from_ref(cmd), false).instrument(span).await.and_then(crate::only));
    }
    out
}
