//! State diagrams from the IR, as Mermaid or Graphviz DOT. Output depends only on the IR,
//! in declaration order, so the same spec always gives the same bytes.

use crate::ir;
use std::fmt::Write as _;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Mermaid,
    Dot,
}

/// One diagram per machine, in declaration order, separated by a blank line.
pub fn render(spec: &ir::Spec, format: Format) -> String {
    let diagrams: Vec<String> = spec
        .machines
        .iter()
        .map(|m| match format {
            Format::Mermaid => mermaid(m),
            Format::Dot => dot(m),
        })
        .collect();
    diagrams.join("\n")
}

/// An edge of the diagram: from, to, and its label.
struct Edge {
    from: Option<String>,
    to: Option<String>,
    label: String,
}

fn edges(m: &ir::Machine) -> Vec<Edge> {
    let mut out = vec![Edge { from: None, to: Some(m.initial.clone()), label: m.create.name.clone() }];
    for e in &m.events {
        for t in &e.transitions {
            let guards: Vec<&str> = t.body.guards.iter().map(|g| g.text.as_str()).collect();
            let label = if guards.is_empty() {
                e.name.clone()
            } else {
                format!("{} [{}]", e.name, guards.join(" and "))
            };
            for from in &t.from {
                out.push(Edge { from: Some(from.clone()), to: Some(t.to.clone()), label: label.clone() });
            }
        }
    }
    for timer in &m.timers {
        if let Some(t) = m.event(&timer.event).and_then(|e| e.transition_from(&timer.state)) {
            out.push(Edge {
                from: Some(timer.state.clone()),
                to: Some(t.to.clone()),
                label: format!("after {} / {}", duration_text(timer.after_ms), timer.event),
            });
        }
    }
    for s in &m.states {
        if s.kind == ir::StateKind::Final {
            out.push(Edge { from: Some(s.name.clone()), to: None, label: String::new() });
        }
    }
    out
}

/// `1800000` -> `30m`; the largest units that divide evenly.
pub fn duration_text(ms: u64) -> String {
    let units = [(86_400_000, "d"), (3_600_000, "h"), (60_000, "m"), (1_000, "s"), (1, "ms")];
    let mut rest = ms;
    let mut out = String::new();
    for (size, unit) in units {
        if rest >= size {
            let _ = write!(out, "{}{unit}", rest / size);
            rest %= size;
        }
    }
    if out.is_empty() { "0ms".to_string() } else { out }
}

fn mermaid(m: &ir::Machine) -> String {
    // Mermaid ends a label at `;` and reads `#` as the start of an entity; escape both.
    let esc = |s: &str| s.replace('#', "#35;").replace(';', "#59;");
    let mut out = format!("---\ntitle: {}\n---\nstateDiagram-v2\n", m.name);
    for e in edges(m) {
        let from = e.from.as_deref().unwrap_or("[*]");
        let to = e.to.as_deref().unwrap_or("[*]");
        if e.label.is_empty() {
            let _ = writeln!(out, "    {from} --> {to}");
        } else {
            let _ = writeln!(out, "    {from} --> {to} : {}", esc(&e.label));
        }
    }
    out
}

fn dot(m: &ir::Machine) -> String {
    let q = |s: &str| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""));
    let mut out = format!("digraph {} {{\n", q(&m.name));
    out.push_str("    rankdir=LR;\n    node [shape=box, style=rounded];\n");
    out.push_str("    \"[start]\" [shape=point, width=0.2, label=\"\"];\n");
    for s in &m.states {
        let attrs = match s.kind {
            ir::StateKind::Initial => " [penwidth=2]",
            ir::StateKind::Final => " [peripheries=2]",
            ir::StateKind::Normal => "",
        };
        let _ = writeln!(out, "    {}{attrs};", q(&s.name));
    }
    for e in edges(m) {
        let (Some(to), from) = (e.to, e.from) else { continue };
        let from = from.unwrap_or_else(|| "[start]".to_string());
        let _ = writeln!(out, "    {} -> {} [label={}];", q(&from), q(&to), q(&e.label));
    }
    out.push_str("}\n");
    out
}
