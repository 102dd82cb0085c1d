//! The two evaluators of the language's expressions agree: what `value::eval` computes in
//! Rust (create guards and sets, effect keys and amounts) is what the SQL that `Names::expr`
//! compiles computes in the database (transition guards and sets), on both backends, with
//! SQL's null semantics, for generated expressions over nullable parameters. Where Rust
//! finds an integer out of range it refuses; the database does too for a number on
//! PostgreSQL, but may not evaluate the side of a condition that overflows, and SQLite goes
//! on in floating point: only those cases are left unchecked.

use super::{Names, Slots};
use crate::rows::Bind;
use crate::value::{self, Env, Val};
use ordo_spec::ir::{self, BinOp, CmpOp, Expr, Type};
use ordo_testkit::{Backend, TestDb};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use sea_orm::sea_query::Query;
use sea_orm::{ConnectionTrait, Database, DatabaseConnection};
use std::collections::BTreeMap;

/// The parameters the expressions read, one of each type, all optional.
fn params() -> Vec<ir::Field> {
    [("i", Type::Int), ("j", Type::Int), ("m", Type::Money), ("b", Type::Bool), ("t", Type::Text)]
        .into_iter()
        .map(|(n, ty)| ir::Field::plain(n, ty, true))
        .collect()
}

fn int_value() -> impl Strategy<Value = i64> {
    prop_oneof![
        4 => -1_000i64..1_000,
        1 => Just(0i64),
        1 => Just(i64::MAX),
        1 => Just(i64::MIN),
        1 => Just(3_037_000_500i64),
    ]
}

fn text_value() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["", "a", "A", "ab", "b", "Z", "é", "a b", "10", "9"]).prop_map(str::to_string)
}

/// A numeric expression of the checker's typing (`int` and `money` alike here).
fn num(depth: u32) -> BoxedStrategy<Expr> {
    let leaf = prop_oneof![
        int_value().prop_map(|v| Expr::Value(ir::Value::Int(v))),
        prop::sample::select(vec!["i", "j", "m"]).prop_map(|p| Expr::Param(p.to_string())),
    ];
    if depth == 0 {
        return leaf.boxed();
    }
    let sub = num(depth - 1);
    prop_oneof![
        2 => leaf,
        1 => sub.clone().prop_map(|x| Expr::Neg(Box::new(x))),
        3 => (prop::sample::select(vec![BinOp::Add, BinOp::Sub, BinOp::Mul]), sub.clone(), sub)
            .prop_map(|(op, l, r)| Expr::Binary { op, lhs: Box::new(l), rhs: Box::new(r) }),
    ]
    .boxed()
}

fn text() -> BoxedStrategy<Expr> {
    prop_oneof![
        text_value().prop_map(|v| Expr::Value(ir::Value::Text(v))),
        Just(Expr::Param("t".to_string())),
    ]
    .boxed()
}

fn cmp_op() -> impl Strategy<Value = CmpOp> {
    prop::sample::select(vec![CmpOp::Eq, CmpOp::Ne, CmpOp::Lt, CmpOp::Le, CmpOp::Gt, CmpOp::Ge])
}

fn null_test(x: Expr, eq: bool) -> Expr {
    let op = BinOp::Cmp(if eq { CmpOp::Eq } else { CmpOp::Ne });
    Expr::Binary { op, lhs: Box::new(x), rhs: Box::new(Expr::Value(ir::Value::Null)) }
}

fn boolean(depth: u32) -> BoxedStrategy<Expr> {
    let leaf = prop_oneof![
        any::<bool>().prop_map(|b| Expr::Value(ir::Value::Bool(b))),
        Just(Expr::Param("b".to_string())),
        (cmp_op(), num(depth.min(2)), num(depth.min(2))).prop_map(|(c, l, r)| Expr::Binary {
            op: BinOp::Cmp(c),
            lhs: Box::new(l),
            rhs: Box::new(r)
        }),
        (cmp_op(), text(), text()).prop_map(|(c, l, r)| Expr::Binary {
            op: BinOp::Cmp(c),
            lhs: Box::new(l),
            rhs: Box::new(r)
        }),
        (prop::sample::select(vec!["i", "m", "b", "t"]), any::<bool>())
            .prop_map(|(p, eq)| null_test(Expr::Param(p.to_string()), eq)),
    ];
    if depth == 0 {
        return leaf.boxed();
    }
    let sub = boolean(depth - 1);
    prop_oneof![
        2 => leaf,
        1 => sub.clone().prop_map(|x| Expr::Not(Box::new(x))),
        2 => (prop::sample::select(vec![BinOp::And, BinOp::Or]), sub.clone(), sub)
            .prop_map(|(op, l, r)| Expr::Binary { op, lhs: Box::new(l), rhs: Box::new(r) }),
    ]
    .boxed()
}

fn maybe<T: std::fmt::Debug + Clone + 'static>(
    s: impl Strategy<Value = T> + 'static,
) -> BoxedStrategy<Option<T>> {
    prop_oneof![1 => Just(None), 4 => s.prop_map(Some)].boxed()
}

/// Values of the parameters, each possibly null.
fn bindings() -> impl Strategy<Value = BTreeMap<String, Val>> {
    (maybe(int_value()), maybe(int_value()), maybe(int_value()), maybe(any::<bool>()), maybe(text_value()))
        .prop_map(|(i, j, m, b, t)| {
            let or_null = |v: Option<Val>| v.unwrap_or(Val::Null);
            BTreeMap::from([
                ("i".to_string(), or_null(i.map(Val::Int))),
                ("j".to_string(), or_null(j.map(Val::Int))),
                ("m".to_string(), or_null(m.map(Val::Int))),
                ("b".to_string(), or_null(b.map(Val::Bool))),
                ("t".to_string(), or_null(t.map(Val::Text))),
            ])
        })
}

/// What the database computes for `e`: `Ok(None)` for NULL, `Err` when it refuses (an
/// integer out of range, on PostgreSQL).
async fn in_sql(
    db: &DatabaseConnection,
    e: &Expr,
    ty: Type,
    values: &BTreeMap<String, Val>,
) -> Result<Option<Val>, String> {
    let declared = params();
    let names = Names { fields: &[], params: &declared };
    let mut slots = Slots::default();
    let select = Query::select()
        .expr_as(names.expr(e, ty, &mut slots), sea_orm::sea_query::Alias::new("v"))
        .to_owned();
    let backend = db.get_database_backend();
    let sql = slots.finish(backend, &select, "an expression").map_err(|e| e.to_string())?;
    let now = chrono::Utc::now();
    let bind = Bind { params: Some(values), now: Some(now), ..Bind::default() };
    let row = db.query_one_raw(bind.statement(backend, &sql)).await.map_err(|e| e.to_string())?;
    let row = row.ok_or("no row")?;
    Ok(match ty {
        Type::Bool => row.try_get::<Option<bool>>("", "v").map_err(|e| e.to_string())?.map(Val::Bool),
        Type::Text => row.try_get::<Option<String>>("", "v").map_err(|e| e.to_string())?.map(Val::Text),
        _ => row.try_get::<Option<i64>>("", "v").map_err(|e| e.to_string())?.map(Val::Int),
    })
}

fn agree_on(backend: Backend) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let test_db = rt.block_on(TestDb::new(backend));
    let db = rt.block_on(Database::connect(test_db.url.as_str())).expect("connect");
    let mut runner = TestRunner::new(Config { cases: 512, failure_persistence: None, ..Config::default() });
    let exprs = prop_oneof![boolean(3).prop_map(|e| (e, Type::Bool)), num(3).prop_map(|e| (e, Type::Int))];
    let result = runner.run(&(exprs, bindings()), |((e, ty), params)| {
        let no_fields = BTreeMap::new();
        let env = Env { fields: &no_fields, params: &params, now: chrono::Utc::now() };
        let rust = value::eval(&e, &env);
        let sql = rt.block_on(in_sql(&db, &e, ty, &params));
        match (&rust, &sql) {
            (Ok(v), Ok(s)) => {
                let s = s.clone().unwrap_or(Val::Null);
                prop_assert_eq!(v, &s, "{:?} with {:?}", e, params);
            }
            // Out of range in Rust, and in PostgreSQL for a number (a condition may stop
            // before the overflowing side; SQLite computes past i64 in floating point).
            (Err(value::EvalError::Overflow), Err(_)) => {}
            (Err(value::EvalError::Overflow), Ok(_)) if ty == Type::Bool || backend == Backend::Sqlite => {}
            _ => {
                return Err(TestCaseError::fail(format!(
                    "Rust {rust:?}, SQL {sql:?} for {e:?} with {params:?}"
                )));
            }
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{backend:?}: {e}");
    }
}

#[test]
fn rust_and_sql_agree_on_expressions_postgres() {
    agree_on(Backend::Postgres);
}

#[test]
fn rust_and_sql_agree_on_expressions_sqlite() {
    agree_on(Backend::Sqlite);
}
