//! What the server answers, one function per request, each from a [`Document`]. Nothing
//! here does I/O: `server.rs` decodes the request and sends the answer.

use crate::doc::Document;
use crate::index::{Index, Kind, Symbol};
use lsp_types as lsp;
use ordo_spec::ast::{self, Span};
use ordo_spec::{Code, RESERVED_WORDS};
use std::collections::HashMap;

/// The checker's diagnostics as the editor shows them: same code, span, message and related
/// places; the help line ends the message, as it ends the command line's report.
pub fn diagnostics(doc: &Document, uri: &lsp::Uri) -> Vec<lsp::Diagnostic> {
    doc.diagnostics.iter().map(|d| diagnostic(doc, uri, d)).collect()
}

fn diagnostic(doc: &Document, uri: &lsp::Uri, d: &ordo_spec::Diagnostic) -> lsp::Diagnostic {
    let mut message = d.message.clone();
    if let Some(help) = &d.help {
        message.push_str("\nhelp: ");
        message.push_str(help);
    }
    let related = d
        .related
        .iter()
        .map(|(span, note)| lsp::DiagnosticRelatedInformation {
            location: lsp::Location { uri: uri.clone(), range: doc.lines.range(&doc.text, *span) },
            message: note.clone(),
        })
        .collect::<Vec<_>>();
    lsp::Diagnostic {
        range: doc.lines.range(&doc.text, d.span),
        severity: Some(lsp::DiagnosticSeverity::ERROR),
        code: Some(lsp::NumberOrString::String(d.code.as_str().to_string())),
        source: Some("ordo".to_string()),
        message,
        related_information: (!related.is_empty()).then_some(related),
        ..Default::default()
    }
}

/// The first line of a declaration, as written (at most 120 characters).
fn header(text: &str, span: Span) -> String {
    let line = text[span.range()].lines().next().unwrap_or_default().trim_end();
    let line = line.trim_end_matches('{').trim_end();
    match line.char_indices().nth(120) {
        Some((i, _)) => format!("{}…", &line[..i]),
        None => line.to_string(),
    }
}

fn line_of(doc: &Document, offset: usize) -> u32 {
    doc.lines.position(&doc.text, offset).line + 1
}

/// The symbol under the cursor, in a text that parses.
fn symbol_at(doc: &Document, pos: lsp::Position) -> Option<(&Index, usize, Span)> {
    let index = doc.index.as_deref()?;
    let occ = index.at(doc.lines.offset(&doc.text, pos))?;
    Some((index, occ.symbol, occ.span))
}

/// " of `Order`" (a parameter's owner is its command, `Order.ship`); nothing for a top item.
fn whose(s: &Symbol) -> String {
    s.owner.as_ref().map(|o| format!(" of `{o}`")).unwrap_or_default()
}

pub fn hover(doc: &Document, pos: lsp::Position) -> Option<lsp::Hover> {
    let (index, id, span) = symbol_at(doc, pos)?;
    let s = &index.symbols[id];
    let mut out = format!("{} `{}`{}\n\n```ordo\n", s.kind.word(), s.name, whose(s));
    let mut seen = Vec::new();
    for item in &s.decl_items {
        let h = header(&doc.text, *item);
        if !seen.contains(&h) {
            out.push_str(&h);
            out.push('\n');
            seen.push(h);
        }
    }
    out.push_str("```\n\n");
    let decl_lines: Vec<String> = s.decls.iter().map(|d| line_of(doc, d.start).to_string()).collect();
    out.push_str(&format!("declared on line {}", decl_lines.join(", ")));
    let mut uses: Vec<u32> = s.refs.iter().map(|r| line_of(doc, r.start)).collect();
    uses.dedup();
    match s.refs.len() {
        0 => out.push_str(" · never used"),
        1 => out.push_str(&format!(" · used once, on line {}", uses[0])),
        n => {
            let lines: Vec<String> = uses.iter().map(u32::to_string).collect();
            out.push_str(&format!(" · used {n} times, on lines {}", lines.join(", ")));
        }
    }
    Some(lsp::Hover {
        contents: lsp::HoverContents::Markup(lsp::MarkupContent {
            kind: lsp::MarkupKind::Markdown,
            value: out,
        }),
        range: Some(doc.lines.range(&doc.text, span)),
    })
}

pub fn definition(doc: &Document, uri: &lsp::Uri, pos: lsp::Position) -> Vec<lsp::Location> {
    let Some((index, id, _)) = symbol_at(doc, pos) else { return Vec::new() };
    locations(doc, uri, &index.symbols[id].decls)
}

pub fn references(doc: &Document, uri: &lsp::Uri, pos: lsp::Position, with_decl: bool) -> Vec<lsp::Location> {
    let Some((index, id, _)) = symbol_at(doc, pos) else { return Vec::new() };
    let s = &index.symbols[id];
    let mut spans: Vec<Span> = s.refs.clone();
    if with_decl {
        spans.extend(&s.decls);
    }
    spans.sort_by_key(|s| s.start);
    locations(doc, uri, &spans)
}

fn locations(doc: &Document, uri: &lsp::Uri, spans: &[Span]) -> Vec<lsp::Location> {
    spans.iter().map(|s| lsp::Location { uri: uri.clone(), range: doc.lines.range(&doc.text, *s) }).collect()
}

pub fn prepare_rename(doc: &Document, pos: lsp::Position) -> Option<lsp::PrepareRenameResponse> {
    let (index, id, span) = symbol_at(doc, pos)?;
    Some(lsp::PrepareRenameResponse::RangeWithPlaceholder {
        range: doc.lines.range(&doc.text, span),
        placeholder: index.symbols[id].name.clone(),
    })
}

/// Every declaration and use of the name under the cursor, renamed; an error that says why
/// when the new name is not a name, is reserved, or is taken in the same scope.
pub fn rename(
    doc: &Document,
    uri: &lsp::Uri,
    pos: lsp::Position,
    new_name: &str,
) -> Result<Option<lsp::WorkspaceEdit>, String> {
    let Some((index, id, _)) = symbol_at(doc, pos) else { return Ok(None) };
    let s = &index.symbols[id];
    let valid = new_name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && new_name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        return Err(format!(
            "`{new_name}` is not a name: a name starts with a letter or `_` and has only letters, digits and `_`"
        ));
    }
    if RESERVED_WORDS.contains(&new_name) {
        return Err(format!("`{new_name}` is a reserved word"));
    }
    // Machines and resources share one namespace (their tables and routes); everything
    // else is scoped to its owner.
    let rivals = match s.kind {
        Kind::Machine | Kind::Resource => vec![Kind::Machine, Kind::Resource],
        kind => vec![kind],
    };
    let owner = s.owner.as_deref().unwrap_or_default();
    if let Some(&taken) =
        rivals.iter().find(|k| new_name != s.name && index.find(**k, owner, new_name).is_some())
    {
        return Err(match &s.owner {
            Some(o) => format!("`{o}` already has a {} `{new_name}`", taken.word()),
            None => format!("there is already a {} `{new_name}`", taken.word()),
        });
    }
    let mut spans: Vec<Span> = s.decls.iter().chain(&s.refs).copied().collect();
    spans.sort_by_key(|s| s.start);
    let edits = spans
        .iter()
        .map(|sp| lsp::TextEdit { range: doc.lines.range(&doc.text, *sp), new_text: new_name.to_string() });
    Ok(Some(lsp::WorkspaceEdit {
        changes: Some(HashMap::from([(uri.clone(), edits.collect())])),
        ..Default::default()
    }))
}

/// The whole document, formatted by the spec formatter; nothing while it does not parse.
pub fn formatting(doc: &Document) -> Vec<lsp::TextEdit> {
    match ordo_spec::fmt::format(&doc.text) {
        Ok(formatted) if formatted != doc.text => vec![lsp::TextEdit {
            range: doc.lines.range(&doc.text, Span::new(0, doc.text.len())),
            new_text: formatted,
        }],
        _ => Vec::new(),
    }
}

/// Quick fixes for the diagnostics touching `range`: the checker's own replacement
/// ("did you mean `paid`?"), and declaring a state that is not declared.
pub fn code_actions(doc: &Document, uri: &lsp::Uri, range: lsp::Range) -> Vec<lsp::CodeAction> {
    let (from, to) = (doc.lines.offset(&doc.text, range.start), doc.lines.offset(&doc.text, range.end));
    let mut actions = Vec::new();
    for d in doc.diagnostics.iter().filter(|d| d.span.start <= to && from <= d.span.end) {
        let edit = match &d.fix {
            Some(fix) => Some((format!("Replace with `{fix}`"), d.span, fix.clone())),
            None if d.code == Code::UnknownState => declare_state(doc, d.span),
            None => None,
        };
        let Some((title, span, new_text)) = edit else { continue };
        let edit = lsp::TextEdit { range: doc.lines.range(&doc.text, span), new_text };
        actions.push(lsp::CodeAction {
            title,
            kind: Some(lsp::CodeActionKind::QUICKFIX),
            diagnostics: Some(vec![diagnostic(doc, uri, d)]),
            edit: Some(lsp::WorkspaceEdit {
                changes: Some(HashMap::from([(uri.clone(), vec![edit])])),
                ..Default::default()
            }),
            is_preferred: Some(d.fix.is_some()),
            ..Default::default()
        });
    }
    actions
}

/// `state name` on a new line after the machine's last state declaration.
fn declare_state(doc: &Document, unknown: Span) -> Option<(String, Span, String)> {
    let ast::Item::Machine(m) = doc.item_at(unknown.start)? else { return None };
    let name = &doc.text[unknown.range()];
    let last = m.members.iter().rfind(|m| matches!(m, ast::MachineMember::States(_)))?.span();
    let line_start = doc.text[..last.start].rfind('\n').map_or(0, |i| i + 1);
    let indent = &doc.text[line_start..last.start];
    let indent = if indent.trim().is_empty() { indent } else { "    " };
    let at = Span::new(last.end, last.end);
    Some((format!("Declare state `{name}` in `{}`", m.name.name), at, format!("\n{indent}state {name}")))
}

#[allow(deprecated)] // `DocumentSymbol::deprecated` must be spelled out; it is left unset.
fn symbol(
    doc: &Document,
    name: &ast::Ident,
    detail: Option<String>,
    kind: lsp::SymbolKind,
    span: Span,
    children: Vec<lsp::DocumentSymbol>,
) -> lsp::DocumentSymbol {
    lsp::DocumentSymbol {
        name: name.name.clone(),
        detail,
        kind,
        tags: None,
        deprecated: None,
        range: doc.lines.range(&doc.text, span),
        selection_range: doc.lines.range(&doc.text, name.span),
        children: (!children.is_empty()).then_some(children),
    }
}

/// The outline: machines with their fields, states, create and events; resources with their
/// key, fields and operations; invariants.
pub fn document_symbols(doc: &Document) -> Vec<lsp::DocumentSymbol> {
    let Some(spec) = &doc.ast else { return Vec::new() };
    let field = |f: &ast::FieldDecl, kind| {
        symbol(doc, &f.name, Some(header(&doc.text, f.span)), kind, f.span, vec![])
    };
    spec.items
        .iter()
        .map(|item| match item {
            ast::Item::Machine(m) => {
                let mut children = Vec::new();
                for member in &m.members {
                    match member {
                        ast::MachineMember::Field(f) => children.push(field(f, lsp::SymbolKind::FIELD)),
                        ast::MachineMember::States(s) => children.extend(s.names.iter().map(|n| {
                            let detail = s.kind.keyword().to_string();
                            symbol(doc, n, Some(detail), lsp::SymbolKind::ENUM_MEMBER, n.span, vec![])
                        })),
                        ast::MachineMember::Create(c) => {
                            let detail = Some(header(&doc.text, c.span));
                            children.push(symbol(
                                doc,
                                &c.name,
                                detail,
                                lsp::SymbolKind::CONSTRUCTOR,
                                c.span,
                                vec![],
                            ))
                        }
                        ast::MachineMember::Event(e) => {
                            let sources: Vec<&str> = e.sources.iter().map(|s| s.name.as_str()).collect();
                            let detail = Some(format!("{} -> {}", sources.join(", "), e.target.name));
                            children.push(symbol(
                                doc,
                                &e.name,
                                detail,
                                lsp::SymbolKind::EVENT,
                                e.span,
                                vec![],
                            ))
                        }
                        ast::MachineMember::Timer(_) | ast::MachineMember::Removed(_) => {}
                    }
                }
                symbol(doc, &m.name, Some("machine".into()), lsp::SymbolKind::CLASS, m.span, children)
            }
            ast::Item::Resource(r) => {
                let mut children = vec![field(&r.key, lsp::SymbolKind::KEY)];
                for member in &r.members {
                    children.push(match member {
                        ast::ResourceMember::Field(f) => field(f, lsp::SymbolKind::FIELD),
                        ast::ResourceMember::Operation(o) => {
                            let detail = Some(header(&doc.text, o.span));
                            symbol(doc, &o.name, detail, lsp::SymbolKind::METHOD, o.span, vec![])
                        }
                    });
                }
                symbol(doc, &r.name, Some("resource".into()), lsp::SymbolKind::STRUCT, r.span, children)
            }
            ast::Item::Invariant(i) => {
                let detail = Some(header(&doc.text, i.span));
                symbol(doc, &i.name, detail, lsp::SymbolKind::CONSTANT, i.span, vec![])
            }
        })
        .collect()
}

/// The semantic token types, in the legend's order (`token_type` indexes it).
pub const TOKEN_TYPES: [lsp::SemanticTokenType; 8] = [
    lsp::SemanticTokenType::CLASS,
    lsp::SemanticTokenType::STRUCT,
    lsp::SemanticTokenType::ENUM_MEMBER,
    lsp::SemanticTokenType::EVENT,
    lsp::SemanticTokenType::PROPERTY,
    lsp::SemanticTokenType::PARAMETER,
    lsp::SemanticTokenType::METHOD,
    lsp::SemanticTokenType::VARIABLE,
];

pub fn legend() -> lsp::SemanticTokensLegend {
    lsp::SemanticTokensLegend {
        token_types: TOKEN_TYPES.to_vec(),
        token_modifiers: vec![lsp::SemanticTokenModifier::DECLARATION],
    }
}

fn token_type(kind: Kind) -> u32 {
    match kind {
        Kind::Machine => 0,
        Kind::Resource => 1,
        Kind::State => 2,
        Kind::Event => 3,
        Kind::Field => 4,
        Kind::Param => 5,
        Kind::Operation => 6,
        Kind::Invariant => 7,
    }
}

/// Every resolved name, classified: what a TextMate grammar cannot know (that `paid` is a
/// state here and a field there).
pub fn semantic_tokens(doc: &Document) -> lsp::SemanticTokens {
    let Some(index) = doc.index.as_deref() else { return lsp::SemanticTokens::default() };
    let mut data = Vec::with_capacity(index.occurrences.len());
    let mut last = lsp::Position::default();
    for occ in &index.occurrences {
        let range = doc.lines.range(&doc.text, occ.span);
        let delta_line = range.start.line - last.line;
        let delta_start =
            if delta_line == 0 { range.start.character - last.character } else { range.start.character };
        data.push(lsp::SemanticToken {
            delta_line,
            delta_start,
            length: range.end.character.saturating_sub(range.start.character),
            token_type: token_type(index.symbols[occ.symbol].kind),
            token_modifiers_bitset: u32::from(occ.decl),
        });
        last = range.start;
    }
    lsp::SemanticTokens { result_id: None, data }
}
