//! Linearizability of a concurrent history against the interpreter (Wing and Gong's search,
//! with Lowe's memo of visited configurations): is there an order of the commands,
//! consistent with real time (one that returned before another was invoked comes first), in
//! which [`World::step`] gives exactly the observed outcomes, and which ends in the observed
//! rows? Exact, and small enough to trust; it is meant for histories of tens of commands.

use crate::{Command, Executed, World};
use chrono::{DateTime, Utc};
use ordo_spec::ir;
use std::collections::HashSet;

/// One command of a history: when it was invoked and answered (on one clock), and what
/// the caller saw.
#[derive(Debug, Clone)]
pub struct Op {
    /// Which client sent it (for the report).
    pub client: usize,
    pub invoked: u64,
    pub returned: u64,
    pub command: Command,
    /// The time the interpreter evaluates `now` at.
    pub now: DateTime<Utc>,
    /// The id a create that applied was given.
    pub new_id: String,
    pub observed: Observed,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Observed {
    /// Answered with an outcome.
    Done(Executed),
    /// Failed without effect (a lock not available, a refused batch): it must not appear.
    NoEffect,
    /// No answer (the connection was lost): it may have taken effect once, or not at all.
    Unknown,
}

/// The most commands one history may hold.
pub const OPS_MAX: usize = 64;

/// The most configurations one search visits before it gives up (and says so).
pub const CONFIGURATIONS_MAX: usize = 2_000_000;

/// An order that fits, and how many configurations the search visited to find it.
#[derive(Debug, Clone)]
pub struct Linearization {
    pub order: Vec<usize>,
    pub visited: usize,
}

/// Why no order fits.
#[derive(Debug, Clone)]
pub struct NotLinearizable {
    /// The longest order found in which every command got its observed outcome.
    pub longest: Vec<usize>,
    /// What the interpreter answered for each command that could come next but did not fit,
    /// after the longest order: (command, the interpreter's outcome).
    pub misfits: Vec<(usize, Executed)>,
    /// Whether every command fitted but the final rows did not.
    pub final_rows_differ: bool,
    /// Whether the search stopped at [`CONFIGURATIONS_MAX`] without an answer.
    pub gave_up: bool,
    pub visited: usize,
}

/// An order of `ops` (indices) in which the interpreter, starting from `start`, gives every
/// observed outcome (as `same` compares them) and ends in a world `ends` accepts.
pub fn linearize(
    spec: &ir::Spec,
    start: &World,
    ops: &[Op],
    same: &dyn Fn(&Executed, &Executed) -> bool,
    ends: &dyn Fn(&World) -> bool,
) -> Result<Linearization, NotLinearizable> {
    assert!(ops.len() <= OPS_MAX, "a history of {} commands is over {OPS_MAX}", ops.len());
    let mut search = Search {
        spec,
        ops,
        same,
        ends,
        seen: HashSet::new(),
        order: Vec::new(),
        best: NotLinearizable {
            longest: Vec::new(),
            misfits: Vec::new(),
            final_rows_differ: false,
            gave_up: false,
            visited: 0,
        },
    };
    let must: u64 = ops
        .iter()
        .enumerate()
        .filter(|(_, o)| matches!(o.observed, Observed::Done(_)))
        .fold(0, |m, (i, _)| m | (1 << i));
    if search.dfs(start.clone(), 0, must) {
        Ok(Linearization { order: search.order, visited: search.seen.len() })
    } else {
        search.best.visited = search.seen.len();
        Err(search.best)
    }
}

struct Search<'a> {
    spec: &'a ir::Spec,
    ops: &'a [Op],
    same: &'a dyn Fn(&Executed, &Executed) -> bool,
    ends: &'a dyn Fn(&World) -> bool,
    /// Configurations already explored: the commands placed and the world they left.
    seen: HashSet<(u64, u64)>,
    order: Vec<usize>,
    best: NotLinearizable,
}

impl Search<'_> {
    /// `done`: commands placed or skipped; `must`: the answered ones, all to be placed.
    fn dfs(&mut self, world: World, done: u64, must: u64) -> bool {
        if done & must == must {
            if (self.ends)(&world) {
                return true;
            }
            if self.order.len() >= self.best.longest.len() {
                self.best = self.failure(Vec::new(), true);
            }
            // Commands without an answer may still come: try them below.
        }
        if self.best.gave_up || !self.seen.insert((done, world.digest())) {
            return false;
        }
        if self.seen.len() > CONFIGURATIONS_MAX {
            self.best.gave_up = true;
            return false;
        }
        let mut misfits = Vec::new();
        for i in 0..self.ops.len() {
            if done & (1 << i) != 0 || !self.may_come_next(i, done) {
                continue;
            }
            let op = &self.ops[i];
            let mut next = world.clone();
            let got = next.step(self.spec, &op.command, op.now, &op.new_id);
            let fits = match &op.observed {
                Observed::Done(seen) => (self.same)(seen, &got),
                // Without effect: it is skipped, never placed.
                Observed::NoEffect => false,
                // Placing one that changes nothing is the same as skipping it (below).
                Observed::Unknown => next != world,
            };
            if fits {
                self.order.push(i);
                if self.dfs(next, done | (1 << i), must) {
                    return true;
                }
                self.order.pop();
            } else if matches!(op.observed, Observed::Done(_)) {
                misfits.push((i, got));
            }
            // An unanswered or failed command may also never have happened.
            if !matches!(op.observed, Observed::Done(_)) && self.dfs(world.clone(), done | (1 << i), must) {
                return true;
            }
        }
        if !misfits.is_empty() && self.order.len() > self.best.longest.len()
            || self.best.longest.is_empty() && self.best.misfits.is_empty()
        {
            self.best = self.failure(misfits, false);
        }
        false
    }

    /// The order so far as the best failure found.
    fn failure(&self, misfits: Vec<(usize, Executed)>, final_rows_differ: bool) -> NotLinearizable {
        NotLinearizable {
            longest: self.order.clone(),
            misfits,
            final_rows_differ,
            gave_up: false,
            visited: 0,
        }
    }

    /// No command still to place returned before `i` was invoked.
    fn may_come_next(&self, i: usize, done: u64) -> bool {
        let invoked = self.ops[i].invoked;
        self.ops.iter().enumerate().all(|(j, o)| {
            j == i
                || done & (1 << j) != 0
                || !matches!(o.observed, Observed::Done(_))
                || o.returned >= invoked
        })
    }
}
