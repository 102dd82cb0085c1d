//! A change in words: `Change::what` and its `Display` (the class and whether it is
//! expand-only), with the spec-syntax rendering of checks, expressions and backfills they use.

use super::{Change, ChangeKind, Owner};
use crate::ir::{self, Field};
use std::fmt;

fn checks_text(checks: &[ir::Check]) -> String {
    if checks.is_empty() {
        return "no check".to_string();
    }
    let parts: Vec<String> = checks.iter().map(|c| format!("{} {}", c.op.symbol(), c.value)).collect();
    format!("check {}", parts.join(" and "))
}

/// An IR expression in spec syntax, fully parenthesised where it nests.
pub fn expr_text(e: &ir::Expr) -> String {
    match e {
        ir::Expr::Value(v) => v.to_string(),
        ir::Expr::Field(f) | ir::Expr::Param(f) => f.clone(),
        ir::Expr::Now => "now".to_string(),
        ir::Expr::Not(x) => format!("not {}", nested(x)),
        ir::Expr::Neg(x) => format!("-{}", nested(x)),
        ir::Expr::Binary { op, lhs, rhs } => format!("{} {} {}", nested(lhs), op.symbol(), nested(rhs)),
    }
}

fn nested(e: &ir::Expr) -> String {
    match e {
        ir::Expr::Binary { .. } => format!("({})", expr_text(e)),
        _ => expr_text(e),
    }
}

fn backfill_text(f: &Field) -> String {
    match &f.backfill {
        Some(e) => format!(", backfilled with `{}`", expr_text(e)),
        None => String::new(),
    }
}

impl Change {
    /// What the change does, in words (without its class).
    pub fn what(&self) -> String {
        use ChangeKind as K;
        let o = |owner: &Owner| owner.name().to_string();
        match &self.kind {
            K::AddMachine { machine } => format!("new machine `{machine}`"),
            K::DropMachine { machine } => format!("machine `{machine}` dropped, with all its instances"),
            K::AddResource { resource } => format!("new resource `{resource}`"),
            K::DropResource { resource } => format!("resource `{resource}` dropped, with all its rows"),
            K::RenameResource { from, to } => format!("resource `{from}` renamed to `{to}`"),
            K::AddField { owner, field } => {
                let how = if field.optional { "optional" } else { "required" };
                format!("{}.{}: new {how} field{}", o(owner), field.name, backfill_text(field))
            }
            K::DropField { owner, field } => format!("{}.{field}: field dropped, with its values", o(owner)),
            K::RenameField { owner, from, to } => format!("{}.{from}: renamed to `{to}`", o(owner)),
            K::RequireField { owner, field } => {
                format!("{}.{}: optional becomes required{}", o(owner), field.name, backfill_text(field))
            }
            K::RelaxField { owner, field } => format!("{}.{field}: required becomes optional", o(owner)),
            K::Checks { owner, field, before, widened } => format!(
                "{}.{}: {} becomes {} ({})",
                o(owner),
                field.name,
                checks_text(before),
                checks_text(&field.checks),
                if *widened { "widened" } else { "tightened" }
            ),
            K::AddState { machine, state } => format!("{machine}: new state `{state}`"),
            K::RenameState { machine, from, to } => format!("{machine}: state `{from}` renamed to `{to}`"),
            K::RemoveState { machine, state, into: Some(into) } => {
                format!("{machine}: state `{state}` removed; its instances move to `{into}`")
            }
            K::RemoveState { machine, state, into: None } => {
                format!(
                    "{machine}: state `{state}` removed, with no `removed {state} -> ...` for its instances"
                )
            }
            K::StateKind { machine, state, from, to } => {
                format!("{machine}: state `{state}` changes from {from:?} to {to:?}")
            }
            K::Initial { machine, from, to } => {
                format!("{machine}: new instances start in `{to}` (was `{from}`)")
            }
            K::Create { machine } => format!("{machine}: the create changes"),
            K::AddEvent { machine, event } => format!("{machine}: new event `{event}`"),
            K::RemoveEvent { machine, event } => format!("{machine}: event `{event}` removed"),
            K::RenameEvent { machine, from, to } => format!("{machine}: event `{from}` renamed to `{to}`"),
            K::Event { machine, event } => format!("{machine}: event `{event}` changes"),
            K::AddOperation { resource, operation } => format!("{resource}: new operation `{operation}`"),
            K::RemoveOperation { resource, operation } => {
                format!("{resource}: operation `{operation}` removed")
            }
            K::Operation { resource, operation } => format!("{resource}: operation `{operation}` changes"),
            K::AddTimer { machine, timer } => format!(
                "{machine}: new timer `after {}ms in {}: {}`, armed for instances already there",
                timer.after_ms, timer.state, timer.event
            ),
            K::RemoveTimer { machine, timer } => {
                format!(
                    "{machine}: timer in `{}` firing `{}` removed, with its pending timers",
                    timer.state, timer.event
                )
            }
            K::Timer { machine, timer, before_ms } => format!(
                "{machine}: timer in `{}` firing `{}` goes from {before_ms}ms to {}ms; pending ones re-scheduled",
                timer.state, timer.event, timer.after_ms
            ),
        }
    }
}

impl fmt::Display for Change {
    fn fmt(&self, out: &mut fmt::Formatter<'_>) -> fmt::Result {
        let expand = if self.expand_only { "" } else { " [not expand-only]" };
        write!(out, "{:<15} {}{expand}", self.class.as_str(), self.what())
    }
}
