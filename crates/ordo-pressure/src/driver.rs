//! The open-model load driver. Requests leave at their intended times, whatever the server
//! does; each latency runs from the intended time, so a slow server cannot hide its
//! latency by slowing the sender (no coordinated omission). The traffic follows the shipped
//! specs' lifecycles: orders placed (a share on one hot SKU), paid, shipped, delivered,
//! cancelled and refunded; wallets topped up; transfers initiated, settled and failed. A
//! share of requests lose their response and are sent again with the same key, at once in
//! parallel or later, and each answer is checked against the first.

use crate::report::Tally;
use crate::scenario::Scenario;
use crate::traffic::{Answer, Op, OpKind, Seen, Target};
use anyhow::Result;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;
use workload::World;

mod client;
mod schedule;
mod workload;

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
    pub tally: Mutex<Tally>,
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
            world: Mutex::new(World::new(scenario.seed)),
            hot_sku: format!("hot-{run_id}"),
            run_id,
            target,
            scenario,
            seq: AtomicU64::new(0),
            later: Mutex::new(VecDeque::new()),
            seen: Mutex::new(Vec::new()),
            tally: Mutex::new(Tally::new()),
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
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests;
