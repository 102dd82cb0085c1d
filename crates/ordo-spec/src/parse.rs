//! Text to syntax tree: limits first, then pest, then one conversion per node.
//!
//! pest stops at the first syntax error. To report every broken declaration at once, the
//! parser blanks out the declaration that failed (keeping line breaks, so positions hold)
//! and parses again, up to `SYNTAX_ERRORS_MAX` times.

use crate::ast::*;
use crate::diag::{Code, Diagnostic};
use pest::Parser as _;
use pest::error::{ErrorVariant, InputLocation};
use pest::iterators::Pair;

#[derive(pest_derive::Parser)]
#[grammar = "grammar.pest"]
struct Grammar;

/// Largest spec accepted, in bytes. The shipped specs are a few KiB; a generated spec of
/// 10,000 lines is about 350 KiB.
pub const SPEC_BYTES_MAX: usize = 2 * 1024 * 1024;
/// Deepest nesting of `(`, `[` and `{` accepted. Real specs use 4 or 5.
pub const NESTING_DEPTH_MAX: usize = 32;
/// Deepest expression tree accepted (a chain `a + b + ... ` of N terms is N deep).
pub const EXPR_DEPTH_MAX: usize = 256;
/// Syntax errors reported from one file before the parser gives up recovering.
pub const SYNTAX_ERRORS_MAX: usize = 16;
/// pest's budget of parser calls, per byte of the largest spec (the setting is process-wide,
/// so it cannot follow each input's size). PEG backtracking on hostile input could otherwise
/// run for minutes; a valid spec uses far fewer (see `a_ten_thousand_line_spec_checks_clean`).
const PEST_CALLS_PER_BYTE_MAX: usize = 256;

/// Parses `source` into a syntax tree, or returns every syntax error found.
pub fn parse(source: &str) -> Result<Spec, Vec<Diagnostic>> {
    if source.len() > SPEC_BYTES_MAX {
        return Err(vec![
            Diagnostic::new(
                Code::TooLarge,
                Span::new(0, 0),
                format!("the spec is {} bytes; the limit is {SPEC_BYTES_MAX} bytes", source.len()),
            )
            .label("file starts here")
            .help("split it into several spec files"),
        ]);
    }
    if let Some(at) = first_too_deep(source) {
        return Err(vec![
            Diagnostic::new(
                Code::TooDeep,
                Span::new(at, at + 1),
                format!("brackets nest deeper than {NESTING_DEPTH_MAX} levels"),
            )
            .label("too deep")
            .help("flatten the expression"),
        ]);
    }
    // A budget per parse keeps hostile input from running for minutes; the setting is
    // process-wide in pest, so it is the same value for every caller.
    pest::set_call_limit(std::num::NonZeroUsize::new(SPEC_BYTES_MAX * PEST_CALLS_PER_BYTE_MAX));

    let mut text = std::borrow::Cow::Borrowed(source);
    let mut errors = Vec::new();
    loop {
        match Grammar::parse(Rule::spec, &text) {
            Ok(mut pairs) => {
                if !errors.is_empty() {
                    return Err(errors);
                }
                let Some(spec) = pairs.next() else {
                    return Err(vec![Diagnostic::new(
                        Code::Syntax,
                        Span::new(0, 0),
                        "the parser produced nothing",
                    )]);
                };
                let mut conv = Converter::default();
                let spec = conv.spec(spec);
                return if conv.errors.is_empty() { Ok(spec) } else { Err(conv.errors) };
            }
            Err(e) => {
                let d = syntax_diagnostic(&e, &text);
                let at = d.span.start;
                errors.push(d);
                if errors.len() >= SYNTAX_ERRORS_MAX {
                    return Err(errors);
                }
                let Some(range) = recovery_range(&text, at) else {
                    return Err(errors);
                };
                let bytes = text.to_mut();
                if !blank(bytes, range) {
                    return Err(errors);
                }
            }
        }
    }
}

/// The first byte at which `(`, `[` or `{` nest deeper than `NESTING_DEPTH_MAX`, outside
/// strings and comments.
fn first_too_deep(source: &str) -> Option<usize> {
    let mut depth = 0usize;
    let mut found = None;
    scan(source, |i, b| match b {
        b'(' | b'[' | b'{' => {
            depth += 1;
            if depth > NESTING_DEPTH_MAX && found.is_none() {
                found = Some(i);
            }
        }
        b')' | b']' | b'}' => depth = depth.saturating_sub(1),
        _ => {}
    });
    found
}

/// Calls `f` with each byte of `source` that is code: not inside a string literal or comment.
fn scan(source: &str, mut f: impl FnMut(usize, u8)) {
    let bytes = source.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                // Quotes count as code; what lies between them does not.
                f(i, b'"');
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' && bytes[i] != b'\n' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                if i < bytes.len() && bytes[i] == b'"' {
                    f(i, b'"');
                    i += 1;
                }
                continue;
            }
            b'/' if bytes.get(i + 1) == Some(&b'/') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            b => f(i, b),
        }
        i += 1;
    }
}

/// The declaration around a syntax error at `at`, to blank before parsing again: from the
/// start of the error's line (or of the member whose block holds it) to the end of that
/// line, or of the block the line opens. Braces that close something opened before the
/// range are left alone, so the structure around it survives.
fn recovery_range(text: &str, at: usize) -> Option<std::ops::Range<usize>> {
    let mut stack = Vec::new();
    scan(text, |i, b| {
        if i < at {
            match b {
                b'{' => stack.push(i),
                b'}' => {
                    stack.pop();
                }
                _ => {}
            }
        }
    });
    // Inside a member's block (machine or resource is level 1): drop the whole member.
    let anchor = if stack.len() >= 2 { stack[1] } else { at.min(text.len()) };
    let line_start = text[..anchor].rfind('\n').map_or(0, |i| i + 1);
    // Never reach back over a brace on the same line: it belongs to the enclosing item.
    let floor = if stack.len() >= 2 { stack[0] + 1 } else { stack.last().map_or(0, |&i| i + 1) };
    let start = line_start.max(floor).min(anchor);
    let mut depth = 0usize;
    let mut end = text.len();
    let mut past_anchor_line = false;
    let mut stopped = false;
    scan(text, |i, b| {
        if stopped || i < anchor {
            return;
        }
        match b {
            b'{' => depth += 1,
            b'}' if depth == 0 => {
                end = i;
                stopped = true;
            }
            b'}' => {
                depth -= 1;
                if depth == 0 && past_anchor_line && i >= at {
                    end = i + 1;
                    stopped = true;
                }
            }
            b'\n' => {
                past_anchor_line = true;
                if depth == 0 && i >= at {
                    end = i;
                    stopped = true;
                }
            }
            _ => {}
        }
    });
    (start < end).then_some(start..end)
}

/// Replaces every byte in `range` but line breaks with a space; false if nothing but
/// whitespace was there (no progress possible).
fn blank(text: &mut String, range: std::ops::Range<usize>) -> bool {
    let slice = &text[range.clone()];
    if slice.trim().is_empty() {
        return false;
    }
    let replaced: String =
        slice.chars().map(|c| if c == '\n' { "\n".to_string() } else { " ".repeat(c.len_utf8()) }).collect();
    text.replace_range(range, &replaced);
    true
}

fn syntax_diagnostic(e: &pest::error::Error<Rule>, text: &str) -> Diagnostic {
    let at = match e.location {
        InputLocation::Pos(p) => p,
        InputLocation::Span((s, _)) => s,
    };
    // pest reports a missing piece where the next token stands, often the start of the next
    // line. When nothing expected there could start a new line, the mistake is on the line
    // before: point at its end, so the user (and recovery) look at the broken line.
    let continues_previous = match &e.variant {
        ErrorVariant::ParsingError { positives, .. } => !positives.iter().any(|r| starts_line(*r)),
        ErrorVariant::CustomError { .. } => false,
    };
    let line_start = text[..at.min(text.len())].rfind('\n').map_or(0, |i| i + 1);
    let first_on_line = text.get(line_start..at).is_some_and(|s| s.trim().is_empty());
    let moved = continues_previous && first_on_line && at < text.len() && line_start > 0;
    let (at, found, end) = if moved {
        let at = code_end_before(text, line_start);
        (at, "the end of the line".to_string(), at)
    } else {
        (at, describe_found(text, at), at + found_len(text, at))
    };
    let (message, label) = match &e.variant {
        ErrorVariant::ParsingError { positives, negatives } => {
            let mut expected: Vec<&str> = positives
                .iter()
                .filter(|r| !matches!(r, Rule::COMMENT | Rule::WHITESPACE))
                .map(|r| describe_rule(*r))
                .collect();
            expected.sort();
            expected.dedup();
            if expected.is_empty() && negatives.contains(&Rule::reserved) {
                (format!("{found} is a reserved word"), "reserved word".to_string())
            } else if expected.is_empty() {
                (format!("unexpected {found}"), "unexpected here".to_string())
            } else {
                let list = join_or(&expected);
                let mut message = format!("expected {list}, found {found}");
                if negatives.contains(&Rule::reserved) {
                    message.push_str(" (a reserved word)");
                }
                (message, format!("expected {list}"))
            }
        }
        ErrorVariant::CustomError { message } => {
            (format!("the spec could not be parsed: {message}"), "here".to_string())
        }
    };
    let mut d = Diagnostic::new(Code::Syntax, Span::new(at, end), message).label(label);
    let expects_colon = matches!(&e.variant, ErrorVariant::ParsingError { positives, .. } if positives.contains(&Rule::colon));
    let word = &text[at..end];
    if !moved && RESERVED_WORDS.contains(&word) {
        d.message.push_str(", which is a reserved word");
        d = d
            .help(format!("`{word}` cannot be a name; the reserved words are {}", RESERVED_WORDS.join(", ")));
    } else if let Some(help) = keyword_hint(text, at).filter(|_| expects_colon) {
        // `stat paid` reads as a field `stat` missing its `:`; the keyword is the likelier fix.
        d = d.help(help);
    }
    d
}

/// Words that cannot be names: the grammar's `reserved` rule, as the diagnostics quote it.
pub const RESERVED_WORDS: &[&str] = &[
    "resource",
    "machine",
    "key",
    "check",
    "op",
    "initial",
    "state",
    "final",
    "create",
    "on",
    "require",
    "set",
    "after",
    "in",
    "and",
    "or",
    "not",
    "true",
    "false",
    "null",
    "self",
    "now",
    "lock",
    "isolation",
];

/// Whether a rule can begin a line: a declaration, member or statement, or a closing brace.
fn starts_line(rule: Rule) -> bool {
    matches!(
        rule,
        Rule::EOI
            | Rule::resource
            | Rule::machine
            | Rule::kw_resource
            | Rule::kw_machine
            | Rule::close_brace
            | Rule::operation
            | Rule::kw_op
            | Rule::field
            | Rule::field_name
            | Rule::initial_decl
            | Rule::state_decl
            | Rule::final_decl
            | Rule::create_decl
            | Rule::event_decl
            | Rule::timer_decl
            | Rule::removed_decl
            | Rule::kw_removed
            | Rule::kw_initial
            | Rule::kw_state
            | Rule::kw_final
            | Rule::kw_create
            | Rule::kw_on
            | Rule::kw_after
            | Rule::lock_stmt
            | Rule::isolation_stmt
            | Rule::require_stmt
            | Rule::set_stmt
            | Rule::effect_stmt
            | Rule::delta_stmt
            | Rule::kw_lock
            | Rule::kw_isolation
            | Rule::kw_require
            | Rule::kw_set
            | Rule::resource_name
    )
}

/// The end of the last code (not whitespace, not a comment) before byte `before`.
fn code_end_before(text: &str, before: usize) -> usize {
    let mut code_end = 0;
    scan(&text[..before], |i, b| {
        if !b.is_ascii_whitespace() {
            code_end = i + 1;
        }
    });
    code_end
}

fn join_or(items: &[&str]) -> String {
    match items {
        [] => String::new(),
        [one] => (*one).to_string(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

fn found_len(text: &str, at: usize) -> usize {
    let rest = text.get(at..).unwrap_or("");
    let word = rest
        .char_indices()
        .take_while(|(_, c)| c.is_ascii_alphanumeric() || *c == '_')
        .last()
        .map_or(0, |(i, c)| i + c.len_utf8());
    if word > 0 { word } else { rest.chars().next().map_or(0, char::len_utf8) }
}

fn describe_found(text: &str, at: usize) -> String {
    let rest = text.get(at..).unwrap_or("");
    match rest.chars().next() {
        None => "the end of the file".to_string(),
        Some('\n') | Some('\r') => "the end of the line".to_string(),
        Some(c) if c.is_control() => format!("the control character U+{:04X}", c as u32),
        Some('"') if !rest[1..].split('\n').next().unwrap_or("").contains('"') => {
            "a string without its closing quote".to_string()
        }
        Some(_) => {
            let len = found_len(text, at);
            format!("`{}`", &rest[..len])
        }
    }
}

/// "did you mean `state`?" when the line starts with a near-miss of a keyword.
fn keyword_hint(text: &str, at: usize) -> Option<String> {
    let line_start = text[..at.min(text.len())].rfind('\n').map_or(0, |i| i + 1);
    let word: String = text[line_start..]
        .trim_start()
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    if word.len() < 3 || RESERVED_WORDS.contains(&word.as_str()) {
        return None;
    }
    RESERVED_WORDS
        .iter()
        .filter(|k| k.len() >= 3)
        .find(|k| edit_distance(&word, k) <= if k.len() <= 4 { 1 } else { 2 })
        .map(|k| format!("did you mean `{k}`?"))
}

pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Each grammar rule in the user's words. Exhaustive on purpose: a new rule forces a
/// decision on how errors about it read.
fn describe_rule(rule: Rule) -> &'static str {
    match rule {
        Rule::EOI => "the end of the file",
        Rule::WHITESPACE => "a space",
        Rule::COMMENT => "a comment",
        Rule::spec => "a `resource` or `machine` declaration",
        Rule::reserved => "a reserved word",
        Rule::ident_char => "a letter, digit or `_`",
        Rule::name_body => "a name",
        Rule::resource_member => "a field or an operation",
        Rule::machine_member => "a field, states, `create`, `on`, `after` or `removed`",
        Rule::statement => "a statement (`require`, `set`, an effect, `lock` or `isolation`)",
        Rule::lock_mode => "`optimistic` or `pessimistic`",
        Rule::lock_wait => "`nowait` or `skip locked`",
        Rule::primary => "a value",
        Rule::literal => "a literal",
        Rule::name => "a name",
        Rule::resource_name => "a resource name",
        Rule::machine_name => "a machine name",
        Rule::field_name => "a field name",
        Rule::param_name => "a parameter name",
        Rule::op_name => "an operation name",
        Rule::event_name => "an event name",
        Rule::state_name => "a state name",
        Rule::kw_resource => "`resource`",
        Rule::kw_machine => "`machine`",
        Rule::kw_key => "`key`",
        Rule::kw_check => "`check`",
        Rule::kw_op => "`op`",
        Rule::kw_initial => "`initial`",
        Rule::kw_state => "`state`",
        Rule::kw_final => "`final`",
        Rule::kw_create => "`create`",
        Rule::kw_on => "`on`",
        Rule::kw_require => "`require`",
        Rule::kw_set => "`set`",
        Rule::kw_after => "`after`",
        Rule::kw_in => "`in`",
        Rule::kw_and => "`and`",
        Rule::kw_or => "`or`",
        Rule::kw_not => "`not`",
        Rule::kw_self => "`self`",
        Rule::kw_lock => "`lock`",
        Rule::kw_isolation => "`isolation`",
        Rule::kw_was => "`was`",
        Rule::kw_backfill => "`backfill`",
        Rule::kw_removed => "`removed`",
        Rule::was => "`was` and the old name",
        Rule::backfill => "`backfill` and a value",
        Rule::removed_decl => "a removed state (`removed old -> new`)",
        Rule::state_defs => "a list of state names",
        Rule::state_def => "a state name",
        Rule::open_brace => "`{`",
        Rule::close_brace => "`}`",
        Rule::open_paren => "`(`",
        Rule::close_paren => "`)`",
        Rule::open_bracket => "`[`",
        Rule::close_bracket => "`]`",
        Rule::colon => "`:`",
        Rule::comma => "`,`",
        Rule::arrow => "`->`",
        Rule::assign => "`=`",
        Rule::dot => "`.`",
        Rule::resource => "a resource declaration",
        Rule::key_field => "the key, as `name: type`",
        Rule::operation => "an operation (`op name(...) { ... }`)",
        Rule::machine => "a machine declaration",
        Rule::initial_decl => "`initial` and a state name",
        Rule::state_decl => "`state` and state names",
        Rule::final_decl => "`final` and state names",
        Rule::state_list => "a list of state names",
        Rule::create_decl => "a `create` declaration",
        Rule::event_decl => "an event (`on name: from -> to`)",
        Rule::timer_decl => "a timer (`after 30m in state: event`)",
        Rule::duration => "a duration such as `30s`, `15m`, `2h` or `1d`",
        Rule::field => "a field (`name: type`)",
        Rule::params => "a parameter list",
        Rule::param => "a parameter (`name: type`)",
        Rule::type_ref => "a type (text, int, money, bool or timestamp)",
        Rule::type_name => "a type (text, int, money, bool or timestamp)",
        Rule::optional => "`?`",
        Rule::check => "a `check`",
        Rule::check_cond => "a comparison such as `>= 0`",
        Rule::block => "a block (`{ ... }`)",
        Rule::lock_stmt => "`lock` and a mode",
        Rule::optimistic => "`optimistic`",
        Rule::pessimistic => "`pessimistic`",
        Rule::nowait => "`nowait`",
        Rule::skip_locked => "`skip locked`",
        Rule::isolation_stmt => "`isolation` and a level",
        Rule::isolation_level => "an isolation level (`read committed`, `repeatable read` or `serializable`)",
        Rule::require_stmt => "a `require` guard",
        Rule::guard_label => "a guard name",
        Rule::set_stmt => "a `set` assignment",
        Rule::effect_stmt => "an effect (`Resource[key].field -= amount`)",
        Rule::delta_stmt => "a change (`field += amount`)",
        Rule::delta_op => "`+=` or `-=`",
        Rule::expr
        | Rule::or_expr
        | Rule::and_expr
        | Rule::not_expr
        | Rule::cmp_expr
        | Rule::add_expr
        | Rule::mul_expr
        | Rule::unary => "an expression",
        Rule::paren => "`(`",
        Rule::now => "`now`",
        Rule::self_field => "`self.field`",
        Rule::cmp_op => "a comparison (`==`, `!=`, `<`, `<=`, `>`, `>=`)",
        Rule::add_op => "`+` or `-`",
        Rule::mul_op => "`*`",
        Rule::neg => "`-`",
        Rule::int_lit => "a number",
        Rule::string_lit => "a string",
        Rule::string_inner => "the text of a string",
        Rule::bool_lit => "`true` or `false`",
        Rule::null_lit => "`null`",
    }
}

// ---- pairs to AST ------------------------------------------------------------------------

/// The pair's span without the whitespace and comments pest lets a rule swallow at its
/// end (before an optional part that is not there), so spans end where the code does.
fn span_of(pair: &Pair<'_, Rule>) -> Span {
    let s = pair.as_span();
    let (start, mut end) = (s.start(), s.end());
    let input = pair.get_input();
    loop {
        end = start + input[start..end].trim_end().len();
        // Strings never span lines, and spans never start inside one, so the span's last
        // line alone tells whether it ends in a comment. (Looking no further back than
        // `start` keeps this linear on very long lines.)
        let line_start = input[start..end].rfind('\n').map_or(start, |i| start + i + 1);
        match comment_start(&input[line_start..end]) {
            Some(at) => end = line_start + at,
            None => break,
        }
    }
    Span::new(start, end)
}

/// Where a `//` comment starts in one line of code, if it has one outside a string.
fn comment_start(line: &str) -> Option<usize> {
    let bytes = line.as_bytes();
    let mut in_string = false;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if in_string => i += 1,
            b'"' => in_string = !in_string,
            b'/' if !in_string && bytes.get(i + 1) == Some(&b'/') => return Some(i),
            _ => {}
        }
        i += 1;
    }
    None
}

/// The children that carry meaning: comments, keywords and punctuation are skipped.
fn children<'i>(pair: Pair<'i, Rule>) -> impl Iterator<Item = Pair<'i, Rule>> {
    pair.into_inner().filter(|p| {
        !matches!(
            p.as_rule(),
            Rule::COMMENT
                | Rule::kw_resource
                | Rule::kw_machine
                | Rule::kw_key
                | Rule::kw_check
                | Rule::kw_op
                | Rule::kw_initial
                | Rule::kw_state
                | Rule::kw_final
                | Rule::kw_create
                | Rule::kw_on
                | Rule::kw_require
                | Rule::kw_set
                | Rule::kw_after
                | Rule::kw_in
                | Rule::kw_and
                | Rule::kw_or
                | Rule::kw_self
                | Rule::kw_lock
                | Rule::kw_isolation
                | Rule::kw_was
                | Rule::kw_backfill
                | Rule::kw_removed
                | Rule::open_brace
                | Rule::close_brace
                | Rule::open_paren
                | Rule::close_paren
                | Rule::open_bracket
                | Rule::close_bracket
                | Rule::colon
                | Rule::comma
                | Rule::arrow
                | Rule::assign
                | Rule::dot
        )
    })
}

/// The old name of a `was old` clause.
fn was_name(pair: Pair<'_, Rule>) -> Option<Ident> {
    children(pair).next().map(ident)
}

fn ident(pair: Pair<'_, Rule>) -> Ident {
    Ident { name: pair.as_str().to_string(), span: span_of(&pair) }
}

#[derive(Default)]
struct Converter {
    errors: Vec<Diagnostic>,
}

impl Converter {
    fn spec(&mut self, pair: Pair<'_, Rule>) -> Spec {
        let comments = pair
            .clone()
            .into_inner()
            .flatten()
            .filter(|p| p.as_rule() == Rule::COMMENT)
            .map(|p| Comment { text: p.as_str().trim_end().to_string(), span: span_of(&p) })
            .collect();
        let mut items = Vec::new();
        for p in children(pair) {
            match p.as_rule() {
                Rule::resource => items.push(Item::Resource(self.resource(p))),
                Rule::machine => items.push(Item::Machine(self.machine(p))),
                _ => {}
            }
        }
        Spec { items, comments }
    }

    fn resource(&mut self, pair: Pair<'_, Rule>) -> Resource {
        let span = span_of(&pair);
        let mut it = children(pair);
        let name = it.next().map(ident).unwrap_or_else(|| missing(span));
        let mut it = it.peekable();
        let was = it.next_if(|p| p.as_rule() == Rule::was).and_then(was_name);
        let key = it.next().map(|p| self.field(p)).unwrap_or_else(|| missing_field(span));
        let members = it
            .map(|p| match p.as_rule() {
                Rule::operation => ResourceMember::Operation(self.operation(p)),
                _ => ResourceMember::Field(self.field(p)),
            })
            .collect();
        Resource { name, was, key, members, span }
    }

    fn operation(&mut self, pair: Pair<'_, Rule>) -> Operation {
        let span = span_of(&pair);
        let mut name = missing(span);
        let mut params = Vec::new();
        let mut body = Block { stmts: Vec::new(), span };
        for p in children(pair) {
            match p.as_rule() {
                Rule::op_name => name = ident(p),
                Rule::params => params = self.params(p),
                Rule::block => body = self.block(p),
                _ => {}
            }
        }
        Operation { name, params, body, span }
    }

    fn machine(&mut self, pair: Pair<'_, Rule>) -> Machine {
        let span = span_of(&pair);
        let mut it = children(pair);
        let name = it.next().map(ident).unwrap_or_else(|| missing(span));
        let members = it.filter_map(|p| self.machine_member(p)).collect();
        Machine { name, members, span }
    }

    fn machine_member(&mut self, pair: Pair<'_, Rule>) -> Option<MachineMember> {
        let span = span_of(&pair);
        Some(match pair.as_rule() {
            Rule::field => MachineMember::Field(self.field(pair)),
            Rule::initial_decl | Rule::state_decl | Rule::final_decl => {
                let kind = match pair.as_rule() {
                    Rule::initial_decl => StateKind::Initial,
                    Rule::final_decl => StateKind::Final,
                    _ => StateKind::Normal,
                };
                let (mut names, mut was) = (Vec::new(), Vec::new());
                for def in children(pair).flat_map(children) {
                    let mut parts = children(def);
                    let Some(name) = parts.next() else { continue };
                    names.push(ident(name));
                    was.push(parts.next().and_then(was_name));
                }
                MachineMember::States(StateDecl { kind, names, was, span })
            }
            Rule::create_decl => {
                let mut name = missing(span);
                let mut params = Vec::new();
                let mut body = None;
                for p in children(pair) {
                    match p.as_rule() {
                        Rule::event_name => name = ident(p),
                        Rule::params => params = self.params(p),
                        Rule::block => body = Some(self.block(p)),
                        _ => {}
                    }
                }
                MachineMember::Create(CreateDecl { name, params, body, span })
            }
            Rule::event_decl => {
                let mut name = missing(span);
                let mut was = None;
                let mut params = Vec::new();
                let mut sources = Vec::new();
                let mut target = missing(span);
                let mut body = None;
                for p in children(pair) {
                    match p.as_rule() {
                        Rule::event_name => name = ident(p),
                        Rule::was => was = was_name(p),
                        Rule::params => params = self.params(p),
                        Rule::state_list => sources = children(p).map(ident).collect(),
                        Rule::state_name => target = ident(p),
                        Rule::block => body = Some(self.block(p)),
                        _ => {}
                    }
                }
                MachineMember::Event(EventDecl { name, was, params, sources, target, body, span })
            }
            Rule::timer_decl => {
                let mut it = children(pair);
                let after = it.next().map(duration)?;
                let state = it.next().map(ident)?;
                let event = it.next().map(ident)?;
                MachineMember::Timer(TimerDecl { after, state, event, span })
            }
            Rule::removed_decl => {
                let mut it = children(pair);
                let state = it.next().map(ident)?;
                let into = it.next().map(ident)?;
                MachineMember::Removed(RemovedDecl { state, into, span })
            }
            _ => return None,
        })
    }

    fn params(&mut self, pair: Pair<'_, Rule>) -> Vec<FieldDecl> {
        children(pair).map(|p| self.field(p)).collect()
    }

    /// A field, a parameter or a resource key: `name: type check ...`.
    fn field(&mut self, pair: Pair<'_, Rule>) -> FieldDecl {
        let span = span_of(&pair);
        let mut name = missing(span);
        let mut ty = TypeRef { base: BaseType::Int, optional: false, span };
        let mut checks = Vec::new();
        let mut was = None;
        let mut backfill = None;
        for p in children(pair) {
            match p.as_rule() {
                Rule::field_name | Rule::param_name => name = ident(p),
                Rule::was => was = was_name(p),
                Rule::backfill => backfill = children(p).next().and_then(|e| self.expr(e)).map(Box::new),
                Rule::type_ref => ty = type_ref(p),
                Rule::check => {
                    checks = children(p).map(check_cond).collect();
                }
                _ => {}
            }
        }
        FieldDecl { name, was, ty, checks, backfill, span }
    }

    fn block(&mut self, pair: Pair<'_, Rule>) -> Block {
        let span = span_of(&pair);
        let stmts = children(pair).filter_map(|p| self.stmt(p)).collect();
        Block { stmts, span }
    }

    fn stmt(&mut self, pair: Pair<'_, Rule>) -> Option<Stmt> {
        let span = span_of(&pair);
        let rule = pair.as_rule();
        let mut it = children(pair);
        Some(match rule {
            Rule::lock_stmt => {
                let first = it.next()?.as_rule();
                let wait = it.next().map(|p| p.as_rule());
                let mode = match (first, wait) {
                    (Rule::optimistic, _) => LockMode::Optimistic,
                    (_, Some(Rule::nowait)) => LockMode::PessimisticNowait,
                    (_, Some(Rule::skip_locked)) => LockMode::PessimisticSkipLocked,
                    _ => LockMode::Pessimistic,
                };
                Stmt::Lock { mode, span }
            }
            Rule::isolation_stmt => {
                let text = it.next()?.as_str().to_string();
                let level = if text.starts_with("read") {
                    IsolationLevel::ReadCommitted
                } else if text.starts_with("repeatable") {
                    IsolationLevel::RepeatableRead
                } else {
                    IsolationLevel::Serializable
                };
                Stmt::Isolation { level, span }
            }
            Rule::require_stmt => {
                let mut label = None;
                let mut expr = None;
                for p in it {
                    match p.as_rule() {
                        Rule::guard_label => label = Some(ident(p)),
                        _ => expr = self.expr(p),
                    }
                }
                Stmt::Require { label, expr: expr?, span }
            }
            Rule::set_stmt => {
                let field = ident(it.next()?);
                let value = self.expr(it.next()?)?;
                Stmt::Set { field, value, span }
            }
            Rule::effect_stmt => {
                let resource = ident(it.next()?);
                let key = self.expr(it.next()?);
                let field = ident(it.next()?);
                let op = delta_op(it.next()?);
                let amount = self.expr(it.next()?);
                Stmt::Effect { resource, key: key?, field, op, amount: amount?, span }
            }
            Rule::delta_stmt => {
                let field = ident(it.next()?);
                let op = delta_op(it.next()?);
                let amount = self.expr(it.next()?)?;
                Stmt::Delta { field, op, amount, span }
            }
            _ => return None,
        })
    }

    /// Converts an `expr` pair; `None` (with a diagnostic) when the tree is too deep.
    fn expr(&mut self, pair: Pair<'_, Rule>) -> Option<Expr> {
        match build_expr(pair) {
            Ok((e, _)) => Some(e),
            Err(at) => {
                self.errors.push(
                    Diagnostic::new(
                        Code::TooDeep,
                        at,
                        format!("this expression nests deeper than {EXPR_DEPTH_MAX} levels"),
                    )
                    .label("too deep")
                    .help("split the condition over several `require` lines"),
                );
                None
            }
        }
    }
}

fn missing(span: Span) -> Ident {
    Ident { name: String::new(), span }
}

fn missing_field(span: Span) -> FieldDecl {
    FieldDecl {
        name: missing(span),
        was: None,
        backfill: None,
        ty: TypeRef { base: BaseType::Text, optional: false, span },
        checks: Vec::new(),
        span,
    }
}

fn type_ref(pair: Pair<'_, Rule>) -> TypeRef {
    let span = span_of(&pair);
    let text = pair.as_str();
    let optional = text.ends_with('?');
    let base = match text.trim_end_matches('?') {
        "text" => BaseType::Text,
        "money" => BaseType::Money,
        "bool" => BaseType::Bool,
        "timestamp" => BaseType::Timestamp,
        _ => BaseType::Int,
    };
    TypeRef { base, optional, span }
}

fn check_cond(pair: Pair<'_, Rule>) -> CheckCond {
    let span = span_of(&pair);
    let mut op = CmpOp::Eq;
    let mut negative = false;
    let mut value = Literal { value: LiteralValue::Null, span };
    for p in children(pair) {
        match p.as_rule() {
            Rule::cmp_op => op = cmp_op(p.as_str()),
            Rule::neg => negative = true,
            _ => value = literal(p, negative),
        }
    }
    CheckCond { op, value, span }
}

fn delta_op(pair: Pair<'_, Rule>) -> DeltaOp {
    if pair.as_str() == "+=" { DeltaOp::Add } else { DeltaOp::Sub }
}

fn cmp_op(s: &str) -> CmpOp {
    match s {
        "==" => CmpOp::Eq,
        "!=" => CmpOp::Ne,
        "<" => CmpOp::Lt,
        "<=" => CmpOp::Le,
        ">" => CmpOp::Gt,
        _ => CmpOp::Ge,
    }
}

fn literal(pair: Pair<'_, Rule>, negative: bool) -> Literal {
    let span = span_of(&pair);
    let value = match pair.as_rule() {
        Rule::int_lit => LiteralValue::Int { digits: pair.as_str().to_string(), negative },
        Rule::string_lit => {
            LiteralValue::Text(unescape(pair.as_str().trim_start_matches('"').trim_end_matches('"')))
        }
        Rule::bool_lit => LiteralValue::Bool(pair.as_str() == "true"),
        _ => LiteralValue::Null,
    };
    Literal { value, span }
}

fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                Some(other) => out.push(other),
                None => {}
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn duration(pair: Pair<'_, Rule>) -> Duration {
    let span = span_of(&pair);
    let text = pair.as_str().to_string();
    let mut millis: Option<u64> = Some(0);
    let mut number = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit: u64 = match c {
            'm' if chars.peek() == Some(&'s') => {
                chars.next();
                1
            }
            's' => 1_000,
            'm' => 60_000,
            'h' => 3_600_000,
            _ => 86_400_000,
        };
        let n = number.parse::<u64>().ok();
        millis = millis.zip(n).and_then(|(acc, n)| n.checked_mul(unit).and_then(|v| acc.checked_add(v)));
        number.clear();
    }
    Duration { text, millis, span }
}

/// An expression and the depth of its tree; `Err` holds where it got deeper than
/// `EXPR_DEPTH_MAX`. A deeper tree is never built: dropping one would recurse too.
type Built = Result<(Expr, usize), Span>;

fn deeper(depth: usize, span: Span) -> Result<usize, Span> {
    if depth > EXPR_DEPTH_MAX { Err(span) } else { Ok(depth) }
}

/// Builds an expression from a pair; binary chains are folded in loops, so only
/// parentheses recurse (bounded by `NESTING_DEPTH_MAX`).
fn build_expr(pair: Pair<'_, Rule>) -> Built {
    let span = span_of(&pair);
    let rule = pair.as_rule();
    match rule {
        Rule::expr => match children(pair).next() {
            Some(inner) => build_expr(inner),
            None => Ok((null_expr(span), 1)),
        },
        Rule::or_expr | Rule::and_expr | Rule::add_expr | Rule::mul_expr => {
            let op_of = |p: &Pair<'_, Rule>| match (rule, p.as_str()) {
                (Rule::or_expr, _) => BinOp::Or,
                (Rule::and_expr, _) => BinOp::And,
                (_, "+") => BinOp::Add,
                (_, "-") => BinOp::Sub,
                _ => BinOp::Mul,
            };
            // kw_and / kw_or are filtered by `children`; read them from the raw pairs.
            let mut acc: Option<(Expr, usize)> = None;
            let mut pending_op: Option<BinOp> = None;
            for p in pair.into_inner() {
                match p.as_rule() {
                    Rule::COMMENT => {}
                    Rule::kw_or | Rule::kw_and | Rule::add_op | Rule::mul_op => {
                        pending_op = Some(op_of(&p));
                    }
                    _ => {
                        let (rhs, rd) = build_expr(p)?;
                        acc = Some(match (acc, pending_op.take()) {
                            (Some((lhs, ld)), Some(op)) => {
                                let span = Span::new(lhs.span.start, rhs.span.end);
                                let depth = deeper(ld.max(rd) + 1, span)?;
                                let kind = ExprKind::Binary(op, Box::new(lhs), Box::new(rhs));
                                (Expr { kind, span }, depth)
                            }
                            (_, _) => (rhs, rd),
                        });
                    }
                }
            }
            Ok(acc.unwrap_or_else(|| (null_expr(span), 1)))
        }
        Rule::cmp_expr => {
            let mut it = children(pair);
            let (lhs, ld) = match it.next() {
                Some(p) => build_expr(p)?,
                None => (null_expr(span), 1),
            };
            match (it.next(), it.next()) {
                (Some(op), Some(rhs)) => {
                    let (rhs, rd) = build_expr(rhs)?;
                    let op = BinOp::Cmp(cmp_op(op.as_str()));
                    let kind = ExprKind::Binary(op, Box::new(lhs), Box::new(rhs));
                    Ok((Expr { kind, span }, deeper(ld.max(rd) + 1, span)?))
                }
                _ => Ok((lhs, ld)),
            }
        }
        Rule::not_expr | Rule::unary => {
            // Prefix operators (`not`, `-`) wrap the operand innermost-first, in a loop.
            let mut prefixes = Vec::new();
            let mut operand = None;
            for p in pair.into_inner() {
                match p.as_rule() {
                    Rule::kw_not | Rule::neg => prefixes.push(span_of(&p).start),
                    Rule::COMMENT => {}
                    _ => operand = Some(p),
                }
            }
            deeper(prefixes.len(), span)?;
            let (mut e, mut depth) = match operand {
                Some(p) => build_expr(p)?,
                None => (null_expr(span), 1),
            };
            for start in prefixes.into_iter().rev() {
                let span = Span::new(start, e.span.end);
                depth = deeper(depth + 1, span)?;
                let inner = Box::new(e);
                let kind = if rule == Rule::not_expr { ExprKind::Not(inner) } else { ExprKind::Neg(inner) };
                e = Expr { kind, span };
            }
            Ok((e, depth))
        }
        Rule::paren => {
            let (inner, d) = match children(pair).next() {
                Some(p) => build_expr(p)?,
                None => (null_expr(span), 1),
            };
            Ok((Expr { kind: ExprKind::Paren(Box::new(inner)), span }, deeper(d + 1, span)?))
        }
        Rule::now => Ok((Expr { kind: ExprKind::Now, span }, 1)),
        Rule::self_field => {
            let name = children(pair).next().map(|p| p.as_str().to_string()).unwrap_or_default();
            Ok((Expr { kind: ExprKind::SelfField(name), span }, 1))
        }
        Rule::name => Ok((Expr { kind: ExprKind::Name(pair.as_str().to_string()), span }, 1)),
        Rule::int_lit | Rule::string_lit | Rule::bool_lit | Rule::null_lit => {
            Ok((Expr { kind: ExprKind::Literal(literal(pair, false)), span }, 1))
        }
        _ => Ok((null_expr(span), 1)),
    }
}

fn null_expr(span: Span) -> Expr {
    Expr { kind: ExprKind::Literal(Literal { value: LiteralValue::Null, span }), span }
}
