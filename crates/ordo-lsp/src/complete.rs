//! Completion: which names and keywords may stand at the cursor.
//!
//! The text being typed rarely parses, so the context is read from the tokens before the
//! cursor (which braces are open, what the line starts with, the last token or two), and
//! the names come from the last text that parsed.

use crate::doc::Document;
use crate::index::{Index, Kind};
use lsp_types as lsp;

/// A word or a punctuation mark before the cursor; comments and strings are skipped.
#[derive(Debug, Clone, PartialEq)]
struct Token<'t> {
    text: &'t str,
    /// Whether a line break came between this token and the one before it.
    line_start: bool,
}

fn tokens(text: &str) -> Vec<Token<'_>> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let (mut i, mut line_start) = (0, true);
    while i < bytes.len() {
        let c = bytes[i];
        let start = i;
        if c == b'\n' {
            line_start = true;
            i += 1;
            continue;
        }
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        if text[i..].starts_with("//") {
            i = text[i..].find('\n').map_or(bytes.len(), |n| i + n);
            continue;
        }
        if c == b'"' {
            i += 1;
            while i < bytes.len() && bytes[i] != b'"' && bytes[i] != b'\n' {
                i += if bytes[i] == b'\\' { 2 } else { 1 };
            }
            i = (i + 1).min(bytes.len());
        } else if c.is_ascii_alphanumeric() || c == b'_' {
            while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                i += 1;
            }
        } else if ["->", "+=", "-=", "==", "!=", "<=", ">="].iter().any(|p| text[i..].starts_with(p)) {
            i += 2;
        } else {
            i += text[i..].chars().next().map_or(1, char::len_utf8);
        }
        out.push(Token { text: &text[start..i], line_start });
        line_start = false;
    }
    out
}

/// What the braces around the cursor belong to.
#[derive(Debug, Clone, PartialEq)]
enum Frame {
    Machine(String),
    Resource(String),
    /// The body of a command: its machine or resource, its name, and whether it is a
    /// resource's operation.
    Body {
        owner: String,
        command: String,
        operation: bool,
    },
}

/// The open braces before the cursor, and the tokens since the innermost one opened.
fn frames<'t>(toks: &'t [Token<'t>]) -> (Vec<Frame>, &'t [Token<'t>]) {
    let mut stack: Vec<Frame> = Vec::new();
    let mut since = 0;
    for (i, t) in toks.iter().enumerate() {
        match t.text {
            "{" => {
                let head = &toks[since..i];
                let word = |k: &str| {
                    head.iter()
                        .position(|t| t.text == k)
                        .and_then(|p| head.get(p + 1))
                        .map(|t| t.text.to_string())
                };
                let frame = match stack.last() {
                    None if head.iter().any(|t| t.text == "resource") => {
                        Frame::Resource(word("resource").unwrap_or_default())
                    }
                    None => Frame::Machine(word("machine").unwrap_or_default()),
                    Some(Frame::Machine(m)) => Frame::Body {
                        owner: m.clone(),
                        command: word("on").or_else(|| word("create")).unwrap_or_default(),
                        operation: false,
                    },
                    Some(Frame::Resource(r)) => Frame::Body {
                        owner: r.clone(),
                        command: word("op").unwrap_or_default(),
                        operation: true,
                    },
                    Some(f @ Frame::Body { .. }) => f.clone(),
                };
                stack.push(frame);
                since = i + 1;
            }
            "}" => {
                stack.pop();
                since = i + 1;
            }
            _ => {}
        }
    }
    (stack, &toks[since..])
}

const ITEM_KEYWORDS: &[&str] = &["machine", "resource", "invariant"];
const MACHINE_KEYWORDS: &[&str] = &["initial", "state", "final", "create", "on", "after", "removed"];
const STATEMENT_KEYWORDS: &[&str] = &["require", "set", "lock", "isolation"];
const EXPRESSION_KEYWORDS: &[&str] = &["self", "now", "true", "false", "null", "not", "and", "or"];
const TYPES: &[&str] = &["text", "int", "money", "bool", "timestamp"];
const FIELD_KEYWORDS: &[&str] = &["check", "backfill", "was"];

struct Items<'i> {
    index: Option<&'i Index>,
    out: Vec<lsp::CompletionItem>,
}

impl Items<'_> {
    fn keywords(&mut self, words: &[&str], detail: &str) {
        for w in words {
            self.out.push(lsp::CompletionItem {
                label: w.to_string(),
                kind: Some(lsp::CompletionItemKind::KEYWORD),
                detail: Some(detail.to_string()),
                ..Default::default()
            });
        }
    }

    fn names(&mut self, kind: Kind, owner: Option<&str>) {
        let Some(index) = self.index else { return };
        let item_kind = match kind {
            Kind::Machine => lsp::CompletionItemKind::CLASS,
            Kind::Resource => lsp::CompletionItemKind::STRUCT,
            Kind::State => lsp::CompletionItemKind::ENUM_MEMBER,
            Kind::Event => lsp::CompletionItemKind::EVENT,
            Kind::Field => lsp::CompletionItemKind::FIELD,
            Kind::Param => lsp::CompletionItemKind::VARIABLE,
            Kind::Operation => lsp::CompletionItemKind::METHOD,
            Kind::Invariant => lsp::CompletionItemKind::CONSTANT,
        };
        for s in index.of(kind, owner) {
            let detail = match &s.owner {
                Some(o) => format!("{} of {o}", kind.word()),
                None => kind.word().to_string(),
            };
            self.out.push(lsp::CompletionItem {
                label: s.name.clone(),
                kind: Some(item_kind),
                detail: Some(detail),
                ..Default::default()
            });
        }
    }
}

pub fn completion(doc: &Document, pos: lsp::Position) -> Vec<lsp::CompletionItem> {
    let offset = doc.lines.offset(&doc.text, pos);
    // The word being typed is what the client filters on; the context is before it.
    let word_start =
        doc.text[..offset].rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).map_or(0, |i| i + 1);
    let toks = tokens(&doc.text[..word_start]);
    let (stack, here) = frames(&toks);
    let mut items = Items { index: doc.known.as_deref(), out: Vec::new() };
    let last = |n: usize| here.len().checked_sub(n).map(|i| here[i].text);
    // The tokens of the line the cursor is on (a member or statement is one line).
    let line = &here[here.iter().rposition(|t| t.line_start).unwrap_or(0)..];
    let line = if doc.text[..word_start].rsplit('\n').next().is_some_and(|l| l.trim().is_empty()) {
        &here[here.len()..]
    } else {
        line
    };
    if last(1) == Some(".") {
        dotted(&mut items, here, &stack);
        return items.out;
    }
    match stack.last() {
        None => top_level(&mut items, line),
        Some(Frame::Machine(m)) => machine_member(&mut items, m, line),
        Some(Frame::Resource(_)) => match line.last().map(|t| t.text) {
            None => items.keywords(&["op"], "operation"),
            Some(":") => items.keywords(TYPES, "type"),
            Some(_) if line.iter().any(|t| t.text == ":") => items.keywords(FIELD_KEYWORDS, "keyword"),
            Some(_) => {}
        },
        Some(Frame::Body { owner, command, operation }) => {
            body(&mut items, owner, command, *operation, line);
        }
    }
    items.out
}

fn top_level(items: &mut Items<'_>, line: &[Token<'_>]) {
    let Some(first) = line.first() else {
        items.keywords(ITEM_KEYWORDS, "declaration");
        return;
    };
    if first.text != "invariant" {
        return;
    }
    // Inside an invariant: the open term decides.
    let open = line.iter().rposition(|t| t.text == "(");
    let closed = line.iter().rposition(|t| t.text == ")");
    match open.filter(|&o| closed.is_none_or(|c| c < o)) {
        Some(o) => {
            let term = line.get(o.wrapping_sub(1)).map(|t| t.text);
            let inside = &line[o + 1..];
            if let Some(i) = inside.iter().position(|t| t.text == "in") {
                let owner = inside.first().map_or("", |t| t.text);
                if i + 1 == inside.len() || inside.last().is_some_and(|t| t.text == ",") {
                    items.names(Kind::State, Some(owner));
                }
            } else if inside.is_empty() {
                items.names(Kind::Machine, None);
                if term != Some("count") {
                    items.names(Kind::Resource, None);
                }
            } else if term == Some("count") {
                items.keywords(&["in"], "keyword");
            }
        }
        None if line.len() >= 3 => items.keywords(&["sum", "count", "total"], "invariant term"),
        None => {}
    }
}

fn machine_member(items: &mut Items<'_>, machine: &str, line: &[Token<'_>]) {
    let Some(first) = line.first().map(|t| t.text) else {
        items.keywords(MACHINE_KEYWORDS, "machine member");
        return;
    };
    let last = line.last().map_or("", |t| t.text);
    let in_parens =
        line.iter().filter(|t| t.text == "(").count() > line.iter().filter(|t| t.text == ")").count();
    match first {
        _ if in_parens && last == ":" => items.keywords(TYPES, "type"),
        "on" if last == "->" => items.names(Kind::State, Some(machine)),
        "on" if (last == ":" || last == ",") && !line.iter().any(|t| t.text == "->") => {
            items.names(Kind::State, Some(machine))
        }
        "after" if last == "in" => items.names(Kind::State, Some(machine)),
        "after" if last == ":" => items.names(Kind::Event, Some(machine)),
        "removed" if last == "removed" || last == "->" => items.names(Kind::State, Some(machine)),
        "initial" | "state" | "final" | "create" | "on" | "after" | "removed" => {}
        _ if last == ":" => items.keywords(TYPES, "type"),
        _ if line.iter().any(|t| t.text == ":") => items.keywords(FIELD_KEYWORDS, "keyword"),
        _ => {}
    }
}

fn body(items: &mut Items<'_>, owner: &str, command: &str, operation: bool, line: &[Token<'_>]) {
    match line.last().map(|t| t.text) {
        None => {
            items.keywords(STATEMENT_KEYWORDS, "statement");
            if operation {
                items.names(Kind::Field, Some(owner));
            } else {
                items.names(Kind::Resource, None);
            }
        }
        Some("set") => items.names(Kind::Field, Some(owner)),
        Some("lock") => items.keywords(&["optimistic", "pessimistic"], "lock mode"),
        Some("pessimistic") => items.keywords(&["nowait", "skip locked"], "lock wait"),
        Some("isolation") => {
            items.keywords(&["read committed", "repeatable read", "serializable"], "isolation level")
        }
        Some(_) => {
            items.names(Kind::Param, Some(&format!("{owner}.{command}")));
            items.names(Kind::Field, Some(owner));
            items.keywords(EXPRESSION_KEYWORDS, "keyword");
        }
    }
}

/// After a `.`: a field of `self` or of `Resource[key]`, or the next part of an invariant's
/// `sum(Owner.field)` / `total(Owner.command.parameter)`.
fn dotted(items: &mut Items<'_>, here: &[Token<'_>], stack: &[Frame]) {
    let before = |n: usize| here.len().checked_sub(n).map(|i| here[i].text);
    match before(2) {
        Some("self") => {
            if let Some(Frame::Body { owner, .. }) = stack.last() {
                items.names(Kind::Field, Some(owner));
            }
        }
        Some("]") => {
            let mut depth = 0;
            for i in (0..here.len() - 1).rev() {
                match here[i].text {
                    "]" => depth += 1,
                    "[" if depth == 1 => {
                        if let Some(r) = i.checked_sub(1).map(|p| here[p].text) {
                            items.names(Kind::Field, Some(r));
                        }
                        return;
                    }
                    "[" => depth -= 1,
                    _ => {}
                }
            }
        }
        Some(owner) => match (before(3), before(4), before(5)) {
            (Some("("), Some("sum"), _) => items.names(Kind::Field, Some(owner)),
            (Some("("), Some("total"), _) => {
                items.names(Kind::Event, Some(owner));
                items.names(Kind::Operation, Some(owner));
            }
            (Some("."), Some(o), Some("(")) if before(6) == Some("total") => {
                items.names(Kind::Param, Some(&format!("{o}.{owner}")));
            }
            _ => {}
        },
        None => {}
    }
}
