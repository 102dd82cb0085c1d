//! Many rows in one statement: a compiled one-row insert repeated, or an update of many
//! rows from a list of values, for group commit's fast path (one round trip per table for
//! a whole batch).

use super::{PlanError, Slot, Sql};
use crate::evolve::sql::ident as quote;
use sea_orm::DbBackend;
use std::sync::{Arc, OnceLock};

/// Row counts whose statement text is kept once built: a batch's statements take as many
/// rows as it has commands (at most `BATCH_MAX_DEFAULT`, 128, unless configured higher),
/// and building a text of a hundred rows (a `CAST($n AS type)` per value) showed as 3 % of
/// the server's CPU on a hot SKU. Longer texts are built each time.
const TEXTS_KEPT: usize = 256;

/// A one-row `INSERT` repeated for many rows in one statement (group commit writes a
/// batch's rows with one round trip per table): the text before and after the row's
/// `VALUES (...)` group, and the one row's slots, bound once per row.
#[derive(Debug, Clone)]
pub struct Many {
    head: String,
    tail: String,
    pub slots: Vec<Slot>,
    backend: DbBackend,
    /// Each slot's SQL type, cast to on PostgreSQL (as every compiled statement's values
    /// are, and a `VALUES` list outside an `INSERT` has no columns to take its types from);
    /// empty on SQLite.
    casts: Vec<&'static str>,
    /// The text for `n` rows, at `n - 1`, once built.
    texts: Arc<[OnceLock<String>]>,
}

/// No text built yet, for each row count kept.
fn no_texts() -> Arc<[OnceLock<String>]> {
    (0..TEXTS_KEPT).map(|_| OnceLock::new()).collect()
}

impl Many {
    /// Splits a one-row insert at its `VALUES (...)` group; it must bind every value there
    /// and nothing elsewhere, so repeating the group renumbers every placeholder.
    pub(super) fn of(one: &Sql, backend: DbBackend, what: &str) -> Result<Many, PlanError> {
        let fail = |reason: &str| PlanError { what: what.to_string(), reason: reason.to_string() };
        let start = one.sql.find(" VALUES (").ok_or_else(|| fail("no VALUES group"))? + " VALUES ".len();
        // On PostgreSQL every compiled placeholder is cast to its type (`Slots::finish`).
        let casts = match backend {
            DbBackend::Postgres => one.slots.iter().map(|s| s.ty.pg_name()).collect(),
            _ => vec![],
        };
        let plain = Many {
            head: String::new(),
            tail: String::new(),
            slots: one.slots.clone(),
            backend,
            casts,
            texts: no_texts(),
        };
        let expected = plain.group(0);
        let end = (start + expected.len()).min(one.sql.len());
        let (head, group, tail) = (&one.sql[..start], &one.sql[start..end], &one.sql[end..]);
        if group != expected || tail.contains('?') || tail.contains('$') {
            return Err(fail(&format!("the VALUES group {group} is not {expected} alone")));
        }
        Ok(Many { head: head.to_string(), tail: tail.to_string(), ..plain })
    }

    /// `UPDATE table SET column = new.column, ... FROM (the rows' values) WHERE` each row's
    /// `match` columns equal its values: one statement that gives every listed row its own
    /// values, returning `returning` of each row it changed. `columns` are the value list's
    /// columns with their slots, the `match` ones first. The list's own columns are named
    /// `c0`, `c1`, ..., so that no name in `RETURNING` can mean one of them.
    pub(super) fn update(
        table: &str,
        columns: &[(String, Slot)],
        matched: usize,
        returning: &[String],
        backend: DbBackend,
    ) -> Many {
        let new = quote("ordo_new");
        let value = |i: usize| format!("{new}.\"c{i}\"");
        let (set, matches): (Vec<_>, Vec<_>) = columns.iter().enumerate().partition(|(i, _)| *i >= matched);
        let set: Vec<String> =
            set.iter().map(|(i, (c, _))| format!("{} = {}", quote(c), value(*i))).collect();
        let matches: Vec<String> = matches
            .iter()
            .map(|(i, (c, _))| format!("{}.{} = {}", quote(table), quote(c), value(*i)))
            .collect();
        let names: Vec<String> = (0..columns.len()).map(|i| format!("\"c{i}\"")).collect();
        let returning = if returning.is_empty() {
            String::new()
        } else {
            format!(" RETURNING {}", returning.iter().map(|c| quote(c)).collect::<Vec<_>>().join(", "))
        };
        let casts = columns.iter().map(|(_, slot)| slot.ty.pg_name()).collect();
        Many {
            head: format!("WITH {new} ({}) AS (VALUES ", names.join(", ")),
            tail: format!(
                ") UPDATE {} SET {} FROM {new} WHERE {}{returning}",
                quote(table),
                set.join(", "),
                matches.join(" AND ")
            ),
            slots: columns.iter().map(|(_, slot)| slot.clone()).collect(),
            backend,
            casts,
            texts: no_texts(),
        }
    }

    /// The `first`-th row's group: `($first+1, ..., $first+n)` on PostgreSQL (each cast to
    /// its type where the statement has casts), `(?, ..., ?)` on SQLite, which takes a
    /// bound value's own type.
    fn group(&self, row: usize) -> String {
        let first = row * self.slots.len();
        let marks: Vec<String> = (0..self.slots.len())
            .map(|i| match (self.backend, self.casts.get(i)) {
                (DbBackend::Postgres, Some(ty)) => format!("CAST(${} AS {ty})", first + i + 1),
                (DbBackend::Postgres, None) => format!("${}", first + i + 1),
                _ => "?".to_string(),
            })
            .collect();
        format!("({})", marks.join(", "))
    }

    /// The statement's text for `rows` rows; its values are each row's, row after row.
    pub fn sql(&self, rows: usize) -> String {
        let build = || {
            let groups: Vec<String> = (0..rows).map(|r| self.group(r)).collect();
            format!("{}{}{}", self.head, groups.join(", "), self.tail)
        };
        match rows.checked_sub(1).and_then(|i| self.texts.get(i)) {
            Some(kept) => kept.get_or_init(build).clone(),
            None => build(),
        }
    }

    /// The statement for as many rows as `values` holds (each row's, row after row, in
    /// the order of `slots`).
    pub fn statement(&self, values: Vec<sea_orm::Value>) -> sea_orm::Statement {
        let rows = values.len() / self.slots.len().max(1);
        sea_orm::Statement::from_sql_and_values(self.backend, self.sql(rows), values)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::plan::{Slot, Slots, Source, a};
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

    /// An update of many rows: each row's values cast to their types on PostgreSQL (a bare
    /// VALUES list has no column types), bare on SQLite; the match columns in WHERE.
    #[test]
    fn an_update_of_many_rows_joins_its_values_on_the_match_columns() {
        let cols = [
            ("tenant".to_string(), Slot::new(Source::Tenant, Type::Text)),
            ("sku".to_string(), Slot::new(Source::Key, Type::Text)),
            ("available".to_string(), Slot::new(Source::Value("available".into()), Type::Int)),
        ];
        let pg = Many::update("inventories", &cols, 2, &["version".to_string()], DbBackend::Postgres);
        assert_eq!(
            pg.sql(2),
            "WITH \"ordo_new\" (\"c0\", \"c1\", \"c2\") AS (VALUES \
             (CAST($1 AS TEXT), CAST($2 AS TEXT), CAST($3 AS BIGINT)), (CAST($4 AS TEXT), CAST($5 AS TEXT), CAST($6 AS BIGINT))) \
             UPDATE \"inventories\" SET \"available\" = \"ordo_new\".\"c2\" FROM \"ordo_new\" \
             WHERE \"inventories\".\"tenant\" = \"ordo_new\".\"c0\" AND \"inventories\".\"sku\" = \"ordo_new\".\"c1\" \
             RETURNING \"version\""
        );
        let sqlite = Many::update("inventories", &cols, 2, &[], DbBackend::Sqlite).sql(1);
        assert!(sqlite.contains("AS (VALUES (?, ?, ?)) UPDATE"), "{sqlite}");
        assert!(!sqlite.contains("RETURNING"), "{sqlite}");
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
