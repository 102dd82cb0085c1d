//! The steps that change a field: added (with its backfill), renamed, made required
//! (refused while rows hold null without a backfill), and its checks narrowed (refused while
//! live rows break them), with the backfill's checks against the rows it would write.

use super::super::op::Op;
use super::super::sql::{self, ident};
use super::{Affected, Ctx, Made, TableOf};
use crate::{StoreError, schema};
use ordo_spec::diff::{self, Owner, Problem};
use ordo_spec::ir::{self, Field};
use sea_orm::ConnectionTrait;
use sea_orm::sea_query::{Alias, PostgresQueryBuilder, Table};

impl<C: ConnectionTrait> Ctx<'_, C> {
    /// A backfill over the deployed row (for counts and SQLite's copy).
    pub(super) fn backfill_old(&self, owner: &str, e: &ir::Expr) -> String {
        sql::expr(e, &|f: &str| self.names.field(owner, f), &self.now)
    }

    /// A backfill over the row after renames (PostgreSQL's UPDATE).
    pub(super) fn backfill_new(&self, e: &ir::Expr) -> String {
        sql::expr(e, &|f: &str| f.to_string(), &self.now)
    }

    /// The refusal of a backfill that gives null or breaks the field's checks on some rows
    /// matching `rows` (a condition over the deployed row).
    pub(super) async fn backfill_refusal(
        &self,
        t: &TableOf<'_>,
        owner: &str,
        f: &Field,
        rows: &str,
    ) -> Result<Option<Problem>, StoreError> {
        let Some(b) = &f.backfill else { return Ok(None) };
        let value = self.backfill_old(owner, b);
        let null = self.count(&t.old, &format!("({rows}) AND ({value}) IS NULL")).await?;
        if null > 0 && !f.optional {
            let sample = self.sample(t, &format!("({rows}) AND ({value}) IS NULL")).await?;
            return Ok(Self::refuse(
                diff::NEEDS_BACKFILL,
                format!(
                    "{owner}.{}: the backfill is null for {null} row(s) (e.g. {})",
                    f.name,
                    sample.join(", ")
                ),
            ));
        }
        let Some(check) = check_on(&value, &f.checks) else { return Ok(None) };
        let cond = format!("({rows}) AND NOT ({check})");
        let broken = self.count(&t.old, &cond).await?;
        if broken == 0 {
            return Ok(None);
        }
        let sample = self.sample(t, &cond).await?;
        Ok(Self::refuse(
            diff::BREAKS_CHECK,
            format!(
                "{owner}.{}: the backfill breaks the field's check on {broken} row(s) (e.g. {})",
                f.name,
                sample.join(", ")
            ),
        ))
    }

    /// A field renamed: the column on PostgreSQL, the rebuild's copy on SQLite.
    pub(super) fn rename_field(&self, owner: &Owner, from: &str, to: &str) -> Result<Made, StoreError> {
        let pg = self.pg();
        let Some(t) = self.table(owner) else { return Ok((Vec::new(), None, None)) };
        let op = if pg {
            Op::Sql(format!("ALTER TABLE {} RENAME COLUMN {} TO {}", ident(&t.new), ident(from), ident(to)))
        } else {
            Op::Note(format!("the rebuild of {} copies {} into {}", ident(&t.new), ident(from), ident(to)))
        };
        Ok((vec![op], None, None))
    }

    /// A field that may no longer be null: refused while rows hold null and no `backfill`
    /// says what they become (or the backfill would break the field's check).
    pub(super) async fn require_field(&self, owner: &Owner, field: &Field) -> Result<Made, StoreError> {
        let pg = self.pg();
        let Some(t) = self.table(owner) else { return Ok((Vec::new(), None, None)) };
        let old_col = self.names.field(owner.name(), &field.name);
        let nulls = format!("{} IS NULL", ident(&old_col));
        let a = self.affected(&t, &nulls, "rows holding null").await?;
        let mut refusal = None;
        if a.rows > 0 && field.backfill.is_none() {
            refusal = Self::refuse(
                diff::NEEDS_BACKFILL,
                format!(
                    "{}.{}: {} row(s) hold null (e.g. {}); give the field a `backfill`",
                    owner.name(),
                    field.name,
                    a.rows,
                    a.sample.join(", ")
                ),
            );
        } else if a.rows > 0 {
            refusal = self.backfill_refusal(&t, owner.name(), field, &nulls).await?;
        }
        let mut ops = Vec::new();
        if pg {
            if let Some(b) = &field.backfill {
                ops.push(Op::Sql(format!(
                    "UPDATE {t} SET {c} = {} WHERE {c} IS NULL",
                    self.backfill_new(b),
                    t = ident(&t.new),
                    c = ident(&field.name)
                )));
            }
            ops.push(Op::Sql(format!(
                "ALTER TABLE {} ALTER COLUMN {} SET NOT NULL",
                ident(&t.new),
                ident(&field.name)
            )));
        }
        Ok((ops, Some(a), refusal))
    }

    /// A field's checks changed: a narrowed one is refused while live rows break it.
    pub(super) async fn checks(
        &self,
        owner: &Owner,
        field: &Field,
        widened: bool,
    ) -> Result<Made, StoreError> {
        let pg = self.pg();
        let Some(t) = self.table(owner) else { return Ok((Vec::new(), None, None)) };
        let mut affected = None;
        let mut refusal = None;
        if !widened
            && let Some(check) = sql::check(&self.names.field(owner.name(), &field.name), &field.checks)
        {
            let a = self.affected(&t, &format!("NOT ({check})"), "rows breaking the new check").await?;
            if a.rows > 0 {
                refusal = Self::refuse(
                    diff::BREAKS_CHECK,
                    format!(
                        "{}.{}: {} live row(s) break the new check (e.g. {}); change those rows first, or keep the check",
                        owner.name(),
                        field.name,
                        a.rows,
                        a.sample.join(", ")
                    ),
                );
            }
            affected = Some(a);
        }
        let ops = if pg {
            vec![Op::Checks {
                table: t.new.clone(),
                column: field.name.clone(),
                check: sql::check(&field.name, &field.checks),
            }]
        } else {
            Vec::new()
        };
        Ok((ops, affected, refusal))
    }

    pub(super) async fn add_field(&self, owner: &Owner, field: &Field) -> Result<Made, StoreError> {
        let Some(t) = self.table(owner) else { return Ok((Vec::new(), None, None)) };
        let rows =
            super::super::count(self.db, self.backend, &format!("SELECT COUNT(*) FROM {}", ident(&t.old)))
                .await?;
        let affected = Some(Affected { rows, what: "rows".into(), sample: Vec::new() });
        let mut refusal = None;
        if rows > 0 && !field.optional && field.backfill.is_none() {
            refusal = Self::refuse(
                diff::NEEDS_BACKFILL,
                format!(
                    "{}.{}: a new required field on a table with {rows} row(s) needs a `backfill` (a value or an expression over the row)",
                    owner.name(),
                    field.name
                ),
            );
        } else if rows > 0 {
            refusal = self.backfill_refusal(&t, owner.name(), field, "1 = 1").await?;
        }
        if !self.pg() {
            return Ok((Vec::new(), affected, refusal));
        }
        let constant = match &field.backfill {
            Some(ir::Expr::Value(v)) => Some(v),
            _ => None,
        };
        // A computed backfill fills a nullable column first; NOT NULL comes after the UPDATE.
        let nullable = field.optional || (field.backfill.is_some() && constant.is_none());
        let mut column = schema::field_column(&Field {
            optional: nullable,
            checks: Vec::new(),
            backfill: None,
            ..field.clone()
        });
        // A constant is also the column's default: an old server's insert leaves the column
        // out and still satisfies NOT NULL.
        if let Some(v) = constant {
            column.default(schema::inline(v));
        }
        let mut ops = Vec::new();
        let alter = Table::alter().table(Alias::new(&t.new)).add_column(column).to_owned();
        ops.push(Op::Sql(alter.to_string(PostgresQueryBuilder)));
        if let (Some(b), None) = (&field.backfill, constant) {
            ops.push(Op::Sql(format!(
                "UPDATE {} SET {} = {}",
                ident(&t.new),
                ident(&field.name),
                self.backfill_new(b)
            )));
            if !field.optional {
                ops.push(Op::Sql(format!(
                    "ALTER TABLE {} ALTER COLUMN {} SET NOT NULL",
                    ident(&t.new),
                    ident(&field.name)
                )));
            }
        }
        if let Some(check) = sql::check(&field.name, &field.checks) {
            ops.push(Op::Checks { table: t.new.clone(), column: field.name.clone(), check: Some(check) });
        }
        Ok((ops, affected, refusal))
    }
}

/// The checks of a field applied to an SQL value instead of its column.
fn check_on(value: &str, checks: &[ir::Check]) -> Option<String> {
    sql::check("\u{0}", checks).map(|c| c.replace(&ident("\u{0}"), &format!("({value})")))
}
