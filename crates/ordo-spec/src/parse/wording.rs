//! Syntax errors in the language's words: what was expected (every grammar rule has a
//! phrase), what was found, and a hint when a line starts with a near-miss of a keyword.

use super::Rule;
use super::recover::code_end_before;
use crate::ast::Span;
use crate::diag::{Code, Diagnostic};
use pest::error::{ErrorVariant, InputLocation};

/// A block opened at `opened` that is not closed before the error at `at`: what is missing,
/// where the block opened, and where its `}` goes.
pub(super) fn unclosed_diagnostic(text: &str, at: usize, opened: usize) -> Diagnostic {
    let at = at.min(text.len());
    let at_end = text[at..].trim().is_empty();
    let (at, found) =
        if at_end { (text.len(), "the end of the file".to_string()) } else { (at, describe_found(text, at)) };
    let end = if at_end { at } else { at + found_len(text, at) };
    let line_start = text[..opened].rfind('\n').map_or(0, |n| n + 1);
    let header = text[line_start..opened].trim();
    // `on ship(carrier: text): paid -> shipped` is named `on ship`; `machine Order` as is.
    let head = header.split(['(', ':']).next().unwrap_or(header);
    let name: Vec<&str> = head.split_whitespace().take(2).collect();
    let name = if name.is_empty() { "the block".to_string() } else { format!("`{}`", name.join(" ")) };
    let line = text[..opened].matches('\n').count() + 1;
    let before = &text[line_start..opened];
    let indent = before.len() - before.trim_start().len();
    Diagnostic::new(
        Code::Syntax,
        Span::new(at, end),
        format!("expected `}}` to close {name} (opened on line {line}), found {found}"),
    )
    .label("expected `}` before this")
    .related(Span::new(opened, opened + 1), format!("{name} opens its block here"))
    .help(format!("add `}}` on a line of its own before this one, indented as {name} is ({indent} spaces)"))
}

/// What can start an operand of an expression.
const OPERAND_STARTS: &[Rule] = &[
    Rule::paren,
    Rule::open_paren,
    Rule::neg,
    Rule::kw_not,
    Rule::now,
    Rule::self_field,
    Rule::kw_self,
    Rule::name,
    Rule::int_lit,
    Rule::string_lit,
    Rule::bool_lit,
    Rule::null_lit,
];

pub(super) fn syntax_diagnostic(e: &pest::error::Error<Rule>, text: &str) -> Diagnostic {
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
            // The expression levels are silent rules, so pest names what can start an
            // operand; all of them together are "an expression".
            let operand = positives.contains(&Rule::int_lit) && positives.contains(&Rule::name);
            let mut expected: Vec<&str> = positives
                .iter()
                .filter(|r| !matches!(r, Rule::COMMENT | Rule::WHITESPACE))
                .map(|r| if operand && OPERAND_STARTS.contains(r) { Rule::expr } else { *r })
                .map(describe_rule)
                .collect();
            expected.sort();
            expected.dedup();
            let expected = grouped(expected);
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
    if let Some(number) = fraction(text, at) {
        // `0.5` reads as `0`, then an unexpected `.`: say what is wrong with the number.
        let start = at - number.find('.').unwrap_or(0);
        return Diagnostic::new(
            Code::Syntax,
            Span::new(start, start + number.len()),
            format!("`{number}` has a fraction; `int` and `money` are whole numbers"),
        )
        .label("not a whole number")
        .help("money counts minor units (cents): write 50 for 0.50");
    }
    let expects_colon = matches!(&e.variant, ErrorVariant::ParsingError { positives, .. } if positives.contains(&Rule::colon));
    let expects_delta = matches!(&e.variant, ErrorVariant::ParsingError { positives, .. } if positives.contains(&Rule::delta_op));
    let word = &text[at..end];
    if let Some(c) = name_breaker(text, at).filter(|_| !moved) {
        // `account-id`: the name stops at the `-`.
        let name_start =
            text[..at].rfind(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '_')).map_or(0, |i| i + 1);
        let rest: String = text[at..]
            .chars()
            .take_while(|ch| ch.is_ascii_alphanumeric() || *ch == '_' || *ch == c)
            .collect();
        let written = format!("{}{rest}", &text[name_start..at]);
        let fixed: String = written.chars().map(|ch| if ch == c { '_' } else { ch }).collect();
        return d.help(format!(
            "names may contain only letters, digits and `_`, and start with a letter or `_`: `{written}` is not one (write `{fixed}`)"
        ));
    }
    if !moved && RESERVED_WORDS.contains(&word) {
        d.message.push_str(", which is a reserved word");
        d = d
            .help(format!("`{word}` cannot be a name; the reserved words are {}", RESERVED_WORDS.join(", ")));
    } else if let Some(help) = keyword_hint(text, at).filter(|_| expects_colon || expects_delta) {
        // `stat paid` reads as a field `stat` missing its `:`, and `sett x = 1` as a change
        // of a field `sett` missing its `+=`; the keyword is the likelier fix.
        d = d.help(help);
    }
    d
}

/// The character that broke a name off (`-` in `account-id`): one that no token starts with,
/// right after a letter, digit or `_`.
fn name_breaker(text: &str, at: usize) -> Option<char> {
    let c = text.get(at..)?.chars().next()?;
    let touching = text[..at].chars().next_back().is_some_and(|p| p.is_ascii_alphanumeric() || p == '_');
    (touching && matches!(c, '-' | '$' | '#' | '@' | '\'' | '&' | '%' | '^' | '~' | '`' | '\\')).then_some(c)
}

/// The number (`0.5`) when the error is at the `.` of a decimal fraction.
fn fraction(text: &str, at: usize) -> Option<&str> {
    let bytes = text.as_bytes();
    if bytes.get(at) != Some(&b'.') || !bytes.get(at + 1).is_some_and(u8::is_ascii_digit) {
        return None;
    }
    let start = text[..at].bytes().rposition(|b| !b.is_ascii_digit()).map_or(0, |p| p + 1);
    let end = at + 1 + text[at + 1..].bytes().take_while(u8::is_ascii_digit).count();
    (start < at).then(|| &text[start..end])
}

/// The most expected things a message lists one by one; past it, they are grouped.
const EXPECTED_LISTED_MAX: usize = 5;

/// A long list of expected things in a few words: operators as "an operator", what starts a
/// statement as "a statement", what starts a machine's member as "a member", the rest as is.
fn grouped(expected: Vec<&'static str>) -> Vec<&'static str> {
    if expected.len() <= EXPECTED_LISTED_MAX {
        return expected;
    }
    let operator =
        |e: &str| ["`*`", "`+` or `-`", "`and`", "`or`"].contains(&e) || e.starts_with("a comparison");
    let statement = |e: &str| ["`require`", "`set`", "`lock`", "`isolation`", "a resource name"].contains(&e);
    let member = |e: &str| {
        ["`after`", "`create`", "`final`", "`initial`", "`on`", "`removed`", "`state`"].contains(&e)
    };
    let has = |f: &dyn Fn(&str) -> bool| expected.iter().any(|e| f(e));
    let (ops, stmts, members) = (has(&operator), has(&statement), has(&member));
    let mut out: Vec<&'static str> = expected
        .iter()
        .copied()
        .filter(|e| !operator(e) && !statement(e) && !member(e))
        // A field name starts a statement (`x += 1`) or a member (`x: int`).
        .filter(|e| !(*e == "a field name" && (stmts || members)))
        .collect();
    if ops {
        out.push("an operator");
    }
    if stmts {
        out.push("a statement (`require`, `set`, a change, an effect)");
    }
    if members {
        out.push("a member (a field, states, `create`, `on`, `after`)");
    }
    // `}` last: "..., or `}`" reads as the way out.
    out.sort_by_key(|e| *e == "`}`");
    out
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
            let word = &rest[..found_len(text, at)];
            match word.char_indices().nth(FOUND_CHARS_MAX) {
                Some((cut, _)) => format!("`{}…` ({} characters)", &word[..cut], word.chars().count()),
                None => format!("`{word}`"),
            }
        }
    }
}

/// The most characters of what was found that a message quotes; a longer word is cut.
const FOUND_CHARS_MAX: usize = 40;

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
        Rule::spec => "a `resource`, `machine` or `invariant` declaration",
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
        Rule::kw_invariant => "`invariant`",
        Rule::kw_sum => "`sum`",
        Rule::kw_count => "`count`",
        Rule::kw_total => "`total`",
        Rule::invariant => "an invariant (`invariant name: sum(...) == total(...)`)",
        Rule::inv_side => "a sum of terms",
        Rule::inv_term => "`sum(...)`, `count(...)`, `total(...)` or a number",
        Rule::inv_sum => "`sum(Owner.field)`",
        Rule::inv_count => "`count(Machine)`",
        Rule::inv_total => "`total(Owner.command.parameter)`",
        Rule::inv_in => "`in` and state names",
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
        Rule::duration => {
            "a duration: a number and a unit (`ms`, `s`, `m`, `h` or `d`), such as `30m` or `1h30m`"
        }
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
