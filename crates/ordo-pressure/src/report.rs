//! What a run measured: HDR histograms per second and per stage, counts by operation and
//! error kind; the live progress line, the summary table, and the report directory
//! (`report.json`, and `report.html` with inline SVG charts that open with no network).

use crate::audit::Audit;
use crate::scenario::{Scenario, Thresholds};
use crate::traffic::{Class, OpKind};
use anyhow::Result;
use hdrhistogram::Histogram;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

/// Latencies are recorded in microseconds, up to a minute, to 3 significant digits.
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("constant, valid bounds")
}

fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    if h.is_empty() { 0.0 } else { h.value_at_quantile(q) as f64 / 1e3 }
}

#[derive(Default)]
struct Counts {
    requests: u64,
    ok: u64,
    rejected: u64,
    errors: u64,
}

impl Counts {
    fn add(&mut self, class: Class) {
        self.requests += 1;
        match class {
            Class::Ok => self.ok += 1,
            Class::Rejected => self.rejected += 1,
            Class::Error => self.errors += 1,
        }
    }

    fn error_rate(&self) -> f64 {
        if self.requests == 0 { 0.0 } else { self.errors as f64 / self.requests as f64 }
    }
}

struct Bucket {
    counts: Counts,
    hist: Histogram<u64>,
}

struct StageAcc {
    label: String,
    target_per_s: f64,
    started: Duration,
    counts: Counts,
    hist: Histogram<u64>,
}

/// What the driver measured (its tally, not the traffic recording): answers and latencies
/// per second and per stage, errors, retries and requests done.
pub struct Tally {
    seconds: Vec<Bucket>,
    stages: Vec<StageAcc>,
    errors: BTreeMap<String, u64>,
    ops: BTreeMap<OpKind, Counts>,
    done: Vec<Done>,
    retries: u64,
}

/// One request's end, for measuring faults: when it was due and when its last answer came
/// (milliseconds from the run's start), whether it failed for good, and how often it was
/// sent again.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Done {
    pub due_ms: u64,
    pub done_ms: u64,
    pub error: bool,
    pub retries: u32,
}

/// One stage's figures.
#[derive(Debug, Clone, Serialize)]
pub struct StageSummary {
    pub label: String,
    pub target_per_s: f64,
    /// Requests answered per second of the stage (its last answers included): below the
    /// target when the server falls behind.
    pub done_per_s: f64,
    pub secs: f64,
    pub requests: u64,
    pub ok: u64,
    pub rejected: u64,
    pub errors: u64,
    pub error_rate: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub passed: bool,
    pub why: Option<String>,
}

/// The columns of a stage's row, in the summary and the HTML page.
const STAGE_COLUMNS: [&str; 12] = [
    "stage", "target/s", "done/s", "ok", "rejected", "errors", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms",
    "max ms", "verdict",
];

impl StageSummary {
    fn cells(&self) -> [String; 12] {
        [
            self.label.clone(),
            format!("{:.0}", self.target_per_s),
            format!("{:.0}", self.done_per_s),
            self.ok.to_string(),
            self.rejected.to_string(),
            self.errors.to_string(),
            format!("{:.1}", self.p50_ms),
            format!("{:.1}", self.p90_ms),
            format!("{:.1}", self.p99_ms),
            format!("{:.1}", self.p999_ms),
            format!("{:.1}", self.max_ms),
            self.why.clone().unwrap_or_else(|| "ok".to_string()),
        ]
    }
}

/// One second of the run (by intended send time).
#[derive(Debug, Clone, Serialize)]
pub struct Second {
    pub t: usize,
    pub requests: u64,
    pub ok: u64,
    pub rejected: u64,
    pub errors: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct OpCounts {
    pub requests: u64,
    pub ok: u64,
    pub rejected: u64,
    pub errors: u64,
}

impl Default for Tally {
    fn default() -> Tally {
        Tally::new()
    }
}

impl Tally {
    pub fn new() -> Tally {
        Tally {
            seconds: Vec::new(),
            stages: Vec::new(),
            errors: BTreeMap::new(),
            ops: BTreeMap::new(),
            done: Vec::new(),
            retries: 0,
        }
    }

    fn second(&mut self, t: Duration) -> &mut Bucket {
        let i = t.as_secs() as usize;
        while self.seconds.len() <= i {
            self.seconds.push(Bucket { counts: Counts::default(), hist: histogram() });
        }
        &mut self.seconds[i]
    }

    pub fn begin_stage(&mut self, label: String, target_per_s: f64, now: Duration) -> usize {
        self.stages.push(StageAcc {
            label,
            target_per_s,
            started: now,
            counts: Counts::default(),
            hist: histogram(),
        });
        self.stages.len() - 1
    }

    /// One answer, sent at `t` (from the run's start) and answered `latency` after it was due.
    pub fn record(
        &mut self,
        t: Duration,
        stage: usize,
        kind: OpKind,
        latency: Duration,
        class: Class,
        error: Option<String>,
    ) {
        let us = (latency.as_micros() as u64).clamp(1, 60_000_000);
        let b = self.second(t);
        b.counts.add(class);
        let _ = b.hist.record(us);
        if let Some(s) = self.stages.get_mut(stage) {
            s.counts.add(class);
            let _ = s.hist.record(us);
        }
        self.ops.entry(kind).or_default().add(class);
        if let Some(e) = error {
            *self.errors.entry(e).or_default() += 1;
        }
    }

    /// A request's end (see [`Done`]): due at `t`, answered `latency` later.
    pub fn record_done(&mut self, t: Duration, latency: Duration, error: bool, retries: u32) {
        let due_ms = t.as_millis() as u64;
        self.done.push(Done { due_ms, done_ms: due_ms + latency.as_millis() as u64, error, retries });
        self.retries += u64::from(retries);
    }

    pub fn done(&self) -> Vec<Done> {
        self.done.clone()
    }

    /// Sends that were retries of a request sent before.
    pub fn retries(&self) -> u64 {
        self.retries
    }

    /// A request that could not be sent on time (counted, with no latency).
    pub fn record_unsent(&mut self, t: Duration, stage: usize, error: String) {
        self.second(t).counts.add(Class::Error);
        if let Some(s) = self.stages.get_mut(stage) {
            s.counts.add(Class::Error);
        }
        *self.errors.entry(error).or_default() += 1;
    }

    /// An error found about an answer already recorded (a re-sent request answered otherwise).
    pub fn record_error(&mut self, t: Duration, stage: usize, error: String) {
        self.second(t).counts.errors += 1;
        if let Some(s) = self.stages.get_mut(stage) {
            s.counts.errors += 1;
        }
        *self.errors.entry(error).or_default() += 1;
    }

    pub fn end_stage(&mut self, stage: usize, now: Duration, thresholds: &Thresholds) -> StageSummary {
        let s = &self.stages[stage];
        let secs = (now - s.started).as_secs_f64().max(1e-9);
        let p99 = ms(&s.hist, 0.99);
        let rate = s.counts.error_rate();
        let why = if p99 > thresholds.p99_ms {
            Some(format!("p99 {p99:.1} ms > {} ms", thresholds.p99_ms))
        } else if rate > thresholds.error_rate {
            Some(format!("errors {:.3}% > {:.3}%", rate * 100.0, thresholds.error_rate * 100.0))
        } else {
            None
        };
        StageSummary {
            label: s.label.clone(),
            target_per_s: s.target_per_s,
            done_per_s: s.counts.requests as f64 / secs,
            secs,
            requests: s.counts.requests,
            ok: s.counts.ok,
            rejected: s.counts.rejected,
            errors: s.counts.errors,
            error_rate: rate,
            p50_ms: ms(&s.hist, 0.5),
            p90_ms: ms(&s.hist, 0.9),
            p99_ms: p99,
            p999_ms: ms(&s.hist, 0.999),
            max_ms: if s.hist.is_empty() { 0.0 } else { s.hist.max() as f64 / 1e3 },
            passed: why.is_none(),
            why,
        }
    }

    /// `t=12s  998 req/s  p99 23.1 ms  errors 0 (0.000%)  [stage]`, from the last whole second.
    pub fn progress_line(&self, elapsed: Duration) -> String {
        let i = (elapsed.as_secs() as usize).saturating_sub(1);
        let stage = self.stages.last().map_or("", |s| s.label.as_str());
        match self.seconds.get(i) {
            Some(b) => format!(
                "t={}s  {} req/s  p99 {:.1} ms  errors {} ({:.3}%)  [{stage}]",
                i + 1,
                b.counts.requests,
                ms(&b.hist, 0.99),
                b.counts.errors,
                b.counts.error_rate() * 100.0
            ),
            None => format!("t={}s  [{stage}]", elapsed.as_secs()),
        }
    }

    pub fn timeline(&self) -> Vec<Second> {
        self.seconds
            .iter()
            .enumerate()
            .map(|(t, b)| Second {
                t,
                requests: b.counts.requests,
                ok: b.counts.ok,
                rejected: b.counts.rejected,
                errors: b.counts.errors,
                p50_ms: ms(&b.hist, 0.5),
                p90_ms: ms(&b.hist, 0.9),
                p99_ms: ms(&b.hist, 0.99),
                max_ms: if b.hist.is_empty() { 0.0 } else { b.hist.max() as f64 / 1e3 },
            })
            .collect()
    }

    pub fn errors(&self) -> BTreeMap<String, u64> {
        self.errors.clone()
    }

    pub fn ops(&self) -> BTreeMap<String, OpCounts> {
        self.ops
            .iter()
            .map(|(k, c)| {
                let counts =
                    OpCounts { requests: c.requests, ok: c.ok, rejected: c.rejected, errors: c.errors };
                (k.label().to_string(), counts)
            })
            .collect()
    }
}

/// Everything a run found.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub target: String,
    pub shadow: bool,
    pub scenario: Scenario,
    pub stages: Vec<StageSummary>,
    pub peak_per_s: Option<f64>,
    /// The rates the peak search held, and how each went (breaking one is how it stops).
    pub peak_steps: Vec<StageSummary>,
    pub timeline: Vec<Second>,
    pub ops: BTreeMap<String, OpCounts>,
    pub errors: BTreeMap<String, u64>,
    /// Sends that were retries (same key) of a request sent before.
    pub retries: u64,
    /// Each request's end, for the chaos report (not written out).
    #[serde(skip)]
    pub done: Vec<Done>,
    pub audit: Option<Audit>,
}

impl Report {
    /// The stages kept their thresholds, a peak search found a rate that does, and the
    /// audit (if run) passed.
    pub fn passed(&self) -> bool {
        let peak_found = self.peak_steps.is_empty() || self.peak_per_s.is_some();
        self.stages.iter().all(|s| s.passed) && peak_found && self.audit.as_ref().is_none_or(|a| a.passed())
    }

    /// The stages, then the peak search's steps (marked), with their cells as the tables
    /// show them.
    fn rows(&self) -> impl Iterator<Item = (&StageSummary, [String; 12])> {
        let search = self.peak_steps.iter().map(|s| (s, " (search)"));
        self.stages.iter().map(|s| (s, "")).chain(search).map(|(s, note)| {
            let mut cells = s.cells();
            cells[11].push_str(note);
            (s, cells)
        })
    }

    pub fn summary(&self) -> String {
        let mut out = String::new();
        let width = [22, 9, 9, 8, 8, 7, 8, 8, 8, 9, 9];
        let line = |cells: &[String]| -> String {
            let mut l = String::new();
            for (i, c) in cells.iter().enumerate() {
                let _ = match width.get(i) {
                    Some(w) if i == 0 => write!(l, "{c:<w$} "),
                    Some(w) => write!(l, "{c:>w$} "),
                    None => write!(l, " {c}"),
                };
            }
            l.trim_end().to_string() + "\n"
        };
        out.push_str(&line(&STAGE_COLUMNS.map(str::to_string)));
        for (_, cells) in self.rows() {
            out.push_str(&line(&cells));
        }
        if let Some(p) = self.peak_per_s {
            let _ = writeln!(
                out,
                "peak sustainable rate: {p:.0}/s (p99 <= {} ms, errors <= {:.3}%)",
                self.scenario.thresholds.p99_ms,
                self.scenario.thresholds.error_rate * 100.0
            );
        } else if !self.peak_steps.is_empty() {
            let _ = writeln!(out, "peak sustainable rate: none (the first rate tried broke a threshold)");
        }
        if self.retries > 0 {
            let _ = writeln!(out, "retries: {} (sent again with the same key)", self.retries);
        }
        for (kind, n) in &self.errors {
            let _ = writeln!(out, "error: {kind}: {n}");
        }
        match &self.audit {
            Some(a) => out.push_str(&a.summary()),
            None => out.push_str("audit: not run (no database given)\n"),
        }
        let _ = writeln!(out, "verdict: {}", if self.passed() { "PASS" } else { "FAIL" });
        out
    }

    /// Writes `report.json` and `report.html` into `dir`.
    pub fn write(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("report.json"), serde_json::to_string_pretty(self)?)?;
        std::fs::write(dir.join("report.html"), self.html())?;
        Ok(())
    }

    pub fn html(&self) -> String {
        let t: Vec<f64> = self.timeline.iter().map(|s| s.t as f64).collect();
        let series =
            |f: fn(&Second) -> f64| t.iter().copied().zip(self.timeline.iter().map(f)).collect::<Vec<_>>();
        let latency = chart(
            "Latency by intended send time (ms)",
            &[
                ("p50", "#2b8a3e", series(|s| s.p50_ms)),
                ("p90", "#e67700", series(|s| s.p90_ms)),
                ("p99", "#c92a2a", series(|s| s.p99_ms)),
            ],
            Some(self.scenario.thresholds.p99_ms),
        );
        let throughput = chart(
            "Throughput (requests per second)",
            &[
                ("sent", "#495057", series(|s| s.requests as f64)),
                ("2xx", "#1971c2", series(|s| s.ok as f64)),
                ("rejected", "#9c36b5", series(|s| s.rejected as f64)),
            ],
            None,
        );
        let errors = chart("Errors per second", &[("errors", "#c92a2a", series(|s| s.errors as f64))], None);
        let mut rows = String::new();
        for (s, cells) in self.rows() {
            let class = if s.passed { "pass" } else { "fail" };
            rows.push_str("<tr>");
            for (i, c) in cells.iter().enumerate() {
                let class = if i == 11 { format!(" class=\"{class}\"") } else { String::new() };
                let _ = write!(rows, "<td{class}>{}</td>", escape(c));
            }
            rows.push_str("</tr>");
        }
        let audit = self.audit.as_ref().map_or_else(
            || "<p>Not run (no database given).</p>".to_string(),
            |a| {
                let mut out = String::from("<table><tr><th>check</th><th>verdict</th><th>detail</th></tr>");
                for c in &a.checks {
                    let _ = write!(
                        out,
                        "<tr><td>{}</td><td class=\"{}\">{}</td><td>{}</td></tr>",
                        escape(&c.name),
                        if c.passed { "pass" } else { "fail" },
                        if c.passed { "pass" } else { "FAIL" },
                        escape(&c.detail)
                    );
                }
                out + "</table>"
            },
        );
        let mut errors_list: String =
            self.errors.iter().map(|(k, n)| format!("<li>{}: {n}</li>", escape(k))).collect();
        if errors_list.is_empty() {
            errors_list.push_str("<li>none</li>");
        }
        let verdict = if self.passed() { "PASS" } else { "FAIL" };
        let header: String = STAGE_COLUMNS.iter().map(|c| format!("<th>{c}</th>")).collect();
        format!(
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>Ordo pressure report</title><style>\
             body{{font-family:system-ui,sans-serif;margin:2em;color:#212529}}table{{border-collapse:collapse;margin:1em 0}}\
             td,th{{border:1px solid #ced4da;padding:.3em .6em;text-align:right}}td:first-child,th:first-child{{text-align:left}}\
             .pass{{color:#2b8a3e}}.fail{{color:#c92a2a;font-weight:bold}}svg{{display:block;margin:1em 0}}</style></head><body>\
             <h1>Ordo pressure report: <span class=\"{}\">{verdict}</span></h1>\
             <p>Target {} {}; thresholds p99 &le; {} ms, errors &le; {:.3}%{}.</p>\
             <h2>Stages</h2><table><tr>{header}</tr>{rows}</table>\
             {latency}{throughput}{errors}<h2>Errors</h2><ul>{errors_list}</ul><h2>Audit</h2>{audit}</body></html>",
            if self.passed() { "pass" } else { "fail" },
            escape(&self.target),
            if self.shadow { "(shadow traffic)" } else { "" },
            self.scenario.thresholds.p99_ms,
            self.scenario.thresholds.error_rate * 100.0,
            self.peak_per_s.map_or(String::new(), |p| format!("; peak sustainable rate {p:.0}/s")),
        )
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// A line chart as inline SVG: series of (x, y), a dashed threshold line if given.
/// A named, coloured line of (x, y) points.
type Series<'a> = (&'a str, &'a str, Vec<(f64, f64)>);

fn chart(title: &str, series: &[Series<'_>], threshold: Option<f64>) -> String {
    let (w, h, left, bottom, top) = (900.0, 260.0, 60.0, 30.0, 30.0);
    let points = series.iter().flat_map(|(_, _, p)| p.iter());
    let x_max = points.clone().map(|p| p.0).fold(1.0_f64, f64::max);
    let y_max = points.map(|p| p.1).chain(threshold).fold(1e-9_f64, f64::max) * 1.1;
    let x = |v: f64| left + v / x_max * (w - left - 10.0);
    let y = |v: f64| h - bottom - v / y_max * (h - bottom - top);
    let (base, right) = (h - bottom, w - 10.0);
    let mut svg = format!(
        "<h2>{}</h2><svg width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" xmlns=\"http://www.w3.org/2000/svg\">\
         <line x1=\"{left}\" y1=\"{base}\" x2=\"{right}\" y2=\"{base}\" stroke=\"#868e96\"/><line x1=\"{left}\" y1=\"{top}\" x2=\"{left}\" y2=\"{base}\" stroke=\"#868e96\"/>",
        escape(title),
    );
    for i in 0..=4 {
        let v = y_max * f64::from(i) / 4.0;
        let _ = write!(
            svg,
            "<text x=\"{}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"end\">{v:.1}</text>",
            left - 4.0,
            y(v) + 4.0
        );
    }
    let _ = write!(
        svg,
        "<text x=\"{}\" y=\"{}\" font-size=\"11\" text-anchor=\"end\">{x_max:.0} s</text>",
        w - 10.0,
        h - 8.0
    );
    if let Some(t) = threshold {
        let _ = write!(
            svg,
            "<line x1=\"{left}\" y1=\"{0:.1}\" x2=\"{1}\" y2=\"{0:.1}\" stroke=\"#c92a2a\" stroke-dasharray=\"4 4\"/>",
            y(t),
            w - 10.0
        );
    }
    for (i, (name, color, pts)) in series.iter().enumerate() {
        let path: Vec<String> = pts.iter().map(|(a, b)| format!("{:.1},{:.1}", x(*a), y(*b))).collect();
        let _ = write!(
            svg,
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"1.5\" points=\"{}\"/>\
             <text x=\"{}\" y=\"16\" font-size=\"12\" fill=\"{color}\">{}</text>",
            path.join(" "),
            left + 10.0 + 90.0 * i as f64,
            escape(name)
        );
    }
    svg + "</svg>"
}
