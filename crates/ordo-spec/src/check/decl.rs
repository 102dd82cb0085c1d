//! Declarations: fields and parameters (names, reserved columns, `check` constraints) and
//! resources with their key, fields and operations.

use super::types::{Ty, lower_type, type_word};
use super::{BodyKind, Checker, RESOURCE_COLUMNS, Scope};
use crate::ast::{self, CmpOp, Span};
use crate::diag::{Code, Diagnostic};
use crate::ir;
use std::collections::HashMap;

impl Checker {
    /// Lowers fields (or parameters), reporting duplicates and reserved names. `taken`
    /// holds names already used in the same scope (e.g. the resource key).
    pub(super) fn fields(
        &mut self,
        decls: &[&ast::FieldDecl],
        what: &str,
        reserved: &[&str],
        taken: &mut HashMap<String, Span>,
    ) -> Vec<ir::Field> {
        let mut out = Vec::new();
        for f in decls {
            self.name_length(&f.name);
            if reserved.contains(&f.name.name.as_str()) {
                self.error(
                    Diagnostic::new(
                        Code::ReservedName,
                        f.name.span,
                        format!(
                            "`{}` cannot be a {what} name: every row already has a column of that name",
                            f.name.name
                        ),
                    )
                    .label("reserved")
                    .help(format!("the reserved names are {}", reserved.join(", "))),
                );
                continue;
            }
            if let Some(first) = taken.get(&f.name.name) {
                self.error(
                    Diagnostic::new(
                        Code::DuplicateName,
                        f.name.span,
                        format!("{what} `{}` is declared twice", f.name.name),
                    )
                    .label("second declaration")
                    .related(*first, "first declared here"),
                );
                continue;
            }
            taken.insert(f.name.name.clone(), f.name.span);
            let ty = lower_type(f.ty.base);
            let checks = f.checks.iter().filter_map(|c| self.field_check(f, ty, c)).collect();
            out.push(ir::Field {
                name: f.name.name.clone(),
                ty,
                optional: f.ty.optional,
                checks,
                was: f.was.as_ref().map(|w| w.name.clone()),
                backfill: None,
            });
        }
        out
    }

    pub(super) fn field_check(
        &mut self,
        f: &ast::FieldDecl,
        ty: ir::Type,
        c: &ast::CheckCond,
    ) -> Option<ir::Check> {
        let value = self.literal_value(&c.value)?;
        let fits = match (&value, ty) {
            (ir::Value::Int(_), ir::Type::Int | ir::Type::Money) => true,
            (ir::Value::Text(_), ir::Type::Text) => true,
            (ir::Value::Bool(_), ir::Type::Bool) => matches!(c.op, CmpOp::Eq | CmpOp::Ne),
            _ => false,
        };
        if !fits {
            let help = match ty {
                ir::Type::Timestamp => {
                    "timestamps cannot be checked against a constant; use a `require` guard".to_string()
                }
                ir::Type::Bool => {
                    "a bool can only be checked with `==` or `!=` against `true` or `false`".to_string()
                }
                t => format!("compare with a {} constant", type_word(t)),
            };
            self.error(
                Diagnostic::new(
                    Code::BadCheck,
                    c.span,
                    format!(
                        "`check {} ...` cannot apply to `{}`, a {}",
                        c.op.symbol(),
                        f.name.name,
                        type_word(ty)
                    ),
                )
                .label("does not fit the field's type")
                .help(help),
            );
            return None;
        }
        Some(ir::Check { op: c.op, value })
    }

    pub(super) fn resource(&mut self, r: &ast::Resource) -> Option<ir::Resource> {
        let mut taken = HashMap::new();
        self.no_evolution(&r.key, "key");
        let key_fields = self.fields(&[&r.key], "field", RESOURCE_COLUMNS, &mut taken);
        // A key with a bad name has been reported; keep it anyway, so that effects on this
        // resource are still checked instead of each reporting an unknown resource.
        let key = key_fields.into_iter().next().or_else(|| {
            Some(ir::Field::plain(&r.key.name.name, lower_type(r.key.ty.base), r.key.ty.optional))
        });
        if let Some(k) = &key
            && (k.optional || !matches!(k.ty, ir::Type::Text | ir::Type::Int))
        {
            self.error(
                Diagnostic::new(
                    Code::BadResourceKey,
                    r.key.ty.span,
                    format!(
                        "the key of `{}` must be `text` or `int`, not `{}`",
                        r.name.name,
                        Ty::of(k.ty, k.optional).describe()
                    ),
                )
                .label("not usable as a key")
                .help("keys identify rows: use `text` or `int`, never optional"),
            );
        }
        let field_decls: Vec<&ast::FieldDecl> = r
            .members
            .iter()
            .filter_map(|m| match m {
                ast::ResourceMember::Field(f) => Some(f),
                ast::ResourceMember::Operation(_) => None,
            })
            .collect();
        let mut fields = self.fields(&field_decls, "field", RESOURCE_COLUMNS, &mut taken);
        self.field_renames(&field_decls);
        let mut row: Vec<ir::Field> = key.iter().cloned().collect();
        row.extend(fields.iter().cloned());
        self.backfills(&field_decls, &mut fields);

        let mut op_names: HashMap<String, Span> = HashMap::new();
        let mut operations = Vec::new();
        for m in &r.members {
            let ast::ResourceMember::Operation(op) = m else { continue };
            self.name_length(&op.name);
            if let Some(first) = op_names.get(&op.name.name) {
                self.error(
                    Diagnostic::new(
                        Code::DuplicateName,
                        op.name.span,
                        format!("operation `{}` is declared twice in `{}`", op.name.name, r.name.name),
                    )
                    .label("second declaration")
                    .related(*first, "first declared here"),
                );
                continue;
            }
            op_names.insert(op.name.name.clone(), op.name.span);
            self.route_name(&op.name, "an operation");
            let params = self.params(&op.params);
            let scope = Scope {
                kind: BodyKind::Operation,
                params: &params,
                fields: &row,
                key: key.as_ref().map(|k| k.name.as_str()),
            };
            let body = self.body(Some(&op.body), &scope);
            operations.push(ir::Operation { name: op.name.name.clone(), params, body });
        }
        Some(ir::Resource {
            name: r.name.name.clone(),
            table: ir::table_name(&r.name.name),
            key: key?,
            fields,
            operations,
            was: r.was.as_ref().map(|w| w.name.clone()),
        })
    }

    pub(super) fn params(&mut self, decls: &[ast::FieldDecl]) -> Vec<ir::Field> {
        for d in decls {
            self.no_evolution(d, "parameter");
        }
        let refs: Vec<&ast::FieldDecl> = decls.iter().collect();
        self.fields(&refs, "parameter", &[], &mut HashMap::new())
    }
}
