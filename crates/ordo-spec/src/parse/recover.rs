//! Before and between pest runs: which bytes are code (not strings or comments), how deep
//! brackets nest, and which declaration to blank after a syntax error so parsing can go on.

use super::NESTING_DEPTH_MAX;

/// The first byte at which `(`, `[` or `{` nest deeper than `NESTING_DEPTH_MAX`, outside
/// strings and comments.
pub(super) fn first_too_deep(source: &str) -> Option<usize> {
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

/// A block left open before a syntax error at `at`: the innermost `{` still open where the
/// error's line starts, when that line is indented no deeper than the line that opened it (or
/// the error is at the end of the file). Its `}` is then the likeliest thing missing, right
/// before the line. Returns where the line's first token starts (the end of the file), the
/// `{`'s offset, and, if there is one, the whitespace byte just before that token where a `}`
/// may be put (same length, so every offset holds) to parse on as if it had been written: not
/// a line break that ends a comment (the `}` would join the comment).
pub(super) fn unclosed_block(text: &str, at: usize) -> Option<Unclosed> {
    let at = at.min(text.len());
    let line_start = |i: usize| text[..i].rfind('\n').map_or(0, |n| n + 1);
    let indent = |start: usize| text[start..].bytes().take_while(|b| *b == b' ' || *b == b'\t').count();
    let at_end = text[at..].trim().is_empty();
    let line = line_start(at);
    // The line's first token, past any `}` a recovery put before it (never past the error).
    let mut token = if at_end { text.len() } else { line + indent(line) };
    while token < at && matches!(text.as_bytes()[token], b'}' | b' ' | b'\t') {
        token += 1;
    }
    if text.as_bytes().get(token) == Some(&b'}') {
        // The error is at a `}`: something closes here; what is missing is something else.
        return None;
    }
    // Braces up to the error; one the error's own line opens is no candidate (its `}` would
    // be on that line), but what that line closes counts.
    let mut open: Vec<Option<usize>> = Vec::new();
    scan(&text[..at], |i, b| match b {
        b'{' => open.push((i < line).then_some(i)),
        b'}' => {
            open.pop();
        }
        _ => {}
    });
    let opened = open.iter().rev().find_map(|o| *o)?;
    let width = |start: usize| {
        text[start..]
            .bytes()
            .take_while(|b| *b == b' ' || *b == b'\t')
            .map(|b| if b == b'\t' { 4 } else { 1 })
            .sum::<usize>()
    };
    if !at_end && width(line) > width(line_start(opened)) {
        return None;
    }
    let patch = token.checked_sub(1).filter(|&p| match text.as_bytes()[p] {
        b' ' | b'\t' | b'\r' => true,
        b'\n' => !text[line_start(p)..p].contains("//"),
        _ => false,
    });
    Some(Unclosed { token, opened, patch })
}

/// See [`unclosed_block`].
pub(super) struct Unclosed {
    pub token: usize,
    pub opened: usize,
    pub patch: Option<usize>,
}

/// The declaration around a syntax error at `at`, to blank before parsing again: from the
/// start of the error's line (or of the member whose block holds it) to the end of that
/// line, or of the block the line opens. Braces that close something opened before the
/// range are left alone, so the structure around it survives.
pub(super) fn recovery_range(text: &str, at: usize) -> Option<std::ops::Range<usize>> {
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
pub(super) fn blank(text: &mut String, range: std::ops::Range<usize>) -> bool {
    let slice = &text[range.clone()];
    if slice.trim().is_empty() {
        return false;
    }
    let replaced: String =
        slice.chars().map(|c| if c == '\n' { "\n".to_string() } else { " ".repeat(c.len_utf8()) }).collect();
    text.replace_range(range, &replaced);
    true
}

/// The end of the last code (not whitespace, not a comment) before byte `before`.
pub(super) fn code_end_before(text: &str, before: usize) -> usize {
    let mut code_end = 0;
    scan(&text[..before], |i, b| {
        if !b.is_ascii_whitespace() {
            code_end = i + 1;
        }
    });
    code_end
}
