//! The syntax tree: what the user wrote, with a byte span on every node.
//!
//! The checker (`check.rs`) reads it to report mistakes and lower it to the IR;
//! the formatter (`fmt.rs`) prints it back canonically. Nothing here is resolved or typed.

/// A byte range `start..end` into the spec's source text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Span {
    pub start: usize,
    pub end: usize,
}

impl Span {
    pub fn new(start: usize, end: usize) -> Span {
        Span { start, end }
    }

    pub fn range(self) -> std::ops::Range<usize> {
        self.start..self.end
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ident {
    pub name: String,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Spec {
    pub items: Vec<Item>,
    /// Every `// comment` in the file, in order, for the formatter (`parse` collects them;
    /// `compile` and `analyse` do not).
    pub comments: Vec<Comment>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Comment {
    /// The comment's text including the leading `//`, without the line break.
    pub text: String,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    Resource(Resource),
    Machine(Machine),
    Invariant(Invariant),
}

impl Item {
    pub fn span(&self) -> Span {
        match self {
            Item::Resource(r) => r.span,
            Item::Machine(m) => m.span,
            Item::Invariant(i) => i.span,
        }
    }
}

/// `invariant name: terms op terms`: what must hold for every tenant after every command.
#[derive(Debug, Clone, PartialEq)]
pub struct Invariant {
    pub name: Ident,
    pub lhs: Vec<InvTerm>,
    pub op: CmpOp,
    pub rhs: Vec<InvTerm>,
    pub span: Span,
}

/// One term of an invariant's side, added or (`negative`) subtracted.
#[derive(Debug, Clone, PartialEq)]
pub struct InvTerm {
    pub negative: bool,
    pub kind: InvKind,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum InvKind {
    /// `sum(Owner.field)` over a resource's rows or a machine's instances, optionally only
    /// those `in` some states.
    Sum {
        owner: Ident,
        field: Ident,
        states: Option<Vec<Ident>>,
    },
    /// `count(Machine)`, optionally `in` some states.
    Count {
        machine: Ident,
        states: Option<Vec<Ident>>,
    },
    /// `total(Owner.command.parameter)`: the parameter summed over every applied command.
    Total {
        owner: Ident,
        action: Ident,
        param: Ident,
    },
    Int(Literal),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Resource {
    pub name: Ident,
    /// `was Old`: the name in the deployed spec.
    pub was: Option<Ident>,
    pub key: FieldDecl,
    pub members: Vec<ResourceMember>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ResourceMember {
    Field(FieldDecl),
    Operation(Operation),
}

impl ResourceMember {
    pub fn span(&self) -> Span {
        match self {
            ResourceMember::Field(f) => f.span,
            ResourceMember::Operation(o) => o.span,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Operation {
    pub name: Ident,
    pub params: Vec<FieldDecl>,
    pub body: Block,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Machine {
    pub name: Ident,
    pub members: Vec<MachineMember>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum MachineMember {
    Field(FieldDecl),
    States(StateDecl),
    Create(CreateDecl),
    Event(EventDecl),
    Timer(TimerDecl),
    Removed(RemovedDecl),
}

impl MachineMember {
    pub fn span(&self) -> Span {
        match self {
            MachineMember::Field(f) => f.span,
            MachineMember::States(s) => s.span,
            MachineMember::Create(c) => c.span,
            MachineMember::Event(e) => e.span,
            MachineMember::Timer(t) => t.span,
            MachineMember::Removed(r) => r.span,
        }
    }
}

/// A field of a machine or resource, a resource key, or a parameter.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldDecl {
    pub name: Ident,
    /// `was old`: the name in the deployed spec (machine and resource fields only).
    pub was: Option<Ident>,
    pub ty: TypeRef,
    pub checks: Vec<CheckCond>,
    /// `backfill expr`: the value of rows that existed before the field.
    pub backfill: Option<Box<Expr>>,
    pub span: Span,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TypeRef {
    pub base: BaseType,
    pub optional: bool,
    pub span: Span,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BaseType {
    Text,
    Int,
    Money,
    Bool,
    Timestamp,
}

impl BaseType {
    pub fn keyword(self) -> &'static str {
        match self {
            BaseType::Text => "text",
            BaseType::Int => "int",
            BaseType::Money => "money",
            BaseType::Bool => "bool",
            BaseType::Timestamp => "timestamp",
        }
    }
}

/// One comparison of a `check`: `>= 0`.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckCond {
    pub op: CmpOp,
    pub value: Literal,
    pub span: Span,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StateKind {
    Initial,
    Normal,
    Final,
}

impl StateKind {
    pub fn keyword(self) -> &'static str {
        match self {
            StateKind::Initial => "initial",
            StateKind::Normal => "state",
            StateKind::Final => "final",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct StateDecl {
    pub kind: StateKind,
    pub names: Vec<Ident>,
    /// Parallel to `names`: `state settled was shipped`.
    pub was: Vec<Option<Ident>>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CreateDecl {
    pub name: Ident,
    pub params: Vec<FieldDecl>,
    pub body: Option<Block>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub struct EventDecl {
    pub name: Ident,
    /// `was old`: the name in the deployed spec (on any one declaration of the event).
    pub was: Option<Ident>,
    pub params: Vec<FieldDecl>,
    pub sources: Vec<Ident>,
    pub target: Ident,
    pub body: Option<Block>,
    pub span: Span,
}

/// `removed shipped -> delivered`: where live instances of a state that is gone go.
#[derive(Debug, Clone, PartialEq)]
pub struct RemovedDecl {
    pub state: Ident,
    pub into: Ident,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TimerDecl {
    pub after: Duration,
    pub state: Ident,
    pub event: Ident,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Duration {
    /// As written, `1h30m`; `None` in `millis` when it overflows.
    pub text: String,
    pub millis: Option<u64>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Block {
    pub stmts: Vec<Stmt>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Stmt {
    Lock {
        mode: LockMode,
        span: Span,
    },
    Isolation {
        level: IsolationLevel,
        span: Span,
    },
    Require {
        label: Option<Ident>,
        expr: Expr,
        span: Span,
    },
    Set {
        field: Ident,
        value: Expr,
        span: Span,
    },
    /// `Wallet[account].balance -= amount`, in machine bodies.
    Effect {
        resource: Ident,
        key: Expr,
        field: Ident,
        op: DeltaOp,
        amount: Expr,
        span: Span,
    },
    /// `balance += amount`, in resource operations.
    Delta {
        field: Ident,
        op: DeltaOp,
        amount: Expr,
        span: Span,
    },
}

impl Stmt {
    pub fn span(&self) -> Span {
        match self {
            Stmt::Lock { span, .. }
            | Stmt::Isolation { span, .. }
            | Stmt::Require { span, .. }
            | Stmt::Set { span, .. }
            | Stmt::Effect { span, .. }
            | Stmt::Delta { span, .. } => *span,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LockMode {
    Optimistic,
    Pessimistic,
    PessimisticNowait,
    PessimisticSkipLocked,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IsolationLevel {
    ReadCommitted,
    RepeatableRead,
    Serializable,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeltaOp {
    Add,
    Sub,
}

impl DeltaOp {
    pub fn symbol(self) -> &'static str {
        match self {
            DeltaOp::Add => "+=",
            DeltaOp::Sub => "-=",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Expr {
    pub kind: ExprKind,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ExprKind {
    Literal(Literal),
    /// A bare name: a parameter if one is in scope, else a field.
    Name(String),
    /// `self.name`: always the field, even when a parameter shadows it.
    SelfField(String),
    Now,
    Paren(Box<Expr>),
    Not(Box<Expr>),
    Neg(Box<Expr>),
    Binary(BinOp, Box<Expr>, Box<Expr>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Literal {
    pub value: LiteralValue,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LiteralValue {
    /// Kept as written so that an out-of-range number is a diagnostic, not a parse failure.
    Int {
        digits: String,
        negative: bool,
    },
    Text(String),
    Bool(bool),
    Null,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl CmpOp {
    pub fn symbol(self) -> &'static str {
        match self {
            CmpOp::Eq => "==",
            CmpOp::Ne => "!=",
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BinOp {
    Or,
    And,
    Cmp(CmpOp),
    Add,
    Sub,
    Mul,
}

impl BinOp {
    pub fn symbol(self) -> &'static str {
        match self {
            BinOp::Or => "or",
            BinOp::And => "and",
            BinOp::Cmp(c) => c.symbol(),
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
        }
    }
}
