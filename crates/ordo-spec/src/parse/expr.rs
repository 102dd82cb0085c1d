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

/// Builds an expression from a pair; binary chains are folded in loops, so only
/// parentheses recurse (bounded by `NESTING_DEPTH_MAX`).
pub(super) fn build_expr(pair: Pair<'_, Rule>) -> Built {
    let span = span_of(&pair);
    let rule = pair.as_rule();
    match rule {
        Rule::expr => match children(pair).next() {
            Some(inner) => build_expr(inner),
            None => Ok((null_expr(span), 1)),
        },
        Rule::or_expr | Rule::and_expr | Rule::add_expr | Rule::mul_expr => {
            let op_of = |p: &Pair<'_, Rule>| match (rule, p.as_str()) {
                (Rule::or_expr, _) => BinOp::Or,
                (Rule::and_expr, _) => BinOp::And,
                (_, "+") => BinOp::Add,
                (_, "-") => BinOp::Sub,
                _ => BinOp::Mul,
            };
            // kw_and / kw_or are filtered by `children`; read them from the raw pairs.
            let mut acc: Option<(Expr, usize)> = None;
            let mut pending_op: Option<BinOp> = None;
            for p in pair.into_inner() {
                match p.as_rule() {
                    Rule::COMMENT => {}
                    Rule::kw_or | Rule::kw_and | Rule::add_op | Rule::mul_op => {
                        pending_op = Some(op_of(&p));
                    }
                    _ => {
                        let (rhs, rd) = build_expr(p)?;
                        acc = Some(match (acc, pending_op.take()) {
                            (Some((lhs, ld)), Some(op)) => {
                                let span = Span::new(lhs.span.start, rhs.span.end);
                                let depth = deeper(ld.max(rd) + 1, span)?;
                                let kind = ExprKind::Binary(op, Box::new(lhs), Box::new(rhs));
                                (Expr { kind, span }, depth)
                            }
                            (_, _) => (rhs, rd),
                        });
                    }
                }
            }
            Ok(acc.unwrap_or_else(|| (null_expr(span), 1)))
        }
        Rule::cmp_expr => {
            let mut it = children(pair);
            let (lhs, ld) = match it.next() {
                Some(p) => build_expr(p)?,
                None => (null_expr(span), 1),
            };
            match (it.next(), it.next()) {
                (Some(op), Some(rhs)) => {
                    let (rhs, rd) = build_expr(rhs)?;
                    let op = BinOp::Cmp(cmp_op(op.as_str()));
                    let kind = ExprKind::Binary(op, Box::new(lhs), Box::new(rhs));
                    Ok((Expr { kind, span }, deeper(ld.max(rd) + 1, span)?))
                }
                _ => Ok((lhs, ld)),
            }
        }
        Rule::not_expr | Rule::unary => {
            // Prefix operators (`not`, `-`) wrap the operand innermost-first, in a loop.
            let mut prefixes = Vec::new();
            let mut operand = None;
            for p in pair.into_inner() {
                match p.as_rule() {
                    Rule::kw_not | Rule::neg => prefixes.push(span_of(&p).start),
                    Rule::COMMENT => {}
                    _ => operand = Some(p),
                }
            }
            deeper(prefixes.len(), span)?;
            let (mut e, mut depth) = match operand {
                Some(p) => build_expr(p)?,
                None => (null_expr(span), 1),
            };
            for start in prefixes.into_iter().rev() {
                let span = Span::new(start, e.span.end);
                depth = deeper(depth + 1, span)?;
                let inner = Box::new(e);
                let kind = if rule == Rule::not_expr { ExprKind::Not(inner) } else { ExprKind::Neg(inner) };
                e = Expr { kind, span };
            }
            Ok((e, depth))
        }
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

fn null_expr(span: Span) -> Expr {
    Expr { kind: ExprKind::Literal(Literal { value: LiteralValue::Null, span }), span }
}
