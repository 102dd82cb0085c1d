//! Text to syntax tree: limits first, then pest, then one conversion per node.
//!
//! pest stops at the first syntax error. To report every broken declaration at once, the
//! parser blanks out the declaration that failed (keeping line breaks, so positions hold)
//! and parses again, up to `SYNTAX_ERRORS_MAX` times.

use crate::ast::*;
use crate::diag::{Code, Diagnostic};
use pest::Parser as _;

mod convert;
mod expr;
mod recover;
mod wording;

use convert::Converter;
use recover::{blank, first_too_deep, recovery_range, unclosed_block};
pub use wording::RESERVED_WORDS;
pub(crate) use wording::edit_distance;
use wording::{syntax_diagnostic, unclosed_diagnostic};

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

/// The UTF-8 byte order mark (three bytes), which a spec may start with.
const BOM: char = '\u{feff}';

/// Parses `source` into a syntax tree, or returns every syntax error found.
pub fn parse(source: &str) -> Result<Spec, Vec<Diagnostic>> {
    parse_keeping(source, true)
}

/// [`parse`], with `Spec::comments` left empty unless `comments`: only the formatter reads
/// them, and finding them walks every pair of the tree (a tenth of a large spec's parse).
pub(crate) fn parse_keeping(source: &str, comments: bool) -> Result<Spec, Vec<Diagnostic>> {
    if source.len() > SPEC_BYTES_MAX {
        return Err(vec![too_large(source.len())]);
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

    // A UTF-8 byte order mark (some Windows editors write one) is skipped: three spaces in
    // its place keep every byte offset, so spans still point into the file as it is.
    let mut text = match source.strip_prefix(BOM) {
        Some(rest) => std::borrow::Cow::Owned(format!("   {rest}")),
        None => std::borrow::Cow::Borrowed(source),
    };
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
                let mut conv = Converter { comments, ..Converter::default() };
                let spec = conv.spec(spec);
                return if conv.errors.is_empty() { Ok(spec) } else { Err(conv.errors) };
            }
            Err(e) => {
                let raw = match e.location {
                    pest::error::InputLocation::Pos(p) => p,
                    pest::error::InputLocation::Span((p, _)) => p,
                };
                // A block left open: say so once, put its `}` where it belongs, and parse on
                // (the rest of the file is not a cascade of errors).
                if let Some(u) = unclosed_block(&text, raw) {
                    errors.push(unclosed_diagnostic(&text, u.token, u.opened));
                    match u.patch {
                        Some(p) if errors.len() < SYNTAX_ERRORS_MAX => {
                            text.to_mut().replace_range(p..p + 1, "}");
                            continue;
                        }
                        _ => return Err(errors),
                    }
                }
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

/// The refusal of a spec of `len` bytes, over `SPEC_BYTES_MAX`.
pub(crate) fn too_large(len: usize) -> Diagnostic {
    Diagnostic::new(
        Code::TooLarge,
        Span::new(0, 0),
        format!("the spec is {len} bytes; the limit is {SPEC_BYTES_MAX} bytes"),
    )
    .label("file starts here")
    .help("split it into several spec files")
}
