//! Expressions parse with the language's precedence and associativity: `or` loosest, then
//! `and`, `not`, one comparison, `+ -`, `*`, unary `-`; binary operators to the left.

use ordo_spec::ast::{self, ExprKind, LiteralValue};

/// The guard of a one-guard spec, fully parenthesised.
fn tree(guard: &str) -> String {
    let spec = format!(
        "machine M {{\n    a: int\n    b: int\n    c: int\n    d: bool\n    initial s\n    final t\n    create go {{\n        require {guard}\n    }}\n    on end: s -> t\n}}\n"
    );
    let ast = ordo_spec::parse(&spec).unwrap_or_else(|d| panic!("{guard}: {d:?}"));
    let ast::Item::Machine(m) = &ast.items[0] else { panic!("a machine") };
    let body = m.members.iter().find_map(|x| match x {
        ast::MachineMember::Create(c) => c.body.as_ref(),
        _ => None,
    });
    let Some(ast::Stmt::Require { expr, .. }) = body.and_then(|b| b.stmts.first()) else { panic!("a guard") };
    // Every node's span is the text it was parsed from.
    fn show(e: &ast::Expr, src: &str) -> String {
        let text = &src[e.span.range()];
        let shown = match &e.kind {
            ExprKind::Name(n) => n.clone(),
            ExprKind::Literal(l) => match &l.value {
                LiteralValue::Int { digits, negative } => {
                    format!("{}{digits}", if *negative { "-" } else { "" })
                }
                other => format!("{other:?}"),
            },
            ExprKind::Now => "now".into(),
            ExprKind::SelfField(n) => format!("self.{n}"),
            ExprKind::Paren(inner) => format!("[{}]", show(inner, src)),
            ExprKind::Not(inner) => format!("(not {})", show(inner, src)),
            ExprKind::Neg(inner) => format!("(-{})", show(inner, src)),
            ExprKind::Binary(op, l, r) => format!("({} {} {})", show(l, src), op.symbol(), show(r, src)),
        };
        assert!(!text.is_empty() && text.trim() == text, "span of {shown}: {text:?}");
        shown
    }
    show(expr, &spec)
}

#[test]
fn precedence_and_associativity() {
    let cases = [
        ("a or b == c and d", "(a or ((b == c) and d))"),
        ("d and a == b or d", "((d and (a == b)) or d)"),
        ("not a == b and d", "((not (a == b)) and d)"),
        ("not not d", "(not (not d))"),
        ("-a * b + c", "(((-a) * b) + c)"),
        ("a - b - c", "((a - b) - c)"),
        ("a * b * c", "((a * b) * c)"),
        ("a + b * c < c - - a", "((a + (b * c)) < (c - (-a)))"),
        ("(a or b) and c", "([(a or b)] and c)"),
        ("a + (b - c) * 2 >= self.a", "((a + ([(b - c)] * 2)) >= self.a)"),
        ("d or not (a > 1) and now > now", "(d or ((not [(a > 1)]) and (now > now)))"),
    ];
    for (guard, want) in cases {
        assert_eq!(tree(guard), want, "{guard}");
    }
}

#[test]
fn a_chained_comparison_is_a_syntax_error() {
    let spec = "machine M {\n    a: int\n    initial s\n    final t\n    create go {\n        require a < a < a\n    }\n    on end: s -> t\n}\n";
    let diags = ordo_spec::parse(spec).expect_err("a < a < a");
    assert_eq!(diags[0].code, ordo_spec::Code::Syntax);
}
