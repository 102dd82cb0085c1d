//! SQL text for migrations: literals, checks and backfill expressions, written out inline
//! (a migration is DDL, reviewed as text, and its values come from the spec, not a request).

use ordo_spec::ir::{self, BinOp, CmpOp};

/// `"name"`. Names come from a checked spec (letters, digits, `_`), so quoting is enough.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

pub fn literal(v: &ir::Value) -> String {
    match v {
        ir::Value::Int(i) => i.to_string(),
        ir::Value::Text(s) => text(s),
        ir::Value::Bool(b) => if *b { "TRUE" } else { "FALSE" }.to_string(),
        ir::Value::Null => "NULL".to_string(),
    }
}

pub fn text(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The field's checks on `column`, joined by AND; `None` without checks.
pub fn check(column: &str, checks: &[ir::Check]) -> Option<String> {
    let parts: Vec<String> =
        checks.iter().map(|c| format!("{} {} {}", ident(column), op(c.op), literal(&c.value))).collect();
    (!parts.is_empty()).then(|| parts.join(" AND "))
}

/// `"state" IN ('a', 'b')`.
pub fn states_check(states: &[&str]) -> String {
    let list: Vec<String> = states.iter().map(|s| text(s)).collect();
    format!("{} IN ({})", ident("state"), list.join(", "))
}

fn op(c: CmpOp) -> &'static str {
    match c {
        CmpOp::Eq => "=",
        CmpOp::Ne => "<>",
        CmpOp::Lt => "<",
        CmpOp::Le => "<=",
        CmpOp::Gt => ">",
        CmpOp::Ge => ">=",
    }
}

/// A backfill expression over the row; `column` maps a field to the column that holds it
/// where the statement runs (a renamed field may still have its old name there), and `now`
/// is the migration's time as a literal.
pub fn expr(e: &ir::Expr, column: &dyn Fn(&str) -> String, now: &str) -> String {
    match e {
        ir::Expr::Value(v) => literal(v),
        ir::Expr::Field(f) | ir::Expr::Param(f) => ident(&column(f)),
        ir::Expr::Now => now.to_string(),
        ir::Expr::Not(x) => format!("(NOT {})", expr(x, column, now)),
        ir::Expr::Neg(x) => format!("(0 - {})", expr(x, column, now)),
        ir::Expr::Binary { op: BinOp::Cmp(c @ (CmpOp::Eq | CmpOp::Ne)), lhs, rhs }
            if matches!(**rhs, ir::Expr::Value(ir::Value::Null))
                || matches!(**lhs, ir::Expr::Value(ir::Value::Null)) =>
        {
            let other = if matches!(**rhs, ir::Expr::Value(ir::Value::Null)) { lhs } else { rhs };
            let null = if *c == CmpOp::Eq { "IS NULL" } else { "IS NOT NULL" };
            format!("({} {null})", expr(other, column, now))
        }
        ir::Expr::Binary { op: o, lhs, rhs } => {
            let o = match o {
                BinOp::Or => "OR",
                BinOp::And => "AND",
                BinOp::Cmp(c) => op(*c),
                BinOp::Add => "+",
                BinOp::Sub => "-",
                BinOp::Mul => "*",
            };
            format!("({} {o} {})", expr(lhs, column, now), expr(rhs, column, now))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_and_checks() {
        assert_eq!(literal(&ir::Value::Text("it's".into())), "'it''s'");
        let checks = [
            ir::Check { op: CmpOp::Ge, value: ir::Value::Int(1) },
            ir::Check { op: CmpOp::Le, value: ir::Value::Int(1000) },
        ];
        assert_eq!(check("quantity", &checks).as_deref(), Some("\"quantity\" >= 1 AND \"quantity\" <= 1000"));
        assert_eq!(check("quantity", &[]), None);
        assert_eq!(states_check(&["a", "b"]), "\"state\" IN ('a', 'b')");
    }

    #[test]
    fn backfill_expressions_use_the_columns_where_they_run() {
        let e = ir::Expr::Binary {
            op: BinOp::Mul,
            lhs: Box::new(ir::Expr::Field("quantity".into())),
            rhs: Box::new(ir::Expr::Field("price".into())),
        };
        let old = |f: &str| if f == "price" { "unit_price".to_string() } else { f.to_string() };
        assert_eq!(expr(&e, &old, "now"), "(\"quantity\" * \"unit_price\")");
    }
}
