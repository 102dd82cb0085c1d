//! The lowered, checked lifecycle: plain data the store and codegen consume.
//!
//! Every name here has been resolved and every expression type-checked, so consumers never
//! re-validate. There are no spans: two texts that mean the same thing lower to equal IR
//! (the formatter's test relies on it). Order follows the source, so output is stable.

pub use crate::ast::{BinOp, CmpOp};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Spec {
    pub resources: Vec<Resource>,
    pub machines: Vec<Machine>,
    /// What must hold for every tenant after every command.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub invariants: Vec<Invariant>,
}

/// `invariant name: lhs op rhs`, each side a sum of aggregates over one tenant's rows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invariant {
    pub name: String,
    /// The invariant in canonical spec syntax, for messages.
    pub text: String,
    pub lhs: Vec<Term>,
    pub op: CmpOp,
    pub rhs: Vec<Term>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Term {
    /// Subtracted rather than added.
    pub negative: bool,
    pub value: Aggregate,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Aggregate {
    /// A whole-number field summed over a resource's rows or a machine's instances (those in
    /// `states`, or all when it is empty); a null counts as zero.
    Sum {
        owner: String,
        field: String,
        states: Vec<String>,
    },
    /// A machine's instances (those in `states`, or all).
    Count {
        machine: String,
        states: Vec<String>,
    },
    /// A whole-number parameter summed over every applied command: a machine's create
    /// (its fields and parameters) or event, or a resource's operation.
    Total {
        owner: String,
        action: String,
        param: String,
    },
    Const(i64),
}

/// An aggregate in spec syntax: `sum(Order.quantity in pending, paid)`.
impl std::fmt::Display for Aggregate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let within = |states: &[String]| {
            if states.is_empty() { String::new() } else { format!(" in {}", states.join(", ")) }
        };
        match self {
            Aggregate::Sum { owner, field, states } => write!(f, "sum({owner}.{field}{})", within(states)),
            Aggregate::Count { machine, states } => write!(f, "count({machine}{})", within(states)),
            Aggregate::Total { owner, action, param } => write!(f, "total({owner}.{action}.{param})"),
            Aggregate::Const(i) => write!(f, "{i}"),
        }
    }
}

impl Invariant {
    /// Whether `lhs op rhs` holds for the sides' values.
    pub fn holds(&self, lhs: i128, rhs: i128) -> bool {
        match self.op {
            CmpOp::Eq => lhs == rhs,
            CmpOp::Ne => lhs != rhs,
            CmpOp::Lt => lhs < rhs,
            CmpOp::Le => lhs <= rhs,
            CmpOp::Gt => lhs > rhs,
            CmpOp::Ge => lhs >= rhs,
        }
    }
}

impl Spec {
    pub fn resource(&self, name: &str) -> Option<&Resource> {
        self.resources.iter().find(|r| r.name == name)
    }

    pub fn machine(&self, name: &str) -> Option<&Machine> {
        self.machines.iter().find(|m| m.name == name)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Type {
    Text,
    Int,
    /// Integer minor units (cents); never a float.
    Money,
    Bool,
    Timestamp,
}

/// The largest magnitude of a whole number a request may carry (2^53 - 1, the largest
/// integer every JSON client reads exactly). Stored totals may grow past it; one request
/// cannot take a row near the 64-bit limit, where sums would overflow.
pub const INT_INPUT_ABS_MAX: i64 = (1 << 53) - 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Field {
    pub name: String,
    pub ty: Type,
    pub optional: bool,
    /// All must hold (when the value is present); the store makes them CHECK constraints.
    pub checks: Vec<Check>,
    /// `was old`: the field's name in the deployed spec (a rename, for migrations).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub was: Option<String>,
    /// `backfill expr`: what rows that existed before the field get, computed over the row
    /// (`Expr::Field` names the row's other fields). Migrations only; creates give the field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backfill: Option<Expr>,
}

impl Field {
    /// A field of `ty` without checks or evolution clauses.
    pub fn plain(name: &str, ty: Type, optional: bool) -> Field {
        Field { name: name.to_string(), ty, optional, checks: Vec::new(), was: None, backfill: None }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    pub op: CmpOp,
    pub value: Value,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Value {
    Text(String),
    Int(i64),
    Bool(bool),
    Null,
}

/// A constant as the spec writes it: `1`, `"text"`, `true`, `null`.
impl std::fmt::Display for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Value::Int(i) => write!(f, "{i}"),
            Value::Text(s) => write!(f, "{s:?}"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Null => write!(f, "null"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resource {
    pub name: String,
    /// The table's name: snake case, plural (`Inventory` -> `inventories`).
    pub table: String,
    pub key: Field,
    pub fields: Vec<Field>,
    pub operations: Vec<Operation>,
    /// `was Old`: the resource's name in the deployed spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub was: Option<String>,
}

impl Resource {
    pub fn field(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.name == name)
    }
}

/// A state-changing operation on one resource row, such as `deposit` or `restock`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Operation {
    pub name: String,
    pub params: Vec<Field>,
    pub body: Body,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Machine {
    pub name: String,
    /// The table's name: snake case, plural (`Order` -> `orders`).
    pub table: String,
    pub fields: Vec<Field>,
    pub states: Vec<State>,
    pub initial: String,
    pub create: Create,
    pub events: Vec<Event>,
    pub timers: Vec<Timer>,
    /// `removed old -> new`: where live instances of states the spec no longer has go.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removed: Vec<Removed>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Removed {
    pub state: String,
    pub into: String,
}

impl Machine {
    pub fn field(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.name == name)
    }

    pub fn event(&self, name: &str) -> Option<&Event> {
        self.events.iter().find(|e| e.name == name)
    }

    pub fn state(&self, name: &str) -> Option<&State> {
        self.states.iter().find(|s| s.name == name)
    }

    /// The events that have a transition from `state`, in declaration order.
    pub fn events_from<'a>(&'a self, state: &'a str) -> impl Iterator<Item = &'a Event> + 'a {
        self.events.iter().filter(move |e| e.transition_from(state).is_some())
    }

    pub fn timers_in<'a>(&'a self, state: &'a str) -> impl Iterator<Item = &'a Timer> + 'a {
        self.timers.iter().filter(move |t| t.state == state)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StateKind {
    Initial,
    Normal,
    Final,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub name: String,
    pub kind: StateKind,
    /// `was old`: the state's name in the deployed spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub was: Option<String>,
}

/// How an instance comes into being: its body runs with the machine's fields as input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Create {
    pub name: String,
    /// Extra inputs besides the machine's fields.
    pub params: Vec<Field>,
    pub body: Body,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub name: String,
    pub params: Vec<Field>,
    /// At most one transition per source state (the checker guarantees it).
    pub transitions: Vec<Transition>,
    /// `was old`: the event's name in the deployed spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub was: Option<String>,
}

impl Event {
    pub fn transition_from(&self, state: &str) -> Option<&Transition> {
        self.transitions.iter().find(|t| t.from.iter().any(|s| s == state))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transition {
    pub from: Vec<String>,
    pub to: String,
    pub body: Body,
}

/// `after 30m in pending: cancel`: entering `state` schedules `event` after `after_ms`;
/// leaving the state first cancels it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timer {
    pub state: String,
    pub after_ms: u64,
    pub event: String,
}

/// What a create, transition or resource operation does, all in one database transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Body {
    pub lock: Lock,
    pub isolation: Isolation,
    pub guards: Vec<Guard>,
    pub sets: Vec<Assign>,
    /// Changes to rows of resources, addressed by key (machine bodies only).
    pub effects: Vec<Effect>,
    /// Changes to the operation's own resource row (resource operations only).
    pub deltas: Vec<Delta>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Lock {
    /// One conditional UPDATE per row; the check and the write are one statement.
    Optimistic,
    /// SELECT ... FOR UPDATE, waiting for the lock.
    Pessimistic,
    /// SELECT ... FOR UPDATE NOWAIT: fail at once when the row is locked.
    PessimisticNowait,
    /// SELECT ... FOR UPDATE SKIP LOCKED: treat a locked row as absent.
    PessimisticSkipLocked,
}

/// Ordered from weakest to strictest, so the strictest of several is their `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Isolation {
    ReadCommitted,
    RepeatableRead,
    Serializable,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Guard {
    /// The label the spec gives (`require has_carrier: ...`), else the guard's text.
    pub name: String,
    /// The condition in canonical spec syntax, for messages: `carrier != ""`.
    pub text: String,
    pub expr: Expr,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assign {
    pub field: String,
    pub value: Expr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeltaOp {
    Add,
    Sub,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Effect {
    pub resource: String,
    pub key: Expr,
    pub field: String,
    pub op: DeltaOp,
    pub amount: Expr,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delta {
    pub field: String,
    pub op: DeltaOp,
    pub amount: Expr,
}

/// A typed expression. `Field` is the row's stored value (the machine's or the resource's,
/// in a create the incoming value); `Param` is the request's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Expr {
    Value(Value),
    Field(String),
    Param(String),
    Now,
    Not(Box<Expr>),
    Neg(Box<Expr>),
    Binary { op: BinOp, lhs: Box<Expr>, rhs: Box<Expr> },
}

/// `WalletHold` -> `wallet_hold`: how a machine or resource name appears in paths.
pub fn snake_name(name: &str) -> String {
    let mut snake = String::with_capacity(name.len() + 4);
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 && !snake.ends_with('_') {
                snake.push('_');
            }
            snake.push(c.to_ascii_lowercase());
        } else {
            snake.push(c);
        }
    }
    snake
}

/// `Order` -> `orders`, `Inventory` -> `inventories`, `WalletHold` -> `wallet_holds`.
pub fn table_name(name: &str) -> String {
    let snake = snake_name(name);
    if let Some(stem) = snake.strip_suffix('y').filter(|s| !s.ends_with(['a', 'e', 'i', 'o', 'u'])) {
        format!("{stem}ies")
    } else if snake.ends_with('s') || snake.ends_with('x') || snake.ends_with("ch") || snake.ends_with("sh") {
        format!("{snake}es")
    } else {
        format!("{snake}s")
    }
}

#[cfg(test)]
mod tests {
    use super::table_name;

    #[test]
    fn table_names() {
        for (name, table) in [
            ("Order", "orders"),
            ("Inventory", "inventories"),
            ("Wallet", "wallets"),
            ("WalletHold", "wallet_holds"),
            ("Key", "keys"),
            ("Box", "boxes"),
            ("Address", "addresses"),
            ("order_line", "order_lines"),
        ] {
            assert_eq!(table_name(name), table, "{name}");
        }
    }
}
