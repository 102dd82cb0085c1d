//! Diagnostics: a stable code, a span, a message, a help line; rendered like rustc.

use crate::ast::Span;
use codespan_reporting::diagnostic::{Diagnostic as CsDiagnostic, Label};
use codespan_reporting::files::SimpleFile;
use codespan_reporting::term;

macro_rules! codes {
    ($($variant:ident => $code:literal, $summary:literal;)*) => {
        /// Every diagnostic the checker can emit. The string form is stable: users
        /// search for it and tooling matches on it, so a code is never renamed.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Code { $($variant),* }

        impl Code {
            pub const ALL: &'static [Code] = &[$(Code::$variant),*];

            pub fn as_str(self) -> &'static str {
                match self { $(Code::$variant => $code),* }
            }

            /// One line saying what the code means, for `docs/spec-language.md`.
            pub fn summary(self) -> &'static str {
                match self { $(Code::$variant => $summary),* }
            }
        }
    };
}

codes! {
    Syntax => "ordo::syntax", "the text does not follow the grammar";
    NotUtf8 => "ordo::not-utf8", "the file is not UTF-8 text";
    TooLarge => "ordo::too-large", "the file is larger than `SPEC_BYTES_MAX`";
    TooDeep => "ordo::too-deep", "parentheses or an expression nest deeper than the limit";
    TooManyErrors => "ordo::too-many-errors", "reporting stopped after `DIAGNOSTICS_MAX` errors";
    EmptySpec => "ordo::empty-spec", "the file declares no machine";
    DuplicateName => "ordo::duplicate-name", "two things in one scope share a name";
    ReservedName => "ordo::reserved-name", "a name the generated tables or routes use for themselves";
    NameTooLong => "ordo::name-too-long", "a name longer than `NAME_BYTES_MAX` (database identifiers are limited)";
    UnknownState => "ordo::unknown-state", "a state that is not declared";
    UnknownField => "ordo::unknown-field", "a field that is not declared";
    UnknownResource => "ordo::unknown-resource", "a resource that is not declared";
    UnknownName => "ordo::unknown-name", "a name that is neither a parameter nor a field";
    UnknownEvent => "ordo::unknown-event", "a timer names an event the machine does not have";
    MissingInitial => "ordo::missing-initial", "a machine without an `initial` state";
    RepeatedInitial => "ordo::repeated-initial", "a machine with more than one `initial` state";
    MissingCreate => "ordo::missing-create", "a machine without a `create` declaration";
    RepeatedCreate => "ordo::repeated-create", "a machine with more than one `create` declaration";
    UnreachableState => "ordo::unreachable-state", "a state no sequence of events can reach from the initial one";
    DeadEndState => "ordo::dead-end-state", "a state that is not final but has no event leaving it";
    TransitionFromFinal => "ordo::transition-from-final", "an event leaves a final state";
    Nondeterministic => "ordo::nondeterministic-event", "one event has two transitions from the same state";
    ParamsMismatch => "ordo::event-params-mismatch", "two declarations of one event take different parameters";
    TypeMismatch => "ordo::type-mismatch", "a value of the wrong type";
    NumberOutOfRange => "ordo::number-out-of-range", "an integer literal outside the 64-bit range";
    TimerOnFinal => "ordo::timer-on-final", "a timer on a final state, which is never left";
    TimerEventNotAllowed => "ordo::timer-event-not-allowed", "a timer fires an event that has no transition from its state";
    TimerEventHasParams => "ordo::timer-event-has-params", "a timer fires an event that needs parameters";
    DuplicateTimer => "ordo::duplicate-timer", "two timers fire the same event from the same state";
    BadDuration => "ordo::bad-duration", "a timer duration of zero or beyond `TIMER_MS_MAX`";
    BadResourceKey => "ordo::bad-resource-key", "a resource is addressed by a value that is not of its key's type";
    MisplacedStatement => "ordo::misplaced-statement", "a statement that does not belong in this kind of body";
    RepeatedSetting => "ordo::repeated-setting", "`lock` or `isolation` given twice in one body";
    DuplicateAssignment => "ordo::duplicate-assignment", "one field assigned or changed twice in one body";
    KeyImmutable => "ordo::key-immutable", "a resource operation changes the resource's key";
    BadCheck => "ordo::bad-check", "a `check` that cannot apply to its field's type";
    RenameConflict => "ordo::rename-conflict", "a `was` names something the spec still declares, or two things claim one old name";
    RemovedStateDeclared => "ordo::removed-state-declared", "a `removed` state is still declared, or removed twice";
    BackfillBreaksCheck => "ordo::backfill-breaks-check", "a constant `backfill` that the field's own `check` refuses";
    BackfillSelf => "ordo::backfill-self", "a `backfill` that reads the field it fills";
    MisplacedEvolution => "ordo::misplaced-evolution", "`was` or `backfill` on a parameter or a key, where it means nothing";
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub code: Code,
    pub message: String,
    pub span: Span,
    /// Text under the primary span.
    pub label: String,
    /// Other places that explain the error, e.g. the first declaration of a duplicate.
    pub related: Vec<(Span, String)>,
    pub help: Option<String>,
    /// A replacement a tool may apply as it stands (an editor's quick fix): the text to put
    /// in place of the primary span. Set with the help line it stands for.
    pub fix: Option<String>,
}

impl Diagnostic {
    pub fn new(code: Code, span: Span, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            code,
            message: message.into(),
            span,
            label: String::new(),
            related: Vec::new(),
            help: None,
            fix: None,
        }
    }

    pub fn label(mut self, label: impl Into<String>) -> Diagnostic {
        self.label = label.into();
        self
    }

    pub fn related(mut self, span: Span, note: impl Into<String>) -> Diagnostic {
        self.related.push((span, note.into()));
        self
    }

    pub fn help(mut self, help: impl Into<String>) -> Diagnostic {
        self.help = Some(help.into());
        self
    }

    /// "did you mean `close`?", with the replacement of the primary span as its fix.
    pub fn did_you_mean(mut self, close: &str) -> Diagnostic {
        self.fix = Some(close.to_string());
        self.help(format!("did you mean `{close}`?"))
    }

    /// 1-based line and column (in characters) of the primary span in `source`.
    pub fn line_col(&self, source: &str) -> (usize, usize) {
        line_col(source, self.span.start)
    }
}

/// 1-based line and column, counting characters, of byte `offset` in `source`.
pub fn line_col(source: &str, offset: usize) -> (usize, usize) {
    let offset = clamp_to_char_boundary(source, offset);
    let before = &source[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let col = source[line_start..offset].chars().count() + 1;
    (line, col)
}

fn clamp_to_char_boundary(source: &str, offset: usize) -> usize {
    let mut offset = offset.min(source.len());
    while !source.is_char_boundary(offset) {
        offset -= 1;
    }
    offset
}

/// Renders diagnostics as plain text, rustc style: code, message, `file:line:col`, the source
/// line with the span underlined, related places and a help line.
pub fn render(file_name: &str, source: &str, diagnostics: &[Diagnostic]) -> String {
    let config = term::Config::default();
    let mut out = String::new();
    for d in diagnostics {
        let (shown, d) = shortened(source, d);
        let file = SimpleFile::new(file_name, shown.as_ref());
        let cs = to_codespan(&shown, &d);
        match term::emit_into_string(&config, &file, &cs) {
            Ok(text) => out.push_str(&text),
            // Spans are clamped to the source above, so this is not expected; still, a
            // diagnostic must never be lost because it could not be drawn.
            Err(_) => {
                let (line, col) = d.line_col(source);
                out.push_str(&format!(
                    "error[{}]: {}\n  --> {file_name}:{line}:{col}\n\n",
                    d.code.as_str(),
                    d.message
                ));
            }
        }
    }
    out
}

/// The most characters of a source line a report shows past its last label's start.
const SHOWN_LINE_CHARS_MAX: usize = 120;

/// The source as a report shows it for `d`, with `d`'s spans moved to match: a line longer
/// than `SHOWN_LINE_CHARS_MAX` characters past the start of its last label (or its own
/// start) is cut there and ends in `…`, so a report never echoes megabytes of one line.
/// Only line ends are cut, so every line number and column stays the file's own.
fn shortened<'s>(source: &'s str, d: &Diagnostic) -> (std::borrow::Cow<'s, str>, Diagnostic) {
    // No line can need a cut: the file as it is (the usual case, and no copy of it).
    if source.lines().all(|l| l.len() <= SHOWN_LINE_CHARS_MAX) {
        return (std::borrow::Cow::Borrowed(source), d.clone());
    }
    let starts: Vec<usize> =
        std::iter::once(d.span.start).chain(d.related.iter().map(|(s, _)| s.start)).collect();
    let mut shown = String::new();
    // Each cut: the kept part of a line ends at `.0`, the line's text at `.1`.
    let mut cuts: Vec<(usize, usize)> = Vec::new();
    let mut line_start = 0;
    for line in source.split_inclusive('\n') {
        let line_end = line_start + line.trim_end_matches(['\n', '\r']).len();
        let from = starts.iter().copied().filter(|s| (line_start..=line_end).contains(s)).max();
        let from = from.unwrap_or(line_start);
        match source[from..line_end].char_indices().nth(SHOWN_LINE_CHARS_MAX) {
            Some((i, _)) => {
                shown.push_str(&source[line_start..from + i]);
                shown.push('…');
                shown.push_str(&source[line_end..line_start + line.len()]);
                cuts.push((from + i, line_end));
            }
            None => shown.push_str(line),
        }
        line_start += line.len();
    }
    if cuts.is_empty() {
        return (std::borrow::Cow::Owned(shown), d.clone());
    }
    // A file offset in the shown text: less what every earlier cut removed (each leaves
    // `…`, one character of three bytes); one inside a cut shows at its `…`.
    let map = |o: usize| {
        let mut shift: isize = 0;
        let mut at = o;
        for &(keep, end) in &cuts {
            if o <= keep {
                break;
            }
            if o < end {
                at = keep;
                break;
            }
            shift += end as isize - keep as isize - '…'.len_utf8() as isize;
        }
        (at as isize - shift).max(0) as usize
    };
    let mut d = d.clone();
    d.span = Span::new(map(d.span.start), map(d.span.end));
    for (span, _) in &mut d.related {
        *span = Span::new(map(span.start), map(span.end));
    }
    (std::borrow::Cow::Owned(shown), d)
}

fn to_codespan(source: &str, d: &Diagnostic) -> CsDiagnostic<()> {
    let clamp = |s: Span| {
        let start = clamp_to_char_boundary(source, s.start);
        let end = clamp_to_char_boundary(source, s.end.max(start));
        start..end
    };
    let mut labels = vec![Label::primary((), clamp(d.span)).with_message(&d.label)];
    for (span, note) in &d.related {
        labels.push(Label::secondary((), clamp(*span)).with_message(note));
    }
    let mut cs =
        CsDiagnostic::error().with_code(d.code.as_str()).with_message(&d.message).with_labels(labels);
    if let Some(help) = &d.help {
        cs = cs.with_notes(vec![format!("help: {help}")]);
    }
    cs
}
