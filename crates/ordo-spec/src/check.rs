//! Syntax tree to IR: resolves every name, types every expression, checks the state graph,
//! and reports every problem found in one pass. The IR is returned only when there is none.

use crate::ast::{self, Span};
use crate::diag::{Code, Diagnostic};
use crate::ir;
use std::collections::HashMap;

/// Longest name accepted, in bytes: names become table and column names, and PostgreSQL
/// truncates identifiers at 63 bytes; the rest is kept for prefixes and index suffixes.
pub const NAME_BYTES_MAX: usize = 48;
/// Longest timer accepted: one year, in milliseconds.
pub const TIMER_MS_MAX: u64 = 366 * 24 * 3_600_000;
/// Diagnostics reported from one file; the rest are summarised in one line.
pub const DIAGNOSTICS_MAX: usize = 100;

/// Columns every machine table has; a field may not take their names.
const MACHINE_COLUMNS: &[&str] = &["id", "tenant", "state", "version", "created_at", "updated_at"];
/// Names an event, create or operation may not take: the generated read route of the same
/// machine or resource is called `get_<name>`, as the event's own route would be.
const ROUTE_NAMES: &[&str] = &["get"];

/// Columns every resource table has.
const RESOURCE_COLUMNS: &[&str] = &["tenant", "version", "created_at", "updated_at"];

mod body;
mod decl;
mod evolution;
mod invariant;
mod machine;
mod types;
use evolution::Named;

pub fn check(spec: &ast::Spec) -> (Option<ir::Spec>, Vec<Diagnostic>) {
    let mut cx = Checker { diags: Vec::new(), resources: HashMap::new() };
    let out = cx.spec(spec);
    let mut diags = cx.diags;
    diags.sort_by_key(|d| (d.span.start, d.code));
    if diags.len() > DIAGNOSTICS_MAX {
        let rest = diags.len() - DIAGNOSTICS_MAX;
        let at = diags[DIAGNOSTICS_MAX].span;
        diags.truncate(DIAGNOSTICS_MAX);
        diags.push(
            Diagnostic::new(Code::TooManyErrors, at, format!("{rest} more errors not shown"))
                .label("the next one is here"),
        );
    }
    if diags.is_empty() { (out, diags) } else { (None, diags) }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum BodyKind {
    Create,
    Transition,
    Operation,
}

/// What names mean inside one body.
struct Scope<'a> {
    kind: BodyKind,
    params: &'a [ir::Field],
    /// The row's fields: the machine's, or the resource's (its key first).
    fields: &'a [ir::Field],
    /// The resource's key name, in an operation.
    key: Option<&'a str>,
}

struct Checker {
    diags: Vec<Diagnostic>,
    /// Resources by name, lowered before machines so effects can be checked.
    resources: HashMap<String, ir::Resource>,
}

impl Checker {
    fn error(&mut self, d: Diagnostic) {
        self.diags.push(d);
    }

    fn spec(&mut self, spec: &ast::Spec) -> Option<ir::Spec> {
        let mut tables: HashMap<String, Span> = HashMap::new();
        for item in &spec.items {
            let name = match item {
                ast::Item::Resource(r) => &r.name,
                ast::Item::Machine(m) => &m.name,
                ast::Item::Invariant(_) => continue,
            };
            self.name_length(name);
            let table = ir::table_name(&name.name);
            if table.starts_with("ordo_") {
                self.error(
                    Diagnostic::new(
                        Code::ReservedName,
                        name.span,
                        format!(
                            "`{}` would be stored in `{table}`, a name Ordo keeps for its own tables",
                            name.name
                        ),
                    )
                    .label("reserved")
                    .help("choose a name that does not start with `Ordo`"),
                );
            }
            if let Some(first) = tables.get(&table) {
                self.error(
                    Diagnostic::new(
                        Code::DuplicateName,
                        name.span,
                        format!("`{}` is declared twice (both would be stored in `{table}`)", name.name),
                    )
                    .label("second declaration")
                    .related(*first, "first declared here"),
                );
            } else {
                tables.insert(table, name.span);
            }
        }

        let resource_names: Vec<Named<'_>> = spec
            .items
            .iter()
            .filter_map(|i| match i {
                ast::Item::Resource(r) => Some(Named { name: &r.name, was: r.was.as_ref() }),
                ast::Item::Machine(_) | ast::Item::Invariant(_) => None,
            })
            .collect();
        self.renames("resource", &resource_names);
        let mut resources = Vec::new();
        for item in &spec.items {
            if let ast::Item::Resource(r) = item
                && let Some(lowered) = self.resource(r)
            {
                self.resources.entry(lowered.name.clone()).or_insert_with(|| lowered.clone());
                resources.push(lowered);
            }
        }
        let mut machines = Vec::new();
        for item in &spec.items {
            if let ast::Item::Machine(m) = item
                && let Some(lowered) = self.machine(m)
            {
                machines.push(lowered);
            }
        }
        if !spec.items.iter().any(|i| matches!(i, ast::Item::Machine(_))) {
            let end = spec.items.last().map_or(0, |i| i.span().end);
            self.error(
                Diagnostic::new(Code::EmptySpec, Span::new(end, end), "the spec declares no machine")
                    .label("expected a `machine` declaration")
                    .help("add `machine Name { initial start  create open ... }`; see docs/spec-language.md"),
            );
        }
        let invariants = self.invariants(&spec.items, &resources, &machines);
        Some(ir::Spec { resources, machines, invariants })
    }

    /// Event, create and operation names become route names next to the read route.
    fn route_name(&mut self, name: &ast::Ident, what: &str) {
        if ROUTE_NAMES.contains(&name.name.as_str()) {
            self.error(
                Diagnostic::new(
                    Code::ReservedName,
                    name.span,
                    format!("`{}` cannot name {what}: the read route has that name", name.name),
                )
                .label("reserved")
                .help("choose a name that says what it does, such as `fetch` or `load`"),
            );
        }
    }

    fn name_length(&mut self, name: &ast::Ident) {
        if name.name.len() > NAME_BYTES_MAX {
            self.error(
                Diagnostic::new(
                    Code::NameTooLong,
                    name.span,
                    format!(
                        "`{}` is {} bytes long; names may be at most {NAME_BYTES_MAX}",
                        name.name,
                        name.name.len()
                    ),
                )
                .label("too long")
                .help("names become table and column names; use a shorter one"),
            );
        }
    }
}

/// The candidate closest to `name` by edit distance, if close enough to be a typo: within a
/// third of its length, or within half of it when that one candidate is clearly the closest
/// (every other is at least two edits further).
fn closest<'a>(name: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let len = name.chars().count();
    let mut by_distance: Vec<(usize, &'a str)> =
        candidates.map(|c| (crate::parse::edit_distance(name, c), c)).collect();
    by_distance.sort_by_key(|(d, _)| *d);
    let (d, best) = *by_distance.first()?;
    let clearly = by_distance.get(1).is_none_or(|(next, _)| *next >= d + 2);
    (d <= (len / 3).max(1) || (d <= len / 2 && clearly)).then_some(best)
}
