//! Expressions: binary chains folded in loops by precedence, with the tree's depth bounded
//! by `EXPR_DEPTH_MAX` so that neither building nor dropping one can overflow the stack.

use super::convert::{children, cmp_op, literal, span_of};
use super::{EXPR_DEPTH_MAX, Rule};
use crate::ast::*;
use pest::iterators::Pair;

/// An expression and the depth of its tree; `Err` holds where it got deeper than
/// `EXPR_DEPTH_MAX`. A deeper tree is never built: dropping one would recurse too.
type Built = Result<(Expr, usize), Span>;

pub(super) fn deeper(depth: usize, span: Span) -> Result<usize, Span> {
    if depth > EXPR_DEPTH_MAX { Err(span) } else { Ok(depth) }
}

/// Builds an expression from a pair. `expr` holds a flat list of operands and operators
/// (the grammar's precedence levels are silent), folded here by precedence with two stacks:
/// no recursion but into parentheses (bounded by `NESTING_DEPTH_MAX`).
pub(super) fn build_expr(pair: Pair<'_, Rule>) -> Built {
    let span = span_of(&pair);
    match pair.as_rule() {
        Rule::expr => fold(pair, span),
        Rule::paren => {
            let (inner, d) = match children(pair).next() {
                Some(p) => build_expr(p)?,
                None => (null_expr(span), 1),
            };
            Ok((Expr { kind: ExprKind::Paren(Box::new(inner)), span }, deeper(d + 1, span)?))
        }
        Rule::now => Ok((Expr { kind: ExprKind::Now, span }, 1)),
        Rule::self_field => {
            let name = children(pair).next().map(|p| p.as_str().to_string()).unwrap_or_default();
            Ok((Expr { kind: ExprKind::SelfField(name), span }, 1))
        }
        Rule::name => Ok((Expr { kind: ExprKind::Name(pair.as_str().to_string()), span }, 1)),
        Rule::int_lit | Rule::string_lit | Rule::bool_lit | Rule::null_lit => {
            Ok((Expr { kind: ExprKind::Literal(literal(pair, false)), span }, 1))
        }
        _ => Ok((null_expr(span), 1)),
    }
}

/// An operator waiting for its operands: a prefix (`not`, unary `-`, with where it starts)
/// or a binary one.
#[derive(Clone, Copy)]
enum Pending {
    Not(usize),
    Neg(usize),
    Binary(BinOp),
}

impl Pending {
    /// Binding strength, loosest first: or, and, not, comparison, + -, *, unary minus.
    fn strength(self) -> u8 {
        match self {
            Pending::Binary(BinOp::Or) => 1,
            Pending::Binary(BinOp::And) => 2,
            Pending::Not(_) => 3,
            Pending::Binary(BinOp::Cmp(_)) => 4,
            Pending::Binary(BinOp::Add | BinOp::Sub) => 5,
            Pending::Binary(BinOp::Mul) => 6,
            Pending::Neg(_) => 7,
        }
    }
}

/// Precedence climbing over `expr`'s flat children. Every binary operator is left
/// associative (the grammar allows one comparison per operand of `and`), and a prefix binds
/// as its level says: `not a == b` is `not (a == b)`, `-a * b` is `(-a) * b`.
fn fold(pair: Pair<'_, Rule>, span: Span) -> Built {
    let mut operands: Vec<(Expr, usize)> = Vec::new();
    let mut pending: Vec<Pending> = Vec::new();
    for p in pair.into_inner() {
        let op = match p.as_rule() {
            Rule::COMMENT => continue,
            Rule::kw_not => {
                pending.push(Pending::Not(span_of(&p).start));
                continue;
            }
            Rule::neg => {
                pending.push(Pending::Neg(span_of(&p).start));
                continue;
            }
            Rule::kw_or => BinOp::Or,
            Rule::kw_and => BinOp::And,
            Rule::cmp_op => BinOp::Cmp(cmp_op(p.as_str())),
            Rule::add_op if p.as_str() == "+" => BinOp::Add,
            Rule::add_op => BinOp::Sub,
            Rule::mul_op => BinOp::Mul,
            _ => {
                operands.push(build_expr(p)?);
                continue;
            }
        };
        let op = Pending::Binary(op);
        while pending.last().is_some_and(|top| top.strength() >= op.strength()) {
            reduce(&mut operands, &mut pending, span)?;
        }
        pending.push(op);
    }
    while !pending.is_empty() {
        reduce(&mut operands, &mut pending, span)?;
    }
    Ok(operands.pop().unwrap_or_else(|| (null_expr(span), 1)))
}

/// Applies the top pending operator to the operands it takes.
fn reduce(operands: &mut Vec<(Expr, usize)>, pending: &mut Vec<Pending>, span: Span) -> Result<(), Span> {
    let missing = || (null_expr(span), 1);
    let built = match pending.pop() {
        Some(Pending::Binary(op)) => {
            let (rhs, rd) = operands.pop().unwrap_or_else(missing);
            let (lhs, ld) = operands.pop().unwrap_or_else(missing);
            let span = Span::new(lhs.span.start, rhs.span.end);
            let depth = deeper(ld.max(rd) + 1, span)?;
            (Expr { kind: ExprKind::Binary(op, Box::new(lhs), Box::new(rhs)), span }, depth)
        }
        Some(prefix @ (Pending::Not(start) | Pending::Neg(start))) => {
            let (e, d) = operands.pop().unwrap_or_else(missing);
            let span = Span::new(start, e.span.end);
            let inner = Box::new(e);
            let kind =
                if matches!(prefix, Pending::Not(_)) { ExprKind::Not(inner) } else { ExprKind::Neg(inner) };
            (Expr { kind, span }, deeper(d + 1, span)?)
        }
        None => return Ok(()),
    };
    operands.push(built);
    Ok(())
}

fn null_expr(span: Span) -> Expr {
    Expr { kind: ExprKind::Literal(Literal { value: LiteralValue::Null, span }), span }
}
