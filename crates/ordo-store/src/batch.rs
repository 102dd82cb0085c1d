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
//! Batches of different keys that the fast path can run together (keyed creates and events
//! at read committed: `Executor::bulk_kind`) also share transactions: they run in at most
//! `lanes` transactions at once, and a batch that finds every lane busy waits for the next
//! free one, which takes every batch waiting then (up to `batch_max` commands) in one
//! transaction. With a lane free a batch starts at once, so a quiet server adds no latency;
//! a busy one pays one commit for many keys. The fast path locks every row in the one lock
//! order, so these transactions never wait for each other in a cycle.
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
/// Transactions that combine several keys' batches running at once at most; 0: keys never
/// share a transaction. Sharing pays one commit for many keys (the pressure mix's peak
/// doubled with 4); a combined transaction holds every shared row it touches for all its
/// commands, which is what the other lanes are for: see docs/operations.md, "Group commit".
pub const BATCH_LANES_DEFAULT: usize = 4;
/// How long a hot key's next batch waits for more of its commands (a key is hot when its
/// last batch held more than one). Zero: never waits.
pub const BATCH_LINGER_MS_DEFAULT: u64 = 1;

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

/// The batcher's limits.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub batch_max: usize,
    pub queue_max: usize,
    pub wait_max: Duration,
    pub lanes: usize,
    /// How long a hot key's next batch waits for its clients to come back.
    pub linger: Duration,
}

pub(crate) struct Batcher {
    queues: Arc<Queues>,
    lanes: Arc<Lanes>,
    exec: Arc<Executor>,
    pub stats: Arc<BatchStats>,
    limits: Limits,
}

impl Batcher {
    pub fn new(exec: Arc<Executor>, limits: Limits) -> Batcher {
        let limits =
            Limits { batch_max: limits.batch_max.max(1), queue_max: limits.queue_max.max(1), ..limits };
        let stats = Arc::new(BatchStats::default());
        let lanes = Arc::new(Lanes {
            state: Mutex::new(LaneState { free: limits.lanes, ready: VecDeque::new() }),
            exec: exec.clone(),
            stats: stats.clone(),
            limits,
        });
        Batcher { queues: Arc::new(Mutex::new(HashMap::new())), lanes, exec, stats, limits }
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
                Some(waiting) if waiting.len() >= self.limits.queue_max => {
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
                lanes: self.lanes.clone(),
                exec: self.exec.clone(),
                stats: self.stats.clone(),
                limits: self.limits,
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
    lanes: Arc<Lanes>,
    exec: Arc<Executor>,
    stats: Arc<BatchStats>,
    limits: Limits,
}

impl Driver {
    async fn run(self, mut jobs: Vec<Job>) {
        loop {
            // A key whose batch held several commands is hot: its clients come back within
            // a round trip, so the next batch waits a moment for them rather than starting
            // with the first alone and leaving the rest to the batch after it.
            let hot = jobs.len() > 1;
            let shared = self.limits.lanes > 0
                && jobs
                    .iter()
                    .all(|j| self.exec.bulk_kind(&j.cmd) == Some(ordo_spec::ir::Isolation::ReadCommitted));
            if shared {
                let (done, finished) = oneshot::channel();
                self.lanes.submit(Group { jobs: std::mem::take(&mut jobs), done });
                let _ = finished.await;
            } else {
                run_jobs(&self.exec, &self.stats, std::mem::take(&mut jobs)).await;
            }
            if hot && self.limits.linger > Duration::ZERO && self.waiting() < 2 {
                tokio::time::sleep(self.limits.linger).await;
            }
            match self.next() {
                Some(next) => jobs = next,
                None => return,
            }
        }
    }

    /// How many commands wait for the key.
    fn waiting(&self) -> usize {
        let queues = locked(&self.queues);
        queues.get(&self.key).map_or(0, VecDeque::len)
    }

    /// The next batch of the key, or `None` when nothing waits (the key is let go).
    fn next(&self) -> Option<Vec<Job>> {
        let mut queues = locked(&self.queues);
        loop {
            let waiting = queues.get_mut(&self.key)?;
            let mut jobs = Vec::new();
            while jobs.len() < self.limits.batch_max {
                let Some(job) = waiting.pop_front() else { break };
                self.stats.queued.fetch_sub(1, Relaxed);
                jobs.extend(admit(job, &self.stats, self.limits.wait_max));
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

/// A job that is still to run: not one whose request gave up (as if it had never come), nor
/// one that waited past `wait_max` (answered busy).
fn admit(job: Job, stats: &BatchStats, wait_max: Duration) -> Option<Job> {
    if job.reply.is_closed() {
        stats.shed.fetch_add(1, Relaxed);
        None
    } else if job.queued.elapsed() > wait_max {
        stats.shed.fetch_add(1, Relaxed);
        let _ = job
            .reply
            .send(Err(StoreError::Busy { reason: "the command waited too long for its key".to_string() }));
        None
    } else {
        Some(job)
    }
}

/// Runs jobs in one batch and answers each.
async fn run_jobs(exec: &Arc<Executor>, stats: &Arc<BatchStats>, jobs: Vec<Job>) {
    if jobs.is_empty() {
        return;
    }
    stats.batches.fetch_add(1, Relaxed);
    stats.commands.fetch_add(jobs.len() as u64, Relaxed);
    let waited: u128 = jobs.iter().map(|j| j.queued.elapsed().as_micros()).sum();
    stats.wait_us.fetch_add(u64::try_from(waited).unwrap_or(u64::MAX), Relaxed);
    let cmds: Vec<Command> = jobs.iter().map(|j| j.cmd.clone()).collect();
    let spans: Vec<tracing::Span> = jobs.iter().map(|j| j.span.clone()).collect();
    // In a task of its own, so that a panic answers its commands and the keys go on.
    let outcomes = tokio::spawn(batch(exec.clone(), cmds, spans, stats.clone())).await.unwrap_or_else(|e| {
        let what = if e.is_panic() { "panicked" } else { "was cancelled" };
        tracing::error!("a batch {what}; its commands are answered with an error");
        (0..jobs.len()).map(|_| Err(StoreError::Internal(format!("the batch {what}")))).collect()
    });
    for (job, outcome) in jobs.into_iter().zip(outcomes) {
        let _ = job.reply.send(outcome);
    }
}

/// One key's batch waiting for a lane; `done` tells its key's driver that it was answered.
struct Group {
    jobs: Vec<Job>,
    done: oneshot::Sender<()>,
}

struct LaneState {
    free: usize,
    ready: VecDeque<Group>,
}

/// The transactions that combine several keys' batches.
struct Lanes {
    state: Mutex<LaneState>,
    exec: Arc<Executor>,
    stats: Arc<BatchStats>,
    limits: Limits,
}

/// A mutex's guard, also after a panic elsewhere poisoned it: what it guards (queues of
/// jobs, lane counts) stays consistent, since nothing panics between its updates.
fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Lanes {
    /// Queues a key's batch for the next free lane, starting a lane when one is free.
    fn submit(self: &Arc<Self>, group: Group) {
        // Waiting for a lane is waiting too: the queue-depth gauge counts these commands.
        self.stats.queued.fetch_add(group.jobs.len(), Relaxed);
        let start = {
            let mut state = locked(&self.state);
            state.ready.push_back(group);
            let start = state.free > 0;
            if start {
                state.free -= 1;
            }
            start
        };
        if start {
            tokio::spawn(self.clone().lane());
        }
    }

    /// One lane: takes every batch waiting (up to `batch_max` commands) into one
    /// transaction, until none waits.
    async fn lane(self: Arc<Self>) {
        loop {
            let groups = {
                let mut state = locked(&self.state);
                let mut groups: Vec<Group> = Vec::new();
                let mut n = 0;
                while let Some(next) = state.ready.front() {
                    if !groups.is_empty() && n + next.jobs.len() > self.limits.batch_max {
                        break;
                    }
                    n += next.jobs.len();
                    groups.extend(state.ready.pop_front());
                }
                if groups.is_empty() {
                    state.free += 1;
                    return;
                }
                self.stats.queued.fetch_sub(n, Relaxed);
                groups
            };
            let mut jobs = Vec::new();
            let mut done = Vec::with_capacity(groups.len());
            for g in groups {
                jobs.extend(g.jobs.into_iter().filter_map(|j| admit(j, &self.stats, self.limits.wait_max)));
                done.push(g.done);
            }
            run_jobs(&self.exec, &self.stats, jobs).await;
            for d in done {
                let _ = d.send(());
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
        out.push(
            exec.run(std::slice::from_ref(cmd), false).instrument(span).await.and_then(crate::command::only),
        );
    }
    out
}
