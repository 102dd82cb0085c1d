//! Invariants: every aggregate's owner, field, states, command and parameter resolved, each
//! a whole number, and the two sides in one unit (money with money, counts with ints).

use super::{Checker, closest};
use crate::ast::{self, InvKind, Span};
use crate::diag::{Code, Diagnostic};
use crate::ir;
use std::collections::HashMap;

/// The unit of a term: money, a plain whole number, or a constant that fits either.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Unit {
    Money,
    Int,
    Any,
}

impl Checker {
    pub(super) fn invariants(
        &mut self,
        items: &[ast::Item],
        resources: &[ir::Resource],
        machines: &[ir::Machine],
    ) -> Vec<ir::Invariant> {
        let mut seen: HashMap<&str, Span> = HashMap::new();
        let mut out = Vec::new();
        for inv in items.iter().filter_map(|i| match i {
            ast::Item::Invariant(inv) => Some(inv),
            _ => None,
        }) {
            if let Some(first) = seen.get(inv.name.name.as_str()) {
                self.error(
                    Diagnostic::new(
                        Code::DuplicateName,
                        inv.name.span,
                        format!("invariant `{}` is declared twice", inv.name.name),
                    )
                    .label("second declaration")
                    .related(*first, "first declared here"),
                );
                continue;
            }
            seen.insert(&inv.name.name, inv.name.span);
            let mut units = Vec::new();
            let lhs: Option<Vec<ir::Term>> =
                inv.lhs.iter().map(|t| self.term(t, resources, machines, &mut units)).collect();
            let rhs: Option<Vec<ir::Term>> =
                inv.rhs.iter().map(|t| self.term(t, resources, machines, &mut units)).collect();
            let (Some(lhs), Some(rhs)) = (lhs, rhs) else { continue };
            if units.iter().any(|(u, _)| *u == Unit::Money) && units.iter().any(|(u, _)| *u == Unit::Int) {
                let money =
                    units.iter().find(|(u, _)| *u == Unit::Money).map(|(_, s)| *s).unwrap_or(inv.span);
                let int = units.iter().find(|(u, _)| *u == Unit::Int).map(|(_, s)| *s).unwrap_or(inv.span);
                self.error(
                    Diagnostic::new(
                        Code::TypeMismatch,
                        int,
                        format!("invariant `{}` adds money to plain numbers", inv.name.name),
                    )
                    .label("an int")
                    .related(money, "money")
                    .help(
                        "an invariant's terms are all money or all whole numbers (counts are whole numbers)",
                    ),
                );
                continue;
            }
            let text = format!("{} {} {}", side_text(&lhs), inv.op.symbol(), side_text(&rhs));
            out.push(ir::Invariant { name: inv.name.name.clone(), text, lhs, op: inv.op, rhs });
        }
        out
    }

    fn term(
        &mut self,
        t: &ast::InvTerm,
        resources: &[ir::Resource],
        machines: &[ir::Machine],
        units: &mut Vec<(Unit, Span)>,
    ) -> Option<ir::Term> {
        let (value, unit) = match &t.kind {
            InvKind::Int(lit) => match self.literal_value(lit)? {
                ir::Value::Int(i) => (ir::Aggregate::Const(i), Unit::Any),
                _ => return None,
            },
            InvKind::Sum { owner, field, states } => {
                let (fields, machine): (Vec<&ir::Field>, Option<&ir::Machine>) =
                    if let Some(r) = resources.iter().find(|r| r.name == owner.name) {
                        if let Some(states) = states {
                            let at = states.first().map_or(owner.span, |s| s.span);
                            self.error(
                                Diagnostic::new(
                                    Code::UnknownState,
                                    at,
                                    format!("resource `{}` has no states", owner.name),
                                )
                                .label("only machines have states")
                                .help(format!("write `sum({}.{})`", owner.name, field.name)),
                            );
                            return None;
                        }
                        (r.fields.iter().collect(), None)
                    } else if let Some(m) = machines.iter().find(|m| m.name == owner.name) {
                        (m.fields.iter().collect(), Some(m))
                    } else {
                        self.unknown_owner(owner, resources, machines);
                        return None;
                    };
                let Some(f) = fields.iter().find(|f| f.name == field.name) else {
                    let mut d = Diagnostic::new(
                        Code::UnknownField,
                        field.span,
                        format!("`{}` has no field `{}`", owner.name, field.name),
                    )
                    .label("not declared");
                    if let Some(close) = closest(&field.name, fields.iter().map(|f| f.name.as_str())) {
                        d = d.did_you_mean(close);
                    }
                    self.error(d);
                    return None;
                };
                let unit = self.whole(f.ty, field.span, &format!("field `{}`", f.name))?;
                let states = match (machine, states) {
                    (Some(m), Some(states)) => self.invariant_states(m, states)?,
                    _ => Vec::new(),
                };
                (ir::Aggregate::Sum { owner: owner.name.clone(), field: field.name.clone(), states }, unit)
            }
            InvKind::Count { machine, states } => {
                let Some(m) = machines.iter().find(|m| m.name == machine.name) else {
                    self.unknown_owner(machine, resources, machines);
                    return None;
                };
                let states = match states {
                    Some(states) => self.invariant_states(m, states)?,
                    None => Vec::new(),
                };
                (ir::Aggregate::Count { machine: machine.name.clone(), states }, Unit::Int)
            }
            InvKind::Total { owner, action, param } => {
                let params: Vec<&ir::Field> = if let Some(r) = resources.iter().find(|r| r.name == owner.name)
                {
                    let Some(op) = r.operations.iter().find(|o| o.name == action.name) else {
                        let names: Vec<&str> = r.operations.iter().map(|o| o.name.as_str()).collect();
                        self.unknown_action(owner, action, &names);
                        return None;
                    };
                    op.params.iter().collect()
                } else if let Some(m) = machines.iter().find(|m| m.name == owner.name) {
                    if m.create.name == action.name {
                        m.fields.iter().chain(&m.create.params).collect()
                    } else if let Some(e) = m.event(&action.name) {
                        e.params.iter().collect()
                    } else {
                        let names: Vec<&str> = std::iter::once(m.create.name.as_str())
                            .chain(m.events.iter().map(|e| e.name.as_str()))
                            .collect();
                        self.unknown_action(owner, action, &names);
                        return None;
                    }
                } else {
                    self.unknown_owner(owner, resources, machines);
                    return None;
                };
                let Some(p) = params.iter().find(|p| p.name == param.name) else {
                    let mut d = Diagnostic::new(
                        Code::UnknownName,
                        param.span,
                        format!("`{}.{}` takes no parameter `{}`", owner.name, action.name, param.name),
                    )
                    .label("not a parameter");
                    if let Some(close) = closest(&param.name, params.iter().map(|p| p.name.as_str())) {
                        d = d.did_you_mean(close);
                    }
                    self.error(d);
                    return None;
                };
                let unit = self.whole(p.ty, param.span, &format!("parameter `{}`", p.name))?;
                let value = ir::Aggregate::Total {
                    owner: owner.name.clone(),
                    action: action.name.clone(),
                    param: param.name.clone(),
                };
                (value, unit)
            }
        };
        units.push((unit, t.span));
        Some(ir::Term { negative: t.negative, value })
    }

    /// The unit of a whole-number type; anything else is an error.
    fn whole(&mut self, ty: ir::Type, at: Span, what: &str) -> Option<Unit> {
        match ty {
            ir::Type::Money => Some(Unit::Money),
            ir::Type::Int => Some(Unit::Int),
            _ => {
                self.error(
                    Diagnostic::new(Code::TypeMismatch, at, format!("{what} is not a whole number"))
                        .label("cannot be summed")
                        .help("invariants add `int` and `money` values"),
                );
                None
            }
        }
    }

    fn invariant_states(&mut self, m: &ir::Machine, states: &[ast::Ident]) -> Option<Vec<String>> {
        let mut out = Vec::new();
        for s in states {
            if m.state(&s.name).is_none() {
                let mut d = Diagnostic::new(
                    Code::UnknownState,
                    s.span,
                    format!("machine `{}` has no state `{}`", m.name, s.name),
                )
                .label("not declared");
                if let Some(close) = closest(&s.name, m.states.iter().map(|s| s.name.as_str())) {
                    d = d.did_you_mean(close);
                }
                self.error(d);
                return None;
            }
            out.push(s.name.clone());
        }
        Some(out)
    }

    fn unknown_owner(&mut self, owner: &ast::Ident, resources: &[ir::Resource], machines: &[ir::Machine]) {
        let names = resources.iter().map(|r| r.name.as_str()).chain(machines.iter().map(|m| m.name.as_str()));
        let mut d = Diagnostic::new(
            Code::UnknownResource,
            owner.span,
            format!("`{}` is neither a resource nor a machine", owner.name),
        )
        .label("not declared");
        if let Some(close) = closest(&owner.name, names) {
            d = d.did_you_mean(close);
        }
        self.error(d);
    }

    fn unknown_action(&mut self, owner: &ast::Ident, action: &ast::Ident, names: &[&str]) {
        let mut d = Diagnostic::new(
            Code::UnknownEvent,
            action.span,
            format!("`{}` has no create, event or operation `{}`", owner.name, action.name),
        )
        .label("not declared");
        if let Some(close) = closest(&action.name, names.iter().copied()) {
            d = d.did_you_mean(close);
        }
        self.error(d);
    }
}

/// A side in canonical spec syntax.
fn side_text(terms: &[ir::Term]) -> String {
    let mut s = String::new();
    for (i, t) in terms.iter().enumerate() {
        match (i, t.negative) {
            (0, true) => s.push('-'),
            (0, false) => {}
            (_, true) => s.push_str(" - "),
            (_, false) => s.push_str(" + "),
        }
        s.push_str(&t.value.to_string());
    }
    s
}
