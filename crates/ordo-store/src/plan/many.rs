//! Many rows in one `INSERT`: a compiled one-row insert repeated, for group commit's fast
//! path (one round trip per table for a whole batch).

use super::{PlanError, Slot, Sql};
use sea_orm::DbBackend;

/// A one-row `INSERT` repeated for many rows in one statement (group commit writes a
/// batch's rows with one round trip per table): the text before and after the row's
/// `VALUES (...)` group, and the one row's slots, bound once per row.
#[derive(Debug, Clone)]
pub struct Many {
    head: String,
    tail: String,
    pub slots: Vec<Slot>,
    backend: DbBackend,
}

impl Many {
    /// Splits a one-row insert at its `VALUES (...)` group; it must bind every value there
    /// and nothing elsewhere, so repeating the group renumbers every placeholder.
    pub(super) fn of(one: &Sql, backend: DbBackend, what: &str) -> Result<Many, PlanError> {
        let fail = |reason: &str| PlanError { what: what.to_string(), reason: reason.to_string() };
        let start = one.sql.find(" VALUES (").ok_or_else(|| fail("no VALUES group"))? + " VALUES ".len();
        let end = start + one.sql[start..].find(')').ok_or_else(|| fail("an unclosed VALUES group"))? + 1;
        let (head, group, tail) = (&one.sql[..start], &one.sql[start..end], &one.sql[end..]);
        let expected = Many::group(backend, 0, one.slots.len());
        if group != expected || tail.contains('?') || tail.contains('$') {
            return Err(fail(&format!("the VALUES group {group} is not {expected} alone")));
        }
        Ok(Many { head: head.to_string(), tail: tail.to_string(), slots: one.slots.clone(), backend })
    }

    /// `($first+1, ..., $first+n)` on PostgreSQL, `(?, ..., ?)` on SQLite.
    fn group(backend: DbBackend, first: usize, n: usize) -> String {
        let marks: Vec<String> = (first + 1..=first + n)
            .map(|i| if backend == DbBackend::Postgres { format!("${i}") } else { "?".to_string() })
            .collect();
        format!("({})", marks.join(", "))
    }

    /// The statement's text for `rows` rows; its values are each row's, row after row.
    pub fn sql(&self, rows: usize) -> String {
        let groups: Vec<String> =
            (0..rows).map(|r| Many::group(self.backend, r * self.slots.len(), self.slots.len())).collect();
        format!("{}{}{}", self.head, groups.join(", "), self.tail)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::plan::{Slots, Source, a};
    use ordo_spec::ir::Type;
    use sea_orm::sea_query::{Expr, OnConflict, Query};

    /// `Many` gives, for any number of rows, the text sea-query itself builds for them.
    #[test]
    fn many_rows_are_the_builders_own_multi_row_insert() {
        for backend in [DbBackend::Postgres, DbBackend::Sqlite] {
            let build = |rows: usize, returning: bool| {
                let mut slots = Slots::default();
                let mut q = Query::insert();
                q.into_table(a("t")).columns([a("x"), a("y")]);
                for _ in 0..rows {
                    let values =
                        [slots.value(Source::Tenant, Type::Text), slots.value(Source::Now, Type::Timestamp)];
                    q.values(values.map(Expr::val)).unwrap();
                }
                q.on_conflict(OnConflict::column(a("x")).do_nothing().to_owned());
                if returning {
                    q.returning_col(a("y"));
                }
                slots.finish(backend, &q, "t").unwrap()
            };
            for returning in [false, true] {
                let many = Many::of(&build(1, returning), backend, "t").unwrap();
                for rows in [1, 2, 5] {
                    let built = build(rows, returning);
                    assert_eq!(many.sql(rows), built.sql, "{backend:?}, {rows} rows");
                    assert_eq!(built.slots.len(), rows * many.slots.len());
                }
            }
        }
    }

    /// A statement that binds anything outside its one VALUES group cannot be repeated.
    #[test]
    fn an_insert_with_values_elsewhere_is_refused() {
        let mut slots = Slots::default();
        let mut q = Query::insert();
        q.into_table(a("t"))
            .columns([a("x")])
            .values([Expr::val(slots.value(Source::Tenant, Type::Text))])
            .unwrap();
        q.on_conflict(
            OnConflict::column(a("x"))
                .value(a("x"), Expr::val(slots.value(Source::Now, Type::Timestamp)))
                .to_owned(),
        );
        let one = slots.finish(DbBackend::Postgres, &q, "t").unwrap();
        assert!(Many::of(&one, DbBackend::Postgres, "t").is_err(), "{}", one.sql);
    }
}
