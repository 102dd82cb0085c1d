//! The SQL of every command, compiled once at start-up per backend (sea-query through
//! sea-orm): each statement's text plus the list of values to bind, in placeholder order.
//!
//! Statements are built with a unique marker value in every bind position; building them
//! with the backend's builder then tells, placeholder by placeholder, which value goes where.

use crate::schema::{self, Col, IDEMPOTENCY, JOURNAL, OUTBOX, TIMERS};
use crate::value::Val;
use ordo_spec::ir::{self, BinOp, CmpOp, Type};
use sea_orm::DbBackend;
use sea_orm::sea_query::{
    Alias, Expr, ExprTrait, LockType, OnConflict, Query, ReturningClause, SelectStatement,
};
use std::collections::BTreeMap;
use std::fmt;

#[cfg(test)]
mod agree;
mod many;
mod render;
mod resource;
mod system;
pub use many::Many;
pub use render::render;
use resource::resource_plan;
pub use resource::{effect_field, zero};
use system::system_plan;

/// Where one bound value comes from when the statement runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Tenant,
    /// The machine instance's id.
    Id,
    /// The resource row's key.
    Key,
    Now,
    /// The `If-Match` version the caller expects.
    Version,
    Param(String),
    /// A value computed before the statement (create inputs, effect amounts, journal data).
    Value(String),
    Const(Val),
}

/// The SQL type a value is bound as (a NULL needs one too).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SqlType {
    Of(Type),
    Uuid,
}

impl SqlType {
    /// The type's name in PostgreSQL, as a bound value is cast to it.
    pub fn pg_name(self) -> &'static str {
        match self {
            SqlType::Uuid => "UUID",
            SqlType::Of(Type::Int | Type::Money) => "BIGINT",
            SqlType::Of(Type::Text) => "TEXT",
            SqlType::Of(Type::Bool) => "BOOLEAN",
            SqlType::Of(Type::Timestamp) => "TIMESTAMPTZ",
        }
    }
}

impl From<Type> for SqlType {
    fn from(t: Type) -> SqlType {
        SqlType::Of(t)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    pub source: Source,
    pub ty: SqlType,
}

impl Slot {
    pub fn new(source: Source, ty: impl Into<SqlType>) -> Slot {
        Slot { source, ty: ty.into() }
    }
}

/// One compiled statement.
#[derive(Debug, Clone)]
pub struct Sql {
    pub sql: String,
    pub slots: Vec<Slot>,
}

impl fmt::Display for Sql {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{};", self.sql)?;
        for (i, s) in self.slots.iter().enumerate() {
            let what = match &s.source {
                Source::Tenant => "tenant".to_string(),
                Source::Id => "id".to_string(),
                Source::Key => "key".to_string(),
                Source::Now => "now".to_string(),
                Source::Version => "expected version".to_string(),
                Source::Param(p) => format!("param {p}"),
                Source::Value(v) => format!("value {v}"),
                Source::Const(c) => format!("constant {}", c.to_json()),
            };
            write!(f, "\n  -- ${}: {what}", i + 1)?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("compiling the SQL of {what}: {reason}")]
pub struct PlanError {
    what: String,
    reason: String,
}

/// `$n` becomes `CAST($n AS <type>)`: a statement's text then says its values' types, so
/// two statements alike but for a value's type are two prepared statements (sqlx caches
/// them by text; one prepared for a `BIGINT` would read the bytes of a `TEXT` or, as bad,
/// a `TIMESTAMPTZ` of the same width), and PostgreSQL never has to guess a value's type
/// from its context. Slot values are never written into the text, so every `$` in it is a
/// placeholder.
fn cast_placeholders(sql: &str, slots: &[Slot]) -> String {
    let mut out = String::with_capacity(sql.len() + slots.len() * 16);
    let mut rest = sql;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let digits = rest[at + 1..].bytes().take_while(u8::is_ascii_digit).count();
        let n: usize = rest[at + 1..at + 1 + digits].parse().expect("a placeholder's number");
        let ty = slots.get(n - 1).expect("a placeholder for every slot").ty.pg_name();
        out.push_str(&format!("CAST(${n} AS {ty})"));
        rest = &rest[at + 1 + digits..];
    }
    out.push_str(rest);
    out
}

/// Collects the slots of a statement under construction.
#[derive(Default)]
struct Slots {
    slots: Vec<Slot>,
}

const MARKER: &str = "\u{1}ordo-slot:";

impl Slots {
    fn bind(&mut self, source: Source, ty: impl Into<SqlType>) -> Expr {
        let i = self.slots.len();
        self.slots.push(Slot::new(source, ty));
        Expr::val(format!("{MARKER}{i}"))
    }

    fn value(&mut self, source: Source, ty: impl Into<SqlType>) -> sea_orm::Value {
        let i = self.slots.len();
        self.slots.push(Slot::new(source, ty));
        sea_orm::Value::String(Some(format!("{MARKER}{i}")))
    }

    /// Builds `stmt` for `backend` and orders the slots as its placeholders are.
    fn finish<S: sea_orm::StatementBuilder>(
        self,
        backend: DbBackend,
        stmt: &S,
        what: &str,
    ) -> Result<Sql, PlanError> {
        let built = backend.build(stmt);
        let values = built.values.map(|v| v.0).unwrap_or_default();
        let mut slots = Vec::with_capacity(values.len());
        for v in values {
            let index = match &v {
                sea_orm::Value::String(Some(s)) => {
                    s.strip_prefix(MARKER).and_then(|i| i.parse::<usize>().ok())
                }
                _ => None,
            };
            let slot = index.and_then(|i| self.slots.get(i)).ok_or_else(|| PlanError {
                what: what.to_string(),
                reason: format!("a value the plan does not know: {v:?}"),
            })?;
            slots.push(slot.clone());
        }
        let sql = match backend {
            DbBackend::Postgres => cast_placeholders(&built.sql, &slots),
            _ => built.sql,
        };
        Ok(Sql { sql, slots })
    }
}

fn a(name: &str) -> Alias {
    Alias::new(name)
}

fn const_ty(v: &ir::Value, hint: Type) -> Type {
    match v {
        ir::Value::Text(_) => Type::Text,
        ir::Value::Int(_) => {
            if hint == Type::Money {
                Type::Money
            } else {
                Type::Int
            }
        }
        ir::Value::Bool(_) => Type::Bool,
        ir::Value::Null => hint,
    }
}

/// What names mean in an expression compiled to SQL.
struct Names<'a> {
    /// Fields are columns of the statement's one table.
    fields: &'a [ir::Field],
    params: &'a [ir::Field],
}

impl Names<'_> {
    fn field_ty(&self, name: &str) -> Type {
        self.fields.iter().find(|f| f.name == name).map_or(Type::Text, |f| f.ty)
    }
    fn param_ty(&self, name: &str) -> Type {
        self.params.iter().find(|f| f.name == name).map_or(Type::Text, |f| f.ty)
    }

    /// The type an expression has, for typing the NULLs and constants bound next to it.
    fn ty(&self, e: &ir::Expr) -> Type {
        match e {
            ir::Expr::Value(v) => const_ty(v, Type::Int),
            ir::Expr::Field(f) => self.field_ty(f),
            ir::Expr::Param(p) => self.param_ty(p),
            ir::Expr::Now => Type::Timestamp,
            ir::Expr::Not(_) => Type::Bool,
            ir::Expr::Neg(x) => self.ty(x),
            ir::Expr::Binary { op, lhs, rhs } => match op {
                BinOp::And | BinOp::Or | BinOp::Cmp(_) => Type::Bool,
                _ => match (self.ty(lhs), self.ty(rhs)) {
                    (Type::Money, _) | (_, Type::Money) => Type::Money,
                    (t, _) => t,
                },
            },
        }
    }

    /// Compiles an IR expression to SQL over the table's columns and bound parameters.
    fn expr(&self, e: &ir::Expr, hint: Type, slots: &mut Slots) -> Expr {
        match e {
            ir::Expr::Value(v) => slots.bind(Source::Const(Val::from_ir(v)), const_ty(v, hint)),
            ir::Expr::Field(f) => Expr::col(a(f)),
            ir::Expr::Param(p) => slots.bind(Source::Param(p.clone()), self.param_ty(p)),
            ir::Expr::Now => slots.bind(Source::Now, Type::Timestamp),
            ir::Expr::Not(x) => self.expr(x, Type::Bool, slots).not(),
            ir::Expr::Neg(x) => {
                let ty = self.ty(x);
                slots.bind(Source::Const(Val::Int(0)), ty).sub(self.expr(x, ty, slots))
            }
            ir::Expr::Binary { op, lhs, rhs } => {
                let is_null = |x: &ir::Expr| matches!(x, ir::Expr::Value(ir::Value::Null));
                if let BinOp::Cmp(c @ (CmpOp::Eq | CmpOp::Ne)) = op
                    && (is_null(lhs) || is_null(rhs))
                {
                    let other = if is_null(lhs) { rhs } else { lhs };
                    let x = self.expr(other, self.ty(other), slots);
                    return if *c == CmpOp::Eq { x.is_null() } else { x.is_not_null() };
                }
                let ty = match (self.ty(lhs), self.ty(rhs)) {
                    (Type::Money, _) | (_, Type::Money) => Type::Money,
                    (t, _) => t,
                };
                let l = self.expr(lhs, ty, slots);
                let r = self.expr(rhs, ty, slots);
                match op {
                    BinOp::And => l.and(r),
                    BinOp::Or => l.or(r),
                    BinOp::Cmp(c) => schema::cmp(l, *c, r),
                    BinOp::Add => l.add(r),
                    BinOp::Sub => l.sub(r),
                    BinOp::Mul => l.mul(r),
                }
            }
        }
    }
}

/// `WHERE tenant = $ AND <key> = $`.
fn row_filter(slots: &mut Slots, key_col: &str, key_src: Source, key_ty: impl Into<SqlType>) -> Expr {
    Expr::col(a("tenant"))
        .eq(slots.bind(Source::Tenant, Type::Text))
        .and(Expr::col(a(key_col)).eq(slots.bind(key_src, key_ty)))
}

/// The checks of every field that `sets` changes, as conditions on the new values.
fn set_checks(names: &Names<'_>, sets: &[(String, ir::Expr)], slots: &mut Slots) -> Vec<(String, Expr)> {
    let mut out = Vec::new();
    for (field, value) in sets {
        let Some(f) = names.fields.iter().find(|f| f.name == *field) else { continue };
        let v = names.expr(value, f.ty, slots);
        let ty = f.ty;
        let cond =
            schema::check_expr(v.clone(), &f.checks, &mut |c| slots.bind(Source::Const(Val::from_ir(c)), ty));
        if let Some(cond) = cond {
            // A null value passes, as the CHECK constraint lets it.
            out.push((field.clone(), if f.optional { v.is_null().or(cond) } else { cond }));
        }
    }
    out
}

/// The plans of one machine.
#[derive(Debug)]
pub struct MachinePlan {
    pub insert: Sql,
    /// `insert` for many rows at once.
    pub insert_many: Many,
    pub select: Sql,
    /// `SELECT ... FOR UPDATE` (PostgreSQL); on SQLite the transaction is already exclusive.
    pub lock: Sql,
    /// Rows' states, versions and every field written from values decided beforehand
    /// (group commit's fast path), many rows per statement (tenant and id first in each
    /// row's values), returning each row.
    pub write_many: Many,
    pub events: BTreeMap<String, Vec<TransitionPlan>>,
}

#[derive(Debug)]
/// One transition from one source state (an event declared `a, b -> c` has two).
pub struct TransitionPlan {
    pub from: String,
    pub to: String,
    /// The conditional UPDATE without and with the `If-Match` version.
    pub update: Sql,
    pub update_if_match: Sql,
    pub explain: Explain,
}

/// One read that evaluates each guard, and each check of the values a body would store,
/// to say which of them stopped a conditional update.
#[derive(Debug)]
pub struct Explain {
    pub sql: Sql,
    /// Guard names and texts, in the order of the `ordo_guard_<i>` columns.
    pub guards: Vec<(String, String)>,
    /// Fields, in the order of the `ordo_check_<i>` columns.
    pub checks: Vec<String>,
}

/// The plans of one resource.
#[derive(Debug)]
pub struct ResourcePlan {
    pub select: Sql,
    /// Stores rows' effect fields, versions and `updated_at` as a batch computed them, many
    /// rows per statement (tenant and key first in each row's values).
    pub write_many: Many,
    /// Creates the row from zeros when it is missing; `None` when a zero row would break a
    /// check (then a missing row is a rejection).
    pub ensure: Option<Sql>,
    /// `field += $amount` with the field's checks in the WHERE clause, per field and sign.
    pub effects: BTreeMap<(String, ir::DeltaOp), Sql>,
    pub operations: BTreeMap<String, OperationPlan>,
}

#[derive(Debug)]
pub struct OperationPlan {
    pub update: Sql,
    pub explain: Explain,
}

/// Statements on Ordo's own tables, the same for every spec.
#[derive(Debug)]
pub struct SystemPlan {
    pub journal: Sql,
    pub outbox: Sql,
    pub idempotency_get: Sql,
    pub idempotency_put: Sql,
    pub timer_arm: Sql,
    pub timer_cancel: Sql,
    /// `journal`, `outbox` and `timer_arm` for many rows at once.
    pub journal_many: Many,
    pub outbox_many: Many,
    pub timer_arm_many: Many,
    /// `idempotency_put` for many rows, returning the key of each row it wrote (a key it
    /// did not return is held by a live record).
    pub idempotency_put_many: Many,
}

#[derive(Debug)]
pub struct Plans {
    pub backend: DbBackend,
    pub machines: BTreeMap<String, MachinePlan>,
    pub resources: BTreeMap<String, ResourcePlan>,
    pub system: SystemPlan,
}

/// The columns of a machine's table, in order.
pub fn machine_columns(m: &ir::Machine) -> Vec<String> {
    let mut cols = vec!["id".to_string(), "tenant".to_string(), "state".to_string(), "version".to_string()];
    cols.extend(m.fields.iter().map(|f| f.name.clone()));
    cols.extend(["created_at".to_string(), "updated_at".to_string()]);
    cols
}

/// The columns of a resource's table, in order.
pub fn resource_columns(r: &ir::Resource) -> Vec<String> {
    let mut cols = vec![r.key.name.clone()];
    cols.extend(r.fields.iter().map(|f| f.name.clone()));
    cols.extend(["version".to_string(), "created_at".to_string(), "updated_at".to_string()]);
    cols
}

fn returning(cols: &[String]) -> ReturningClause {
    Query::returning().columns(cols.iter().map(|c| a(c)))
}

pub fn compile(spec: &ir::Spec, backend: DbBackend) -> Result<Plans, PlanError> {
    let mut machines = BTreeMap::new();
    for m in &spec.machines {
        machines.insert(m.name.clone(), machine_plan(m, backend)?);
    }
    let mut resources = BTreeMap::new();
    for r in &spec.resources {
        resources.insert(r.name.clone(), resource_plan(r, backend)?);
    }
    Ok(Plans { backend, machines, resources, system: system_plan(backend)? })
}

fn machine_plan(m: &ir::Machine, backend: DbBackend) -> Result<MachinePlan, PlanError> {
    let cols = machine_columns(m);
    let what = |s: &str| format!("{} {s}", m.name);

    let mut slots = Slots::default();
    let mut values = vec![
        slots.value(Source::Id, SqlType::Uuid),
        slots.value(Source::Tenant, Type::Text),
        slots.value(Source::Const(Val::Text(m.initial.clone())), Type::Text),
        slots.value(Source::Const(Val::Int(1)), Type::Int),
    ];
    for f in &m.fields {
        values.push(slots.value(Source::Value(f.name.clone()), f.ty));
    }
    values.push(slots.value(Source::Now, Type::Timestamp));
    values.push(slots.value(Source::Now, Type::Timestamp));
    let insert = Query::insert()
        .into_table(a(&m.table))
        .columns(cols.iter().map(|c| a(c)))
        .values(values.into_iter().map(Expr::val))
        .map_err(|e| PlanError { what: what("create"), reason: e.to_string() })?
        .returning(returning(&cols))
        .to_owned();
    let insert = slots.finish(backend, &insert, &what("create"))?;
    let insert_many = Many::of(&insert, backend, &what("create"))?;

    let row = Row { table: &m.table, key_col: "id", key_src: Source::Id, key_ty: SqlType::Uuid };
    let select_stmt = |lock: bool| row.select(&cols, lock, backend, &what("select"));

    let mut events = BTreeMap::new();
    for e in &m.events {
        let mut plans = Vec::new();
        for t in &e.transitions {
            for from in &t.from {
                plans.push(transition_plan(m, e, t, from, &cols, backend)?);
            }
        }
        events.insert(e.name.clone(), plans);
    }
    let mut written = vec![
        ("tenant".to_string(), Slot::new(Source::Tenant, Type::Text)),
        ("id".to_string(), Slot::new(Source::Id, SqlType::Uuid)),
        ("state".to_string(), Slot::new(Source::Value("state".to_string()), Type::Text)),
        ("version".to_string(), Slot::new(Source::Version, Type::Int)),
    ];
    for f in &m.fields {
        written.push((f.name.clone(), Slot::new(Source::Value(f.name.clone()), f.ty)));
    }
    written.push(("updated_at".to_string(), Slot::new(Source::Now, Type::Timestamp)));
    let write_many = Many::update(&m.table, &written, 2, &cols, backend);
    Ok(MachinePlan {
        insert,
        insert_many,
        select: select_stmt(false)?,
        lock: select_stmt(true)?,
        write_many,
        events,
    })
}

/// `SELECT ... FOR UPDATE NOWAIT | SKIP LOCKED` for a lock mode, from the plain lock.
pub fn lock_variant(lock: &Sql, mode: ir::Lock, backend: DbBackend) -> Sql {
    if backend != DbBackend::Postgres {
        return lock.clone();
    }
    let suffix = match mode {
        ir::Lock::PessimisticNowait => " NOWAIT",
        ir::Lock::PessimisticSkipLocked => " SKIP LOCKED",
        _ => "",
    };
    Sql { sql: format!("{}{suffix}", lock.sql), slots: lock.slots.clone() }
}

/// The row a conditional statement addresses: `WHERE tenant = $ AND <key_col> = $`.
struct Row<'a> {
    table: &'a str,
    key_col: &'a str,
    key_src: Source,
    key_ty: SqlType,
}

impl Row<'_> {
    fn filter(&self, slots: &mut Slots) -> Expr {
        row_filter(slots, self.key_col, self.key_src.clone(), self.key_ty)
    }

    /// The row's columns by its key; with `lock`, `FOR UPDATE` on PostgreSQL (on SQLite the
    /// transaction is already exclusive).
    fn select(&self, cols: &[String], lock: bool, backend: DbBackend, what: &str) -> Result<Sql, PlanError> {
        let mut slots = Slots::default();
        let mut q: SelectStatement = Query::select();
        q.columns(cols.iter().map(|c| a(c))).from(a(self.table)).and_where(self.filter(&mut slots));
        if lock && backend == DbBackend::Postgres {
            q.lock(LockType::Update);
        }
        slots.finish(backend, &q, what)
    }
}

/// What a body's conditional UPDATE requires besides its row: every guard, and the checks
/// of every value it stores.
fn body_conditions(
    names: &Names<'_>,
    guards: &[ir::Guard],
    sets: &[(String, ir::Expr)],
    slots: &mut Slots,
) -> Vec<Expr> {
    let mut out: Vec<Expr> = guards.iter().map(|g| names.expr(&g.expr, Type::Bool, slots)).collect();
    out.extend(set_checks(names, sets, slots).into_iter().map(|(_, c)| c));
    out
}

fn explain_plan(
    names: &Names<'_>,
    row: &Row<'_>,
    columns: &[&str],
    guards: &[ir::Guard],
    sets: &[(String, ir::Expr)],
    backend: DbBackend,
    what: &str,
) -> Result<Explain, PlanError> {
    let mut slots = Slots::default();
    let mut q = Query::select();
    q.columns(columns.iter().map(|c| a(c))).from(a(row.table));
    for (i, g) in guards.iter().enumerate() {
        q.expr_as(names.expr(&g.expr, Type::Bool, &mut slots), a(&format!("ordo_guard_{i}")));
    }
    let mut checks = Vec::new();
    for (i, (field, c)) in set_checks(names, sets, &mut slots).into_iter().enumerate() {
        q.expr_as(c, a(&format!("ordo_check_{i}")));
        checks.push(field);
    }
    q.and_where(row.filter(&mut slots));
    Ok(Explain {
        sql: slots.finish(backend, &q, what)?,
        guards: guards.iter().map(|g| (g.name.clone(), g.text.clone())).collect(),
        checks,
    })
}

fn transition_plan(
    m: &ir::Machine,
    e: &ir::Event,
    t: &ir::Transition,
    from: &str,
    cols: &[String],
    backend: DbBackend,
) -> Result<TransitionPlan, PlanError> {
    let names = Names { fields: &m.fields, params: &e.params };
    let row = Row { table: &m.table, key_col: "id", key_src: Source::Id, key_ty: SqlType::Uuid };
    let what = format!("{}.{} from {from}", m.name, e.name);
    let sets: Vec<(String, ir::Expr)> =
        t.body.sets.iter().map(|s| (s.field.clone(), s.value.clone())).collect();

    let update = |if_match: bool| -> Result<Sql, PlanError> {
        let mut slots = Slots::default();
        let mut q = Query::update();
        q.table(a(&m.table))
            .value(a("state"), slots.bind(Source::Const(Val::Text(t.to.clone())), Type::Text))
            .value(
                a("version"),
                Expr::col(a("version")).add(slots.bind(Source::Const(Val::Int(1)), Type::Int)),
            )
            .value(a("updated_at"), slots.bind(Source::Now, Type::Timestamp));
        for (field, value) in &sets {
            q.value(a(field), names.expr(value, names.field_ty(field), &mut slots));
        }
        let state = slots.bind(Source::Const(Val::Text(from.to_string())), Type::Text);
        let mut cond = row.filter(&mut slots).and(Expr::col(a("state")).eq(state));
        if if_match {
            cond = cond.and(Expr::col(a("version")).eq(slots.bind(Source::Version, Type::Int)));
        }
        for c in body_conditions(&names, &t.body.guards, &sets, &mut slots) {
            cond = cond.and(c);
        }
        q.cond_where(cond).returning(returning(cols));
        slots.finish(backend, &q, &what)
    };

    Ok(TransitionPlan {
        from: from.to_string(),
        to: t.to.clone(),
        update: update(false)?,
        update_if_match: update(true)?,
        explain: explain_plan(&names, &row, &["state", "version"], &t.body.guards, &sets, backend, &what)?,
    })
}
