//! What each fault of a chaos run cost: the requests due from its start to the next
//! fault's, how many were retried and failed for good, and how long until requests were
//! served at the first try again; and the table that says it.

use super::Fault;
use clap::ValueEnum;
use ordo_pressure::report::Done;
use std::fmt::Write as _;

/// The windows the recovery time is measured in.
const WINDOW_MS: u64 = 500;

/// One fault as it happened: from and to, in milliseconds of the run.
#[derive(Debug, Clone, serde::Serialize)]
pub(super) struct Injected {
    pub fault: Fault,
    pub start_ms: u64,
    pub end_ms: u64,
    /// What it did, e.g. which server it killed.
    pub note: String,
}

/// What a fault cost.
#[derive(Debug, Clone, serde::Serialize)]
pub(super) struct Measured {
    #[serde(flatten)]
    pub injected: Injected,
    /// Requests due from the fault's start to the next fault's (or the load's end).
    requests: usize,
    retried: usize,
    failed: usize,
    /// From the fault's end until every window after it was healthy; none when it was not
    /// by the next fault.
    pub recovery_ms: Option<u64>,
}

pub(super) fn label(fault: Fault) -> String {
    fault.to_possible_value().map_or_else(|| format!("{fault:?}"), |v| v.get_name().to_string())
}

/// What each fault cost: the requests due from its start to the next fault's start.
pub(super) fn measure(
    injected: &[Injected],
    done: &[Done],
    end_ms: u64,
    healthy_below: f64,
) -> Vec<Measured> {
    injected
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let until = injected.get(i + 1).map_or(end_ms, |n| n.start_ms);
            let during: Vec<&Done> =
                done.iter().filter(|d| d.due_ms >= f.start_ms && d.due_ms < until).collect();
            let hurt = |d: &&Done| d.error || d.retries > 0;
            // The last unhealthy window after the fault's end: recovery is the end of it.
            let mut recovered_at = f.end_ms;
            let mut w = f.end_ms;
            while w < until {
                let window: Vec<&&Done> =
                    during.iter().filter(|d| d.due_ms >= w && d.due_ms < w + WINDOW_MS).collect();
                let bad = window.iter().filter(|d| hurt(d)).count();
                if !window.is_empty() && bad as f64 / window.len() as f64 > healthy_below {
                    recovered_at = (w + WINDOW_MS).min(until);
                }
                w += WINDOW_MS;
            }
            // Unhealthy to the very end: not recovered before the next fault.
            let recovery_ms = (recovered_at < until || until == f.end_ms).then(|| recovered_at - f.end_ms);
            Measured {
                injected: f.clone(),
                requests: during.len(),
                retried: during.iter().filter(|d| d.retries > 0).count(),
                failed: during.iter().filter(|d| d.error).count(),
                recovery_ms,
            }
        })
        .collect()
}

pub(super) fn table(measured: &[Measured]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<22} {:>8} {:>8} {:>9} {:>8} {:>7} {:>10}  note",
        "fault", "at s", "held ms", "requests", "retried", "failed", "recovery"
    );
    for m in measured {
        let f = &m.injected;
        let _ = writeln!(
            out,
            "{:<22} {:>8.1} {:>8} {:>9} {:>8} {:>7} {:>10}  {}",
            label(f.fault),
            f.start_ms as f64 / 1e3,
            f.end_ms - f.start_ms,
            m.requests,
            m.retried,
            m.failed,
            m.recovery_ms.map_or_else(|| "none".to_string(), |ms| format!("{ms} ms")),
            f.note
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn done(due_ms: u64, error: bool, retries: u32) -> Done {
        Done { due_ms, done_ms: due_ms + 5, error, retries }
    }

    #[test]
    fn recovery_is_the_end_of_the_last_unhealthy_window_after_the_fault() {
        let f = Injected { fault: Fault::DbStall, start_ms: 1_000, end_ms: 2_000, note: String::new() };
        // Retried until 3.2 s, then clean to the end at 6 s.
        let mut d: Vec<Done> =
            (0..60).map(|i| done(i * 100, false, u32::from((10..33).contains(&i)))).collect();
        d[15].error = true;
        let m = measure(std::slice::from_ref(&f), &d, 6_000, 0.1);
        assert_eq!(m[0].requests, 50);
        assert_eq!(m[0].retried, 23);
        assert_eq!(m[0].failed, 1);
        assert_eq!(m[0].recovery_ms, Some(1_500), "the window 3.0–3.5 s held the last retry");
        // Unhealthy up to the next fault: not recovered.
        let d: Vec<Done> = (0..60).map(|i| done(i * 100, false, 1)).collect();
        assert_eq!(measure(std::slice::from_ref(&f), &d, 6_000, 0.1)[0].recovery_ms, None);
        // Nothing hurt: recovered at once.
        let d: Vec<Done> = (0..60).map(|i| done(i * 100, false, 0)).collect();
        assert_eq!(measure(&[f], &d, 6_000, 0.1)[0].recovery_ms, Some(0));
    }
}
