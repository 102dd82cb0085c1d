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
    /// `done`: commands placed; `must`: the answered ones, all to be placed (the others may
    /// be placed, or left out: they then never happened).
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
            // An unanswered or failed command that is never placed never happened: the
            // search ends once every answered one is placed, whatever is left unplaced.
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Action, Outcome, Rejection};
    use serde_json::json;

    const SPEC: &str = "resource Wallet key id: text {
    balance: money check >= 0
    op deposit(amount: money check >= 1) {
        balance += amount
    }
    op withdraw(amount: money check >= 1) {
        balance -= amount
    }
}
machine Noop {
    initial open
    final closed
    create make
    on close: open -> closed
}
";

    fn spec() -> ir::Spec {
        ordo_spec::compile(SPEC).expect("the test spec compiles")
    }

    fn op(name: &str, amount: i64) -> Command {
        let params = json!({ "amount": amount }).as_object().cloned().unwrap_or_default();
        Command {
            key: None,
            action: Action::Operate {
                resource: "Wallet".into(),
                key: json!("w"),
                operation: name.into(),
                params,
            },
        }
    }

    /// What `cmd` gives on `world`, as if observed.
    fn seen(spec: &ir::Spec, world: &World, cmd: &Command) -> Executed {
        world.clone().step(spec, cmd, Utc::now(), "")
    }

    fn at(invoked: u64, returned: u64, command: Command, observed: Observed) -> Op {
        Op { client: 0, invoked, returned, command, now: Utc::now(), new_id: String::new(), observed }
    }

    #[test]
    fn overlapping_commands_may_take_effect_in_either_order() {
        let spec = spec();
        let mut start = World::default();
        start.step(&spec, &op("deposit", 10), Utc::now(), "");
        // Two withdrawals of 6 overlap; the second invoked was applied, the first refused:
        // only the order "second, then first" explains it.
        let mut w = start.clone();
        let applied = w.step(&spec, &op("withdraw", 6), Utc::now(), "");
        let refused = seen(&spec, &w, &op("withdraw", 6));
        assert!(matches!(refused.outcome, Outcome::Rejected(Rejection::ResourceCheck { .. })));
        let ops = [
            at(0, 10, op("withdraw", 6), Observed::Done(refused.clone())),
            at(1, 9, op("withdraw", 6), Observed::Done(applied.clone())),
        ];
        let found = linearize(&spec, &start, &ops, &|a, b| a == b, &|_| true).expect("linearizable");
        assert_eq!(found.order, [1, 0]);
        // Not overlapping (the refused one returned first): no order explains it.
        let ops = [
            at(0, 1, op("withdraw", 6), Observed::Done(refused)),
            at(2, 3, op("withdraw", 6), Observed::Done(applied)),
        ];
        let why = linearize(&spec, &start, &ops, &|a, b| a == b, &|_| true).expect_err("not linearizable");
        assert_eq!(why.longest, Vec::<usize>::new());
        assert_eq!(why.misfits.len(), 1);
    }

    #[test]
    fn a_command_without_an_answer_happened_once_or_never() {
        let spec = spec();
        let start = World::default();
        let balance = |w: &World, want: i64| {
            w.rows.values().next().and_then(|r| r.fields.get("balance").cloned())
                == Some(crate::Val::Int(want))
        };
        let lost = at(0, u64::MAX, op("deposit", 5), Observed::Unknown);
        let ops = [lost.clone()];
        assert!(linearize(&spec, &start, &ops, &|a, b| a == b, &|w| balance(w, 5)).is_ok(), "once");
        assert!(linearize(&spec, &start, &ops, &|a, b| a == b, &|w| w.rows.is_empty()).is_ok(), "never");
        let twice = |w: &World| balance(w, 10);
        let why = linearize(&spec, &start, &ops, &|a, b| a == b, &twice).expect_err("not twice");
        assert!(why.final_rows_differ);
        // Refused without effect: never placed.
        let ops = [at(0, 1, op("deposit", 5), Observed::NoEffect)];
        assert!(linearize(&spec, &start, &ops, &|a, b| a == b, &|w| balance(w, 5)).is_err());
    }
}
