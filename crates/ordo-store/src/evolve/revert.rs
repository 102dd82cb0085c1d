//! The way back: `evolve::revert` plans from the last version to the previous one, with the
//! renames the last version made turned round.

use ordo_spec::diff::{ChangeKind as K, Diff, Owner};
use ordo_spec::ir;
use std::collections::BTreeMap;

/// Turns the renames of `forward` (old -> new) round on `target` (the old spec), so that a
/// diff from the new spec to it plans the way back; its own clauses (of older versions) go.
pub(super) fn reverse_renames(forward: &Diff, target: &mut ir::Spec) {
    for r in &mut target.resources {
        r.was = None;
        r.fields.iter_mut().for_each(|f| f.was = None);
    }
    for m in &mut target.machines {
        m.removed.clear();
        m.fields.iter_mut().for_each(|f| f.was = None);
        m.states.iter_mut().for_each(|s| s.was = None);
        m.events.iter_mut().for_each(|e| e.was = None);
    }
    // Resources of the target by their name in the new spec.
    let mut resource_names: BTreeMap<&str, &str> = BTreeMap::new();
    for c in &forward.changes {
        if let K::RenameResource { from, to } = &c.kind {
            resource_names.insert(to, from);
            mark(&mut target.resources, from, to, |r| &r.name, |r| &mut r.was);
        }
    }
    for c in &forward.changes {
        let machine = |t: &mut ir::Spec, m: &str| t.machines.iter_mut().position(|x| x.name == m);
        match &c.kind {
            K::RenameField { owner: Owner::Machine(m), from, to } => {
                if let Some(i) = machine(target, m) {
                    mark(&mut target.machines[i].fields, from, to, |f| &f.name, |f| &mut f.was);
                }
            }
            K::RenameField { owner: Owner::Resource(r), from, to } => {
                let old = resource_names.get(r.as_str()).copied().unwrap_or(r);
                if let Some(x) = target.resources.iter_mut().find(|x| x.name == old) {
                    mark(&mut x.fields, from, to, |f| &f.name, |f| &mut f.was);
                }
            }
            K::RenameState { machine: m, from, to } => {
                if let Some(i) = machine(target, m) {
                    mark(&mut target.machines[i].states, from, to, |s| &s.name, |s| &mut s.was);
                }
            }
            K::RenameEvent { machine: m, from, to } => {
                if let Some(i) = machine(target, m) {
                    mark(&mut target.machines[i].events, from, to, |e| &e.name, |e| &mut e.was);
                }
            }
            _ => {}
        }
    }
}

/// The item called `from` says it was called `to`.
fn mark<T>(
    items: &mut [T],
    from: &str,
    to: &str,
    name: fn(&T) -> &String,
    was: fn(&mut T) -> &mut Option<String>,
) {
    if let Some(item) = items.iter_mut().find(|x| name(x) == from) {
        *was(item) = Some(to.to_string());
    }
}
