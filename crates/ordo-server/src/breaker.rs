//! Circuit breakers around Redis and around the database, one of each per server process.
//!
//! After `failures` failures in a row a breaker opens: calls are refused at once instead of
//! each waiting out a timeout or a pool (Redis: the request goes on without a lease, on the
//! database-only path, which is correct, only without the first insurance; the database:
//! 503 with Retry-After). After a cool-down (jittered, from `cooldown_ms` growing to ten
//! times that while the probes keep failing) it half-opens: one call goes through as a
//! probe while the others are still refused; the probe's success closes the breaker, its
//! failure opens it again. The state machine is `failsafe`'s; the cool-downs (its own are
//! whole seconds), the one probe at a time, the counters and the log lines are ours.

use failsafe::failure_policy::{ConsecutiveFailures, consecutive_failures};
use failsafe::{Instrument, StateMachine};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Failures in a row that open a breaker.
pub const BREAKER_FAILURES_DEFAULT: u32 = 5;
/// The first cool-down of an open breaker before it lets a probe through.
pub const BREAKER_COOLDOWN_MS_DEFAULT: u64 = 1_000;

/// A breaker's state, as `ordo_breaker_state` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Closed = 0,
    HalfOpen = 1,
    Open = 2,
}

impl State {
    fn of(n: u8) -> State {
        match n {
            0 => State::Closed,
            1 => State::HalfOpen,
            _ => State::Open,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::HalfOpen => "half-open",
            State::Open => "open",
        }
    }
}

/// What a breaker has done, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerStats {
    pub state: State,
    /// Times it opened from closed.
    pub trips: u64,
    /// Times it closed again by itself (a probe succeeded).
    pub recoveries: u64,
    /// Calls refused while open, or half-open with a probe out.
    pub refused: u64,
}

/// The breaker's side of the state machine's events.
#[derive(Debug, Default)]
struct Watch {
    name: &'static str,
    state: AtomicU8,
    trips: AtomicU64,
    recoveries: AtomicU64,
    refused: AtomicU64,
    probing: AtomicBool,
}

/// The state machine's handle on a breaker's [`Watch`].
struct Observer(Arc<Watch>);

impl Instrument for Observer {
    fn on_call_rejected(&self) {
        self.0.refused.fetch_add(1, Relaxed);
    }

    fn on_open(&self) {
        if State::of(self.0.state.swap(State::Open as u8, Relaxed)) == State::Closed {
            self.0.trips.fetch_add(1, Relaxed);
            tracing::warn!(breaker = self.0.name, "circuit breaker opened: calls are refused at once");
        }
    }

    fn on_half_open(&self) {
        self.0.state.store(State::HalfOpen as u8, Relaxed);
    }

    fn on_closed(&self) {
        if State::of(self.0.state.swap(State::Closed as u8, Relaxed)) != State::Closed {
            self.0.recoveries.fetch_add(1, Relaxed);
            tracing::info!(breaker = self.0.name, "circuit breaker closed: the dependency answers again");
        }
    }
}

/// How far a cool-down grows while probes fail: a dependency back after a long outage is
/// used again within this many cool-downs (measured by `cargo xtask chaos`: with ten, a
/// PostgreSQL restart of one second kept the breaker open for ten).
pub const COOLDOWN_GROWTH_MAX: u64 = 4;

/// Cool-downs doubling from a start up to [`COOLDOWN_GROWTH_MAX`] times it, each jittered
/// over its upper half so that servers do not probe a recovering dependency all at once.
#[derive(Debug, Clone)]
struct Cooldowns {
    next_ms: u64,
    max_ms: u64,
}

impl Iterator for Cooldowns {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let ms = self.next_ms;
        self.next_ms = ms.saturating_mul(2).min(self.max_ms);
        Some(Duration::from_millis(ms / 2 + fastrand::u64(0..=ms / 2)))
    }
}

pub struct Breaker {
    machine: StateMachine<ConsecutiveFailures<Cooldowns>, Observer>,
    watch: Arc<Watch>,
}

/// Ends a probe however its call ends (a dropped request included), so that the next call
/// of a half-open breaker can probe.
struct Probe<'a>(&'a AtomicBool);

impl Drop for Probe<'_> {
    fn drop(&mut self) {
        self.0.store(false, Relaxed);
    }
}

impl Breaker {
    /// `name` labels its metrics and log lines (`redis`, `database`).
    pub fn new(name: &'static str, failures: u32, cooldown_ms: u64) -> Breaker {
        let start = cooldown_ms.max(1);
        let cooldowns = Cooldowns { next_ms: start, max_ms: start.saturating_mul(COOLDOWN_GROWTH_MAX) };
        let policy = consecutive_failures(failures.max(1), cooldowns);
        let watch = Arc::new(Watch { name, ..Watch::default() });
        Breaker { machine: StateMachine::new(policy, Observer(watch.clone())), watch }
    }

    /// Runs `work` unless the breaker refuses it (`None`: nothing was tried). `fails` says
    /// which errors are the dependency's failing (a refusal for bad input is not).
    pub async fn call<T, E>(
        &self,
        work: impl Future<Output = Result<T, E>>,
        fails: impl Fn(&E) -> bool,
    ) -> Option<Result<T, E>> {
        if !self.machine.is_call_permitted() {
            return None;
        }
        let _probe = if self.state() == State::HalfOpen {
            if self.watch.probing.swap(true, Relaxed) {
                self.watch.refused.fetch_add(1, Relaxed);
                return None;
            }
            Some(Probe(&self.watch.probing))
        } else {
            None
        };
        let result = work.await;
        match &result {
            Err(e) if fails(e) => self.machine.on_error(),
            _ => self.machine.on_success(),
        }
        Some(result)
    }

    pub fn state(&self) -> State {
        State::of(self.watch.state.load(Relaxed))
    }

    pub fn stats(&self) -> BreakerStats {
        BreakerStats {
            state: self.state(),
            trips: self.watch.trips.load(Relaxed),
            recoveries: self.watch.recoveries.load(Relaxed),
            refused: self.watch.refused.load(Relaxed),
        }
    }

    pub fn name(&self) -> &'static str {
        self.watch.name
    }
}

/// What a refused database call answers: the client is told to retry after a while.
const CIRCUIT_OPEN: &str =
    "circuit open: the database failed repeatedly; calls are refused until a probe succeeds";

/// The breakers of one server: Redis (the leases) and the database (every store call).
pub struct Breakers {
    pub redis: Breaker,
    pub database: Breaker,
}

impl Breakers {
    pub fn new(failures: u32, cooldown_ms: u64) -> Breakers {
        Breakers {
            redis: Breaker::new("redis", failures, cooldown_ms),
            database: Breaker::new("database", failures, cooldown_ms),
        }
    }

    /// A store call through the database breaker. Only a database that cannot be reached
    /// counts against it (contention, rejections and bad input do not); refused, the call
    /// is `Unavailable` at once (503 with Retry-After).
    pub async fn db<T>(
        &self,
        work: impl Future<Output = Result<T, ordo_store::StoreError>>,
    ) -> Result<T, ordo_store::StoreError> {
        use ordo_store::StoreError;
        let refused = || Err(StoreError::Unavailable(CIRCUIT_OPEN.to_string()));
        self.database.call(work, |e| matches!(e, StoreError::Unavailable(_))).await.unwrap_or_else(refused)
    }

    /// A Redis call through its breaker (any error counts); `None`: refused, go on
    /// without Redis.
    pub async fn redis<T, E>(&self, work: impl Future<Output = Result<T, E>>) -> Option<Result<T, E>> {
        self.redis.call(work, |_| true).await
    }

    pub fn each(&self) -> [&Breaker; 2] {
        [&self.database, &self.redis]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn fail(b: &Breaker) -> Option<Result<(), ()>> {
        b.call(async { Err(()) }, |_| true).await
    }

    async fn succeed(b: &Breaker) -> Option<Result<(), ()>> {
        b.call(async { Ok(()) }, |_| true).await
    }

    #[tokio::test]
    async fn opens_after_failures_in_a_row_and_closes_by_itself_after_a_probe() {
        let b = Breaker::new("test", 3, 50);
        for _ in 0..2 {
            assert_eq!(fail(&b).await, Some(Err(())));
        }
        assert_eq!(succeed(&b).await, Some(Ok(())), "a success starts the count again");
        for _ in 0..3 {
            assert_eq!(fail(&b).await, Some(Err(())));
        }
        assert_eq!(b.state(), State::Open);
        assert_eq!(succeed(&b).await, None, "refused at once while open");
        // Past the cool-down (jittered between 25 and 50 ms), one probe goes through.
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert_eq!(succeed(&b).await, Some(Ok(())));
        assert_eq!(b.state(), State::Closed);
        assert_eq!(b.stats(), BreakerStats { state: State::Closed, trips: 1, recoveries: 1, refused: 1 });
    }

    #[tokio::test]
    async fn a_failed_probe_opens_it_again_and_errors_that_are_not_failures_do_not_count() {
        let b = Breaker::new("test", 1, 20);
        assert_eq!(
            b.call(async { Err::<(), _>("bad input") }, |e| *e != "bad input").await,
            Some(Err("bad input"))
        );
        assert_eq!(b.state(), State::Closed);
        assert_eq!(fail(&b).await, Some(Err(())));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(fail(&b).await, Some(Err(())), "the probe");
        assert_eq!(b.state(), State::Open);
        assert_eq!(succeed(&b).await, None);
        assert_eq!(b.stats().trips, 1, "a trip is counted from closed only");
    }

    #[tokio::test]
    async fn half_open_lets_one_probe_through_at_a_time_even_one_that_is_dropped() {
        let b = Arc::new(Breaker::new("test", 1, 20));
        assert_eq!(fail(&b).await, Some(Err(())));
        tokio::time::sleep(Duration::from_millis(50)).await;
        let (started, release) = (tokio::sync::Notify::new(), tokio::sync::Notify::new());
        let probe = b.call(
            async {
                started.notify_one();
                release.notified().await;
                Ok::<(), ()>(())
            },
            |_| true,
        );
        let others = async {
            started.notified().await;
            assert_eq!(b.state(), State::HalfOpen);
            let other = succeed(&b).await;
            release.notify_one();
            other
        };
        let (probed, other) = tokio::join!(probe, others);
        assert_eq!((probed, other), (Some(Ok(())), None), "the second call waits for the probe's verdict");
        assert_eq!(b.state(), State::Closed);

        // A probe whose caller went away frees the next call to probe.
        assert_eq!(fail(&b).await, Some(Err(())));
        tokio::time::sleep(Duration::from_millis(250)).await;
        let dropped = b.call(std::future::pending::<Result<(), ()>>(), |_| true);
        assert!(tokio::time::timeout(Duration::from_millis(10), dropped).await.is_err());
        assert_eq!(succeed(&b).await, Some(Ok(())));
        assert_eq!(b.state(), State::Closed);
    }
}
