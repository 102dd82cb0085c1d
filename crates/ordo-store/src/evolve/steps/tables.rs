//! The ops that belong to a table rather than to one change: on PostgreSQL the state
//! column's CHECK while instances move, on SQLite the rebuild of each changed table.

use super::super::op::{Op, rebuilt};
use super::super::sql::{self, ident};
use super::{Ctx, K, Owner, Step, TableOf, owner_of};
use crate::StoreError;
use ordo_spec::ir::Field;
use sea_orm::ConnectionTrait;

impl<C: ConnectionTrait> Ctx<'_, C> {
    /// The ops that belong to a table rather than to one change: on PostgreSQL the state
    /// column's CHECK (both old and new states while instances move, then the new ones);
    /// on SQLite the rebuild of every changed table.
    pub(super) fn table_wide(&self, steps: &mut [Step]) -> Result<(), StoreError> {
        let mut tables: Vec<Owner> = Vec::new();
        for s in steps.iter() {
            if let Some(o) = owner_of(&s.change.kind).filter(|o| !tables.contains(o)) {
                tables.push(o);
            }
        }
        for owner in tables {
            let of_table: Vec<usize> = steps
                .iter()
                .enumerate()
                .filter(|(_, s)| owner_of(&s.change.kind).as_ref() == Some(&owner))
                .map(|(i, _)| i)
                .collect();
            let states: Vec<usize> = of_table
                .iter()
                .copied()
                .filter(|&i| {
                    matches!(
                        steps[i].change.kind,
                        K::AddState { .. } | K::RenameState { .. } | K::RemoveState { .. }
                    )
                })
                .collect();
            let (Some(&first), Some(&last)) = (of_table.first(), of_table.last()) else { continue };
            let Some(t) = self.table(&owner) else { continue };
            if self.pg() {
                let (Some(&s0), Some(&s1), Owner::Machine(m)) = (states.first(), states.last(), &owner)
                else {
                    continue;
                };
                let new_states: Vec<&str> = self
                    .new
                    .machine(m)
                    .map(|x| x.states.iter().map(|s| s.name.as_str()).collect())
                    .unwrap_or_default();
                let mut both = new_states.clone();
                if let Some(old) = self.deployed.machine(m) {
                    both.extend(
                        old.states.iter().map(|s| s.name.as_str()).filter(|s| !new_states.contains(s)),
                    );
                }
                let check = |list: &[&str]| Op::Checks {
                    table: t.new.clone(),
                    column: "state".into(),
                    check: Some(sql::states_check(list)),
                };
                steps[s0].ops.insert(0, check(&both));
                steps[s1].ops.push(check(&new_states));
            } else {
                // Instances move on the deployed table, whose CHECK does not know the new
                // states yet; the rebuild then checks every row against the new table.
                let moves =
                    of_table.iter().any(|&i| steps[i].ops.iter().any(|o| matches!(o, Op::Move { .. })));
                if moves {
                    steps[first].ops.insert(0, Op::IgnoreChecks(true));
                }
                let rebuild = self.rebuild(&owner, &t, steps)?;
                if moves {
                    steps[last].ops.push(Op::IgnoreChecks(false));
                }
                steps[last].ops.push(rebuild);
            }
        }
        Ok(())
    }

    /// SQLite: the copy of `t` into a table made from the new spec, each column from the
    /// deployed one (by its old name), its backfill, or null.
    fn rebuild(&self, owner: &Owner, t: &TableOf<'_>, steps: &[Step]) -> Result<Op, StoreError> {
        let required: Vec<&str> = steps
            .iter()
            .filter_map(|s| match &s.change.kind {
                K::RequireField { owner: o, field } if o == owner => Some(field.name.as_str()),
                _ => None,
            })
            .collect();
        let old_fields: Vec<&Field> = match owner {
            Owner::Machine(m) => {
                self.deployed.machine(m).map(|x| x.fields.iter().collect()).unwrap_or_default()
            }
            Owner::Resource(r) => {
                let old = self.names.resources.get(r).cloned().unwrap_or_else(|| r.clone());
                self.deployed.resource(&old).map(|x| x.fields.iter().collect()).unwrap_or_default()
            }
        };
        let mut columns: Vec<String> = Vec::new();
        let mut select: Vec<String> = Vec::new();
        let fixed_before: Vec<&str> =
            if t.is_machine { vec!["id", "tenant", "state", "version"] } else { vec!["tenant", &t.key] };
        for c in &fixed_before {
            columns.push(c.to_string());
            select.push(ident(c));
        }
        for f in t.fields {
            let old = self.names.field(owner.name(), &f.name);
            let exists = old_fields.iter().any(|o| o.name == old);
            let backfill = f.backfill.as_ref().map(|b| self.backfill_old(owner.name(), b));
            let value = match (exists, backfill) {
                (true, Some(b)) if required.contains(&f.name.as_str()) => {
                    format!("COALESCE({}, {b})", ident(&old))
                }
                (true, _) => ident(&old),
                (false, Some(b)) => b,
                (false, None) => "NULL".to_string(),
            };
            columns.push(f.name.clone());
            select.push(value);
        }
        let fixed_after: Vec<&str> = if t.is_machine {
            vec!["created_at", "updated_at"]
        } else {
            vec!["version", "created_at", "updated_at"]
        };
        for c in fixed_after {
            columns.push(c.to_string());
            select.push(ident(c));
        }
        Ok(Op::Rebuild {
            table: t.new.clone(),
            create: self.create_table(&t.new, &rebuilt(&t.new))?,
            columns,
            select,
        })
    }
}
