//! Random specs that pass the checker: resources with checked counters and operations,
//! machines with chains of states, finals, extra edges (several sources, back to earlier
//! states), parameters with ranges, guards with every comparison, sets, effects on the
//! resources, lock modes and timers. Conformance on them tests "any valid spec runs
//! correctly", beyond the specs we wrote by hand.

use std::fmt::Write as _;

const OPS: [&str; 6] = ["==", "!=", "<", "<=", ">", ">="];

/// A spec's text from `seed` (the same seed, the same text). It may still fail the checker
/// in rare shapes; [`generate`] keeps only those that pass.
pub fn source(seed: u64) -> String {
    let mut g = Gen { rng: fastrand::Rng::with_seed(seed), out: String::new() };
    g.spec();
    g.out
}

/// The first spec at or after `seed` that passes the checker, with the seed it came from.
pub fn generate(seed: u64) -> (u64, String, ordo_spec::ir::Spec) {
    for s in seed.. {
        let text = source(s);
        if let Ok(spec) = ordo_spec::compile(&text) {
            return (s, text, spec);
        }
    }
    unreachable!("the seeds ran out")
}

struct Gen {
    rng: fastrand::Rng,
    out: String,
}

impl Gen {
    fn line(&mut self, s: &str) {
        self.out.push_str(s);
        self.out.push('\n');
    }

    fn spec(&mut self) {
        let resources = self.rng.usize(1..=2);
        for r in 0..resources {
            self.resource(r);
        }
        for m in 0..self.rng.usize(1..=2) {
            self.machine(m, resources);
        }
    }

    fn resource(&mut self, r: usize) {
        let key = if self.rng.bool() { "text" } else { "int" };
        self.line(&format!("resource Stock{r} key id: {key} {{"));
        let cap =
            if self.rng.bool() { format!(" and <= {}", self.rng.i64(50..=2000)) } else { String::new() };
        self.line(&format!("    level: int check >= 0{cap}"));
        self.line("    op fill(amount: int check >= 1) {");
        self.line("        level += amount");
        self.line("    }");
        if self.rng.bool() {
            let limit = self.rng.i64(1..=100);
            let op = OPS[self.rng.usize(2..6)];
            self.line("    op drain(amount: int check >= 1) {");
            if self.rng.bool() {
                self.line("        lock pessimistic");
            }
            self.line(&format!("        require amount {op} {limit}"));
            self.line("        level -= amount");
            self.line("    }");
        }
        self.line("}");
        self.line("");
    }

    fn machine(&mut self, i: usize, resources: usize) {
        let normals = self.rng.usize(1..=3);
        let finals = self.rng.usize(1..=2);
        let qty_min = self.rng.i64(0..=1);
        let qty_max = self.rng.i64(5..=500);
        self.line(&format!("machine Job{i} {{"));
        self.line("    item: text check != \"\"");
        self.line(&format!("    qty: int check >= {qty_min} and <= {qty_max}"));
        self.line("    note: text?");
        self.line("    score: int check >= 0");
        self.line("");
        let states: Vec<String> = (0..normals).map(|s| format!("s{s}")).collect();
        let ends: Vec<String> = (0..finals).map(|f| format!("d{f}")).collect();
        self.line("    initial s0");
        if normals > 1 {
            self.line(&format!("    state {}", states[1..].join(", ")));
        }
        self.line(&format!("    final {}", ends.join(", ")));
        self.line("");

        self.line("    create make {");
        self.guard(false, "");
        if self.rng.bool() {
            self.line("        set score = qty");
        }
        if self.rng.bool() {
            let r = self.rng.usize(0..resources);
            self.line(&format!("        Stock{r}[{}].level -= qty", self.key_of(r)));
        }
        self.line("    }");

        // Events: the chain through the normal states, one into each final (the first from
        // the last normal state, so none is a dead end), and a few extra edges.
        let mut events: Vec<(Vec<String>, String)> = Vec::new();
        for s in 1..normals {
            events.push((vec![states[s - 1].clone()], states[s].clone()));
        }
        for (f, end) in ends.iter().enumerate() {
            let from = if f == 0 { normals - 1 } else { self.rng.usize(0..normals) };
            events.push((vec![states[from].clone()], end.clone()));
        }
        for _ in 0..self.rng.usize(0..=2) {
            let a = self.rng.usize(0..normals);
            let mut from = vec![states[a].clone()];
            let b = self.rng.usize(0..normals);
            if b != a {
                from.push(states[b].clone());
            }
            let all: Vec<&String> = states.iter().chain(&ends).collect();
            let to = all[self.rng.usize(0..all.len())].clone();
            events.push((from, to));
        }
        let mut plain: Vec<(usize, String)> = Vec::new();
        for (e, (from, to)) in events.iter().enumerate() {
            let has_param = self.rng.u8(0..3) == 0;
            if !has_param {
                plain.extend(from.iter().map(|s| (e, s.clone())));
            }
            self.event(e, from, to, has_param, resources);
        }
        // At most one timer per state, on an event without parameters that leaves it.
        let mut timed: Vec<String> = Vec::new();
        for (e, s) in plain {
            if !timed.contains(&s) && self.rng.u8(0..3) == 0 {
                let after = ["500ms", "5m", "1h", "2d"][self.rng.usize(0..4)];
                self.line(&format!("    after {after} in {s}: e{e}"));
                timed.push(s);
            }
        }
        self.line("}");
        self.line("");
    }

    fn event(&mut self, e: usize, from: &[String], to: &str, has_param: bool, resources: usize) {
        self.line("");
        let params = if has_param {
            format!("(p: int check >= {} and <= {})", self.rng.i64(0..=2), self.rng.i64(5..=50))
        } else {
            String::new()
        };
        self.line(&format!("    on e{e}{params}: {} -> {to} {{", from.join(", ")));
        match self.rng.u8(0..5) {
            0 => self.line("        lock pessimistic"),
            1 => self.line("        lock pessimistic nowait"),
            _ => {}
        }
        self.guard(has_param, &format!("g{e}"));
        match self.rng.u8(0..5) {
            0 if has_param => self.line("        set score = p"),
            1 => self.line("        set score = score + 1"),
            2 => self.line(&format!("        set note = \"n{e}\"")),
            3 => self.line("        set note = null"),
            _ => {}
        }
        if self.rng.bool() {
            let r = self.rng.usize(0..resources);
            let op = if self.rng.bool() { "+=" } else { "-=" };
            let amount = if has_param && self.rng.bool() { "p" } else { "qty" };
            self.line(&format!("        Stock{r}[{}].level {op} {amount}", self.key_of(r)));
        }
        self.line("    }");
    }

    /// A guard, sometimes: on the parameter, a field, or the optional note.
    fn guard(&mut self, has_param: bool, label: &str) {
        let op = OPS[self.rng.usize(0..OPS.len())];
        let c = self.rng.i64(0..=20);
        let label = if label.is_empty() || self.rng.bool() { String::new() } else { format!("{label}: ") };
        let mut s = String::new();
        match self.rng.u8(0..6) {
            0 | 1 if has_param => {
                let _ = write!(s, "require {label}p {op} {c}");
            }
            2 => {
                let _ = write!(s, "require {label}qty {op} {c}");
            }
            3 => {
                let _ = write!(s, "require {label}note == null or note != \"n1\"");
            }
            4 => {
                let _ = write!(s, "require {label}score + qty {op} {c} and item != \"k2\"");
            }
            _ => return,
        }
        self.line(&format!("        {s}"));
    }

    /// What a machine's effect names a resource row by: `item` (text) or `qty` (int).
    fn key_of(&self, r: usize) -> &'static str {
        // Stock{r}'s key type was drawn when the resource was written; read it back.
        let head = format!("resource Stock{r} key id: ");
        match self.out.find(&head).map(|at| &self.out[at + head.len()..]) {
            Some(rest) if rest.starts_with("int") => "qty",
            _ => "item",
        }
    }
}
